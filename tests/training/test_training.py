"""geovl.training: configs, data mixture, fine-tuning gains, exact resume after a kill, DDP equivalence, LiT."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from geovl.data.synthetic import SceneConfig, write_caption_dataset
from geovl.models.registry import Preprocess
from geovl.training.augment import RSAugment
from geovl.training.clip import train_clip
from geovl.training.config import AugmentConfig, DataConfig, SourceConfig, config_from_dict, load_config
from geovl.training.data import EpochDataset, IndexedShards, TrainingSet
from tests.data_layouts import (
    img2dataset_sample,
    write_git10m,
    write_imagefolder,
    write_karpathy,
    write_skyscript,
    write_wds_shard,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "cap"
    write_caption_dataset(root, 240, seed=3, config=SceneConfig(size=48), progress=False)
    return root


def _cfg(synth: Path, out: Path, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": {"name": "random:geovl-micro"},
        "data": {"sources": [{"path": str(synth), "format": "karpathy", "split": "train"}], "batch_size": 32,
                 "workers": 0},
        "optim": {"lr": 2e-3, "warmup_steps": 2, "steps": 12, "precision": "fp32"},
        "run": {"output": str(out), "log_every": 1, "save_every": 4},
    }
    for key, value in over.items():
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    return data


def _losses(run: Path) -> dict[int, float]:
    with (run / "metrics.csv").open() as fh:
        return {int(r["step"]): float(r["value"]) for r in csv.DictReader(fh) if r["key"] == "train/loss"}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("path", sorted([*REPO.glob("configs/*.yaml"), *REPO.glob("runs/**/*.yaml")]),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_loads(path: Path) -> None:
    if "bundled-caption" in path.parts:  # captioner runs (geovl train captioner)
        from geovl.training.captioner_config import load_captioner_config

        captioner = load_captioner_config(path)
        assert captioner.data.sources and captioner.eval.select_by
        return
    if "bundled-change" in path.parts:  # change-captioner runs (geovl train change-captioner)
        from geovl.training.change_captioner_config import load_change_config

        change = load_change_config(path)
        assert change.data.pasted.sources and change.data.corpus and change.eval.threshold == "calibrate"
        return
    if "bundled-gen" in path.parts:  # generator runs (geovl train diffusion)
        from geovl.training.diffusion_config import load_diffusion_config

        gen = load_diffusion_config(path)
        assert gen.data.sources and all(s.gsd is None or s.gsd > 0 for s in gen.data.sources)
        return
    cfg = load_config(path)
    assert cfg.data.sources and cfg.optim.steps >= 1


def test_config_errors_name_the_setting(tmp_path: Path) -> None:
    base = _cfg(tmp_path, tmp_path / "o")
    with pytest.raises(ValueError, match=r"unknown key.*batchsize"):
        config_from_dict({**base, "data": {**base["data"], "batchsize": 3}})
    with pytest.raises(ValueError, match=r"optim.lr: expected a number"):
        config_from_dict({**base, "optim": {"lr": "fast"}})
    with pytest.raises(ValueError, match=r"batch_size must be >= 2"):
        config_from_dict({**base, "data": {**base["data"], "batch_size": 1}})
    with pytest.raises(ValueError, match=r"loss.kind"):
        config_from_dict({**base, "loss": {"kind": "triplet"}})
    with pytest.raises(ValueError, match=r"run.log_every must be >= 1"):
        config_from_dict({**base, "run": {**base["run"], "log_every": 0}})
    with pytest.raises(ValueError, match=r"optim.pretrained_lr_scale must be > 0"):
        config_from_dict({**base, "optim": {"pretrained_lr_scale": 0}})
    p = tmp_path / "c.yaml"
    p.write_text("model: {name: random:geovl-micro}\ndata: {sources: [{path: x}]}\n")
    cfg = load_config(p, ["optim.steps=7", "optim.warmup_steps=2", "loss.kind=siglip", "data.augment.rot90=false"])
    assert (cfg.optim.steps, cfg.loss.kind, cfg.data.augment.rot90) == (7, "siglip", False)
    with pytest.raises(ValueError, match=r"section\.key=value"):
        load_config(p, ["steps"])


def test_pretrained_encoders_get_their_own_learning_rate() -> None:
    from geovl.training.clip_model import param_groups

    model = torch.nn.Module()
    model.visual = torch.nn.Module()
    model.visual.trunk = torch.nn.Linear(3, 4)  # pretrained
    model.visual.head = torch.nn.Linear(4, 2)  # new
    model.visual.head.bias.requires_grad_(False)
    groups = param_groups(model, 0.1, lr=1e-3, pretrained_lr_scale=0.1)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(model.visual.trunk.weight)]["lr"] == pytest.approx(1e-4)
    assert by_param[id(model.visual.trunk.bias)]["weight_decay"] == 0.0
    assert "lr" not in by_param[id(model.visual.head.weight)]  # the optimizer's base rate
    assert id(model.visual.head.bias) not in by_param  # frozen
    # without a scale: the two classic groups, decay first (the order a resumed optimizer state expects)
    plain = param_groups(model, 0.1)
    assert [g["weight_decay"] for g in plain] == [0.1, 0.0] and all("lr" not in g for g in plain)


# ---------------------------------------------------------------- data


def test_mixture_order_is_seeded_and_weighted(tmp_path: Path, synth: Path) -> None:
    write_imagefolder(tmp_path / "folder")
    cfg = DataConfig(sources=[SourceConfig(str(synth), "karpathy", weight=1.0, split="train"),
                              SourceConfig(str(tmp_path / "folder"), "imagefolder", weight=3.0,
                                           label_prompts=["a photo of {}."])])
    data = TrainingSet(cfg, seed=5)
    a, b = data.epoch_order(0), data.epoch_order(0)
    assert np.array_equal(a, b) and not np.array_equal(a, data.epoch_order(1))
    n0, n1 = len(data.sources[0].indices), len(data.sources[1].indices)
    counts = np.bincount(a[:, 0], minlength=2)
    assert counts.tolist() == [n0, 3 * n1]
    label_sample = data.sample(1, 0)
    assert data.captions_for(label_sample, 1)[0].startswith("a photo of ")


def test_webdataset_shards_are_random_access(tmp_path: Path) -> None:
    samples = [img2dataset_sample(f"{i:05d}", i, captions=[f"caption {i}"]) for i in range(6)]
    write_wds_shard(tmp_path / "s" / "00000.tar", samples[:3])
    write_wds_shard(tmp_path / "s" / "00001.tar", samples[3:])
    data = TrainingSet(DataConfig(sources=[SourceConfig(str(tmp_path / "s"), "webdataset")]), seed=0)
    reader = data.sources[0].reader
    assert isinstance(reader, IndexedShards) and len(reader) == 6
    assert reader[4]["captions"] == ["caption 4"] and reader[4]["image_id"] == "00004"


def test_a_mixture_of_every_training_format_trains(tmp_path: Path) -> None:
    """SkyScript CSV + GAIA webdataset shards + Git-10M arrow + Karpathy JSON + a generic CSV, in one run."""
    sky = write_skyscript(tmp_path / "sky")
    write_wds_shard(tmp_path / "gaia" / "00000.tar",
                    [img2dataset_sample(f"{i:05d}", i, captions=[f"gaia caption {i}", f"other {i}"]) for i in range(4)])
    write_git10m(tmp_path / "git10m", layout="columns")
    write_karpathy(tmp_path / "karpathy")
    (tmp_path / "generic.csv").write_text("image,text\n" + "".join(
        f"{tmp_path / 'sky' / 'images2' / n},generic caption {i}\n"
        for i, n in enumerate(["a198234555_CH_19.jpg", "w44_US_20.jpg"])))
    sources = [
        {"path": str(sky), "format": "skyscript", "weight": 2.0},
        {"path": str(tmp_path / "gaia"), "format": "webdataset"},
        {"path": str(tmp_path / "git10m"), "format": "git10m", "weight": 0.5},
        {"path": str(tmp_path / "karpathy"), "format": "karpathy", "split": "train"},
        {"path": str(tmp_path / "generic.csv"), "format": "csv", "options": {"columns": {"image": "image",
                                                                                         "text": ["text"]}}},
    ]
    cfg = config_from_dict({
        "model": {"name": "random:geovl-micro"},
        "data": {"sources": sources, "batch_size": 4, "workers": 0, "samples_per_epoch": 16},
        "optim": {"lr": 1e-3, "warmup_steps": 1, "steps": 3, "precision": "fp32"},
        "run": {"output": str(tmp_path / "run"), "log_every": 1},
    })
    data = TrainingSet(cfg.data, seed=0)
    assert [len(s.indices) for s in data.sources] == [3, 4, 3, 2, 2]
    seen = {int(v) for v in data.epoch_order(0)[:, 0]}
    assert seen == {0, 1, 2, 3, 4}
    result = train_clip(cfg, progress=False)
    assert result.steps == 3 and np.isfinite(result.losses).all() and result.final is not None


def test_samples_are_deterministic_in_position(synth: Path) -> None:
    data = TrainingSet(DataConfig(sources=[SourceConfig(str(synth), "karpathy", split="train")]), seed=1)
    aug = RSAugment(AugmentConfig(color_jitter=0.2), Preprocess(image_size=32))
    ds = EpochDataset(data, data.epoch_order(0), 0, aug)
    x, y = ds[7], ds[7]
    assert torch.equal(x["pixels"], y["pixels"]) and x["caption"] == y["caption"]
    assert x["pixels"].shape == (3, 32, 32)
    assert not torch.equal(ds[7]["pixels"], EpochDataset(data, data.epoch_order(0), 1, aug)[7]["pixels"])


def test_label_prompt_share_mixes_class_prompts_into_captioned_images(synth: Path) -> None:
    aug = RSAugment(AugmentConfig(), Preprocess(image_size=32))

    def captions(share: float) -> list[str]:
        src = SourceConfig(str(synth), "karpathy", split="train", label_prompts=["an aerial view of {}."],
                           label_prompt_share=share)
        data = TrainingSet(DataConfig(sources=[src]), seed=1)
        ds = EpochDataset(data, data.epoch_order(0), 0, aug)
        return [ds[i]["caption"] for i in range(len(ds))]

    prompted = [sum(c.startswith("an aerial view of") for c in captions(s)) for s in (0.0, 0.5, 1.0)]
    n = len(captions(0.0))
    assert prompted[0] == 0 and prompted[2] == n and 0.3 * n < prompted[1] < 0.7 * n
    assert captions(0.5) == captions(0.5)  # seeded by position
    with pytest.raises(ValueError, match="label_prompt_share must be in"):
        config_from_dict({"model": {"name": "random:geovl-micro"},
                          "data": {"sources": [{"path": str(synth), "label_prompt_share": 0.5}]}})


def test_holdout_fraction_keeps_eval_images_out(tmp_path: Path) -> None:
    from geovl.data.common import holdout_member

    ids = [f"img{i}.jpg" for i in range(2000)]
    held = [i for i in ids if holdout_member(i, 0.2)]
    assert 300 < len(held) < 500
    assert held == [i for i in ids if holdout_member(i, 0.2)]


# ---------------------------------------------------------------- training


def test_finetuning_on_synthetic_data_improves_retrieval(tmp_path: Path, synth: Path) -> None:
    from geovl.eval.protocols import eval_retrieval
    from geovl.models import load_backbone

    before = eval_retrieval(load_backbone("random:geovl-micro", precision="fp32"), synth, split="test",
                            progress=False).figures["mean_recall"]
    cfg = config_from_dict(_cfg(synth, tmp_path / "run", optim__steps=60, eval__retrieval=[str(synth)],
                                run__save_every=60))
    result = train_clip(cfg, progress=False)
    assert result.final is not None
    after = eval_retrieval(load_backbone(result.final, precision="fp32"), synth, split="test",
                           progress=False).figures["mean_recall"]
    assert after > before + 10, (before, after)
    assert result.evals[-1]["eval/cap/mean_recall"] == pytest.approx(after, abs=1e-6)
    losses = result.losses
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_refuses_to_overwrite_a_run_and_rejects_a_changed_config(tmp_path: Path, synth: Path) -> None:
    cfg = config_from_dict(_cfg(synth, tmp_path / "run", optim__steps=4))
    train_clip(cfg, progress=False)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train_clip(cfg, resume="no", progress=False)
    changed = config_from_dict(_cfg(synth, tmp_path / "run", optim__steps=8, optim__lr=1e-2))
    with pytest.raises(ValueError, match=r"different model/data/optimizer/loss config"):
        train_clip(changed, progress=False)


def _cli(args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "geovl", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, **kw)


@pytest.mark.slow
def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path: Path, synth: Path) -> None:
    import yaml

    over = {"model__name": "random:geovl-tiny", "optim__steps": 16, "run__save_every": 3, "data__batch_size": 16}
    ref = train_clip(config_from_dict(_cfg(synth, tmp_path / "ref", **over)), progress=False)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_cfg(synth, tmp_path / "killed", **over)))

    proc = _cli(["train", "clip", "--config", str(path), "-q"])
    metrics = tmp_path / "killed" / "metrics.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and max(_losses(tmp_path / "killed") or {0: 0}) >= 7:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = (tmp_path / "killed" / "checkpoints" / "latest").read_text().strip()
    assert latest.startswith("step-") and int(latest[5:]) < 16
    assert not (tmp_path / "killed" / "final").exists()

    resumed = _cli(["train", "clip", "--config", str(path), "-q"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out.decode()
    got, want = _losses(tmp_path / "killed"), _losses(tmp_path / "ref")
    assert sorted(got) == sorted(want) == list(range(1, 17))
    assert np.allclose([got[s] for s in want], [want[s] for s in want], atol=1e-5)
    assert ref.final is not None
    a, b = _weights(ref.final), _weights(tmp_path / "killed" / "final")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def _free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it), for torchrun's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path: Path, synth: Path) -> None:
    import yaml

    over = {"optim__steps": 5, "run__save_every": 5}
    single = train_clip(config_from_dict(_cfg(synth, tmp_path / "single", data__batch_size=16, **over)),
                        progress=False)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(_cfg(synth, tmp_path / "ddp", data__batch_size=8, **over)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(_free_port()), "-m", "geovl", "train", "clip", "--config", str(path),
                          "-q"], cwd=REPO, env=env, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stdout.decode()[-3000:] + run.stderr.decode()[-3000:]
    got, want = _losses(tmp_path / "ddp"), _losses(tmp_path / "single")
    assert np.allclose([got[s] for s in sorted(want)], [want[s] for s in sorted(want)], atol=1e-4)
    assert single.final is not None
    a, b = _weights(single.final), _weights(tmp_path / "ddp" / "final")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)


def test_siglip_loss_trains_and_exports_its_bias(tmp_path: Path, synth: Path) -> None:
    from geovl.models import load_backbone

    cfg = config_from_dict(_cfg(synth, tmp_path / "run", loss__kind="siglip", optim__steps=20,
                                data__augment={"color_jitter": 0.1}))
    result = train_clip(cfg, progress=False)
    assert np.isfinite(result.losses).all() and np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert result.final is not None
    back = load_backbone(result.final, precision="fp32")
    _, bias = back.towers.logit_scale_bias()
    assert bias is not None and abs(float(bias.detach()) + 10.0) > 1e-4


def test_lock_and_freeze_leave_those_weights_unchanged(tmp_path: Path, synth: Path) -> None:
    from geovl.models import load_backbone

    start = load_backbone("random:geovl-micro", precision="fp32").model.state_dict()
    cfg = config_from_dict(_cfg(synth, tmp_path / "run", model__lock_image=True, model__freeze_text_blocks=1,
                                optim__steps=3))
    result = train_clip(cfg, progress=False)
    assert result.final is not None
    end = _weights(result.final)
    for key, value in start.items():
        if key.endswith("attn_mask"):
            continue
        same = torch.equal(value, end[key])
        if key.startswith("visual.") or key.startswith("transformer.resblocks.0.") or key == "token_embedding.weight":
            assert same, key
    assert not torch.equal(start["transformer.resblocks.1.mlp.c_fc.weight"],
                           end["transformer.resblocks.1.mlp.c_fc.weight"])


# ---------------------------------------------------------------- LiT with a pretrained transformers text tower


def _tiny_bert(folder: Path, words: list[str]) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


def test_lit_with_a_locked_transformers_text_tower_exports_without_it(tmp_path: Path, synth: Path) -> None:
    import json

    from geovl.models import load_backbone
    from geovl.models.backbone import Backbone, ModelInfo
    from geovl.models.factory import _openclip_towers, save_backbone
    from geovl.models.registry import architecture_config

    captions = json.loads((synth / "dataset.json").read_text())["images"]
    words = [t for im in captions for s in im["sentences"] for t in s["tokens"]]
    bert = _tiny_bert(tmp_path / "bert", words)
    micro = architecture_config("geovl-micro")
    model_cfg = {"embed_dim": 32, "custom_text": True, "vision_cfg": micro["vision_cfg"],
                 "text_cfg": {"hf_model_name": str(bert), "hf_tokenizer_name": str(bert), "hf_model_pretrained": True,
                              "hf_proj_type": "mlp", "hf_pooler_type": "mean_pooler", "context_length": 32}}
    towers = _openclip_towers(model_cfg, False, None, "test")
    start = Backbone(towers, Preprocess(image_size=32), ModelInfo("lit-start", "lit-test"), torch.device("cpu"),
                     torch.float32)
    init = save_backbone(start, tmp_path / "init")

    cfg = config_from_dict(_cfg(synth, tmp_path / "run", model__name=str(init), model__lock_text=True,
                                optim__steps=30))
    result = train_clip(cfg, progress=False)
    assert result.final is not None
    stored = _weights(result.final)
    assert not any(k.startswith("text.transformer.") for k in stored)
    assert any(k.startswith("text.proj") for k in stored)
    meta = json.loads((result.final / "geovl_config.json").read_text())
    assert "text.transformer." in meta["external_weights"]

    trained = load_backbone(result.final, precision="fp32")
    ref = load_backbone(init, precision="fp32")
    for key, value in ref.model.state_dict().items():
        if key.startswith("text.transformer."):
            assert torch.equal(value, trained.model.state_dict()[key]), key
    texts = ["a river crosses the farmland", "many buildings"]
    assert not np.allclose(trained.encode_texts(texts), ref.encode_texts(texts))
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])

    # other text weights under the same name than the ones it was trained against: refused, not silently used
    from transformers import BertModel

    other = BertModel.from_pretrained(str(bert))
    with torch.no_grad():
        other.embeddings.word_embeddings.weight.mul_(2)
    other.save_pretrained(bert)
    with pytest.raises(ValueError, match="not the one this checkpoint was trained with"):
        load_backbone(result.final)


def test_a_transformers_siglip_model_fine_tunes_and_exports(tmp_path: Path, synth: Path) -> None:
    """Git-RSCLIP's format (a transformers SigLIP folder) trains with the SigLIP loss and exports to a folder that
    loads back with the trained weights."""
    from geovl.models import load_backbone
    from tests.model_fixtures import write_siglip_folder

    start = tmp_path / "siglip"
    write_siglip_folder(start, seed=0)
    cfg = config_from_dict(_cfg(synth, tmp_path / "run", model__name=str(start), loss__kind="siglip",
                                optim__steps=6, run__save_every=3))
    result = train_clip(cfg, progress=False)
    assert result.final is not None and (result.final / "config.json").is_file()
    before = load_backbone(start, precision="fp32")
    after = load_backbone(result.final, precision="fp32")
    texts = ["a river", "many buildings"]
    assert after.encode_texts(texts).shape == (2, before.embed_dim)
    assert not np.allclose(after.encode_texts(texts), before.encode_texts(texts))
    assert np.isfinite(result.losses).all()


def test_tensorboard_logs_when_asked(tmp_path: Path, synth: Path) -> None:
    pytest.importorskip("tensorboard")
    cfg = config_from_dict(_cfg(synth, tmp_path / "run", optim__steps=2, run__tensorboard=True))
    train_clip(cfg, progress=False)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.realdata
def test_the_shared_data_config_runs(tmp_path: Path) -> None:
    """configs/ucm-rsicd-finetune.yaml on ../shared/data (fine-tuning the bundled model), cut to a few steps."""
    from tests.helpers import shared_data

    shared_data("ucm_captions")
    cwd = Path.cwd()
    os.chdir(REPO)  # the config's paths are relative to the repository root, as on the command line
    try:
        cfg = load_config(REPO / "configs" / "ucm-rsicd-finetune.yaml",
                          ["optim.steps=3", "optim.warmup_steps=1", "eval.every_steps=0", "data.cache_images=false",
                           "eval.zeroshot_limit_per_class=5", f"run.output={tmp_path / 'run'}", "data.batch_size=16"])
        for src in cfg.data.sources:
            src.limit = 64
        result = train_clip(cfg, progress=False)
    finally:
        os.chdir(cwd)
    assert result.final is not None and result.steps == 3
    figures = result.evals[-1]
    assert figures["eval/ucm_captions/mean_recall"] > 10  # the bundled model's level, not chance (~5)
    assert "eval/eurosat_rgb/zeroshot_accuracy" in figures
