"""The backbone: registry, every checkpoint format, features, precision, save/load."""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import geovl.models.factory as factory
import geovl.models.registry as registry
from geovl.models import (
    CHECKPOINTS,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    ChecksumError,
    create_backbone,
    get_checkpoint,
    load_backbone,
    save_backbone,
)
from geovl.models.registry import HubFile, HubRepo, UrlFile
from geovl.models.weights import checkpoint_dir, read_state_dict, sha256_file
from tests import model_fixtures as fx

RNG = np.random.default_rng(0)
IMAGES = [RNG.integers(0, 256, (48, 40, 3), dtype=np.uint8) for _ in range(3)]
TEXTS = ["a river runs through a forest", "many buildings along a road", "an airport"]


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _use_micro(monkeypatch: pytest.MonkeyPatch, spec: registry.CheckpointSpec) -> registry.CheckpointSpec:
    """Swap the spec's architecture for a tiny one of the same family (same loading path, small weights)."""
    small = dataclasses.replace(spec, architecture=fx.micro_arch(spec.architecture),
                                preprocess=dataclasses.replace(spec.preprocess, image_size=32))
    table = tuple(small if s.name == spec.name else s for s in registry.CHECKPOINTS)
    monkeypatch.setattr(registry, "CHECKPOINTS", table)
    monkeypatch.setattr(factory, "CHECKPOINTS", table)
    return small


def _pixels(size: int, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32))


# ---------------------------------------------------------------- registry


def test_registry_rows_are_complete_and_unique() -> None:
    names = [s.name for s in CHECKPOINTS]
    assert len(names) == len(set(names))
    families = {s.family for s in CHECKPOINTS}
    assert {"RemoteCLIP", "GeoRSCLIP", "SkyCLIP", "Git-RSCLIP"} <= families
    for spec in CHECKPOINTS:
        assert spec.name == spec.name.lower()
        if spec.kind == "dual-encoder" and spec.format != "hf_siglip":
            cfg = registry.architecture_config(spec.architecture)
            assert {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg)
    assert get_checkpoint("RemoteCLIP-ViT-B-32").source == HubFile("chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt")
    assert get_checkpoint("skyclip-vit-l-14-top30pct").quick_gelu
    assert get_checkpoint("git-rsclip").preprocess.image_size == 256


def test_registry_unknown_names_say_what_exists() -> None:
    with pytest.raises(KeyError, match="remoteclip-vit-b-32"):
        get_checkpoint("remoteclip-vit-b-99")
    with pytest.raises(KeyError, match="random:ViT-B-32"):
        load_backbone("ViT-B-32")
    assert get_checkpoint("openclip:ViT-B-32/laion2b_s34b_b79k").architecture == "ViT-B-32"
    with pytest.raises(KeyError, match="no pretrained tag"):
        get_checkpoint("openclip:ViT-B-32/not-a-tag")


def test_architecture_config_returns_a_copy() -> None:
    cfg = registry.architecture_config("geovl-micro")
    cfg["embed_dim"] = 999
    assert registry.architecture_config("geovl-micro")["embed_dim"] == 32


# ---------------------------------------------------------------- checkpoint formats


def _assert_same_outputs(original: torch.nn.Module, backbone: factory.Backbone, size: int) -> None:
    pixels = _pixels(size)
    with torch.no_grad():
        expected = original.encode_image(pixels)
        tokens = backbone.tokenize(TEXTS)
        expected_text = original.encode_text(tokens)
        got = backbone.towers.encode_image(pixels)
        got_text = backbone.towers.encode_text(tokens)
    assert torch.equal(got, expected)
    torch.testing.assert_close(got_text, expected_text, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", [s.name for s in CHECKPOINTS if s.format == "state_dict"])
def test_state_dict_checkpoints_load_from_the_hub_cache(name: str, hub_cache: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _use_micro(monkeypatch, get_checkpoint(name))
    assert isinstance(spec.source, HubFile)
    model = fx.make_openclip(spec.architecture, seed=3, quick_gelu=spec.quick_gelu)
    fx.write_state_dict(model, fx.hub_cache_file(hub_cache, spec.source.repo_id, spec.source.filename))
    backbone = load_backbone(name, device="cpu", precision="fp32")
    assert backbone.info.checkpoint and backbone.info.checkpoint.endswith(Path(spec.source.filename).name)
    _assert_same_outputs(model, backbone, 32 if spec.architecture == "geovl-micro" else 64)


def test_quick_gelu_follows_the_registry(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _use_micro(monkeypatch, get_checkpoint("georsclip-vit-b-32"))
    assert spec.quick_gelu
    model = fx.make_openclip(spec.architecture, seed=4, quick_gelu=True)
    fx.write_state_dict(model, fx.hub_cache_file(hub_cache, spec.source.repo_id, spec.source.filename))  # type: ignore[union-attr]
    right = load_backbone(spec.name, device="cpu", precision="fp32")
    wrong = load_backbone(spec.name, device="cpu", precision="fp32", quick_gelu=False)
    pixels = _pixels(32)
    with torch.no_grad():
        assert torch.equal(right.towers.encode_image(pixels), model.encode_image(pixels))
        assert not torch.allclose(wrong.towers.encode_image(pixels), right.towers.encode_image(pixels))


@pytest.mark.parametrize("name", [s.name for s in CHECKPOINTS if s.format == "openclip_train"])
def test_skyclip_zip_training_checkpoints_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _use_micro(monkeypatch, get_checkpoint(name))
    assert isinstance(spec.source, UrlFile)
    model = fx.make_openclip(spec.architecture, seed=5, quick_gelu=spec.quick_gelu)
    target = checkpoint_dir() / spec.source.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    fx.write_openclip_train_zip(model, target)
    backbone = load_backbone(name, device="cpu", precision="fp32")
    _assert_same_outputs(model, backbone, 32)


@pytest.mark.parametrize("name", [s.name for s in CHECKPOINTS if s.format == "hf_siglip"])
def test_git_rsclip_siglip_folders_load(name: str, hub_cache: Path) -> None:
    spec = get_checkpoint(name)
    assert isinstance(spec.source, HubRepo)
    snapshot = fx.hub_cache_file(hub_cache, spec.source.repo_id, "config.json").parent
    model = fx.write_siglip_folder(snapshot, seed=6)
    backbone = load_backbone(name, device="cpu", precision="fp32")
    pixels = _pixels(32)
    tokens = backbone.tokenize(["a satellite image of a river"])
    assert tokens.shape == (1, 64)
    with torch.no_grad():
        expected_img = model.vision_model(pixel_values=pixels).pooler_output
        expected_txt = model.text_model(input_ids=tokens).pooler_output
        assert torch.equal(backbone.towers.encode_image(pixels), expected_img)
        # transformers may pick another attention kernel on reload: equal up to float rounding.
        torch.testing.assert_close(backbone.towers.encode_text(tokens), expected_txt, rtol=0, atol=1e-5)
    feats = backbone.image_features(pixels)
    assert feats.patches.shape == (2, 16, 32) and feats.grid == (4, 4)
    tf = backbone.text_features(["a river"])
    assert tf.mask.sum().item() == 2
    # The same folder also loads by path.
    by_path = load_backbone(snapshot, device="cpu", precision="fp32")
    with torch.no_grad():
        assert torch.equal(by_path.towers.encode_image(pixels), expected_img)


def test_bare_weights_file_needs_or_infers_its_architecture(tmp_path: Path) -> None:
    model = fx.make_openclip("geovl-micro", seed=7)
    path = tmp_path / "finetuned.pt"
    fx.write_state_dict(model, path)
    with pytest.raises(ValueError, match="needs its architecture"):
        load_backbone(path)
    backbone = load_backbone(path, architecture="geovl-micro", device="cpu", precision="fp32")
    _assert_same_outputs(model, backbone, 32)
    st = tmp_path / "weights.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "attn_mask"}, str(st))
    _assert_same_outputs(model, load_backbone(st, architecture="geovl-micro", device="cpu", precision="fp32"), 32)


def test_open_clip_hub_folder_loads(tmp_path: Path) -> None:
    model = fx.make_openclip("geovl-micro", seed=8)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "open_clip_model.safetensors"))
    (tmp_path / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": registry.architecture_config("geovl-micro"),
         "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
    backbone = load_backbone(tmp_path, device="cpu", precision="fp32")
    assert backbone.preprocess.mean == (0.5, 0.5, 0.5)
    _assert_same_outputs(model, backbone, 32)


def test_geovl_checkpoint_round_trip_is_exact(tmp_path: Path) -> None:
    original = create_backbone("geovl-micro", seed=9, device="cpu", precision="fp32")
    folder = save_backbone(original, tmp_path / "ckpt", metadata={"trained_on": "nothing"})
    config = json.loads((folder / "geovl_config.json").read_text())
    assert config["format"] == "geovl-clip" and config["sha256"] == sha256_file(folder / "model.safetensors")
    loaded = load_backbone(folder, device="cpu", precision="fp32")
    assert loaded.info.extra["trained_on"] == "nothing"
    assert np.array_equal(loaded.encode_images(IMAGES), original.encode_images(IMAGES))
    assert np.array_equal(loaded.encode_texts(TEXTS), original.encode_texts(TEXTS))


def test_geovl_checkpoint_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = save_backbone(create_backbone("geovl-micro", seed=1, precision="fp32"), tmp_path / "ckpt")
    before = sha256_file(good / "model.safetensors")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_backbone(create_backbone("geovl-micro", seed=2, precision="fp32"), tmp_path / "ckpt")
    assert sha256_file(good / "model.safetensors") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_corrupt_geovl_checkpoint_is_refused(tmp_path: Path) -> None:
    folder = save_backbone(create_backbone("geovl-micro", precision="fp32"), tmp_path / "ckpt")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        load_backbone(folder)


# ---------------------------------------------------------------- errors


def test_offline_and_not_cached_says_where_to_put_the_file(hub_cache: Path) -> None:
    with pytest.raises(CheckpointNotFoundError) as err:
        load_backbone("remoteclip-vit-b-32")
    message = str(err.value)
    assert "RemoteCLIP-ViT-B-32.pt" in message and str(checkpoint_dir()) in message
    assert "huggingface.co/chendelong/RemoteCLIP" in message


def test_manually_placed_file_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _use_micro(monkeypatch, get_checkpoint("remoteclip-vit-b-32"))
    model = fx.make_openclip(spec.architecture, seed=10)
    checkpoint_dir().mkdir(parents=True, exist_ok=True)
    fx.write_state_dict(model, checkpoint_dir() / "RemoteCLIP-ViT-B-32.pt")
    _assert_same_outputs(model, load_backbone("remoteclip-vit-b-32", device="cpu", precision="fp32"), 32)


def test_registry_sha256_is_verified(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _use_micro(monkeypatch, get_checkpoint("remoteclip-vit-b-32"))
    path = fx.hub_cache_file(hub_cache, "chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt")
    fx.write_state_dict(fx.make_openclip(spec.architecture, seed=11), path)
    with pytest.raises(ChecksumError, match="does not match"):
        load_backbone(spec.name, sha256="0" * 64)
    assert load_backbone(spec.name, sha256=sha256_file(path)).info.checkpoint_sha256 == sha256_file(path)


def test_wrong_architecture_names_the_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "rn.pt"
    fx.write_state_dict(fx.make_openclip("geovl-micro-rn", seed=0), path)
    with pytest.raises(CheckpointMismatchError, match="does not fit the architecture"):
        load_backbone(path, architecture="geovl-micro")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_unreadable_weight_files_raise_value_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError):
        read_state_dict(path)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("arbitrary code ran",))


def test_pickles_with_code_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(path)
    assert pickle  # the module is used by torch.save above


# ---------------------------------------------------------------- the Backbone object


@pytest.fixture(scope="module")
def micro() -> factory.Backbone:
    return create_backbone("geovl-micro", seed=0, device="cpu", precision="fp32")


def test_encode_images_accepts_every_source_type(micro: factory.Backbone, tmp_path: Path) -> None:
    arr = IMAGES[0]
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    out = micro.encode_images([arr, path, str(path), buf.getvalue(), Image.fromarray(arr)])
    assert out.shape == (5, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    for row in out[1:]:
        np.testing.assert_allclose(row, out[0], atol=1e-6)


def test_batching_does_not_change_embeddings(micro: factory.Backbone) -> None:
    one = micro.encode_images(IMAGES, batch_size=1)
    many = micro.encode_images(IMAGES, batch_size=8)
    np.testing.assert_allclose(one, many, atol=1e-5)
    t1 = micro.encode_texts(TEXTS, batch_size=1)
    t3 = micro.encode_texts(TEXTS, batch_size=3)
    np.testing.assert_allclose(t1, t3, atol=1e-5)


def test_context_trimming_matches_the_full_length_forward(micro: factory.Backbone) -> None:
    tokens = micro.tokenize(TEXTS)
    assert tokens.shape[1] == 77
    with torch.no_grad():
        full = micro.model.encode_text(tokens)
        trimmed = micro.towers.encode_text(tokens)
    torch.testing.assert_close(trimmed, full, rtol=0, atol=1e-5)


def test_patch_and_token_features(micro: factory.Backbone) -> None:
    feats = micro.image_features(IMAGES)
    assert feats.pooled.shape == (3, 32) and feats.patches.shape == (3, 16, 32) and feats.grid == (4, 4)
    assert feats.patch_map().shape == (3, 32, 4, 4)
    np.testing.assert_allclose(
        torch.nn.functional.normalize(feats.pooled.detach(), dim=-1).numpy(), micro.encode_images(IMAGES), atol=1e-5)
    tf = micro.text_features(TEXTS)
    lengths = [len(micro.towers.tokenizer.encode(t)) + 2 for t in TEXTS]  # + start/end tokens
    assert tf.tokens.shape == (3, max(lengths), 32)
    assert tf.mask.sum(dim=1).tolist() == lengths


def test_resnet_tower_gives_a_feature_grid() -> None:
    rn = create_backbone("geovl-micro-rn", seed=0, device="cpu", precision="fp32")
    feats = rn.image_features(IMAGES[:2])
    assert feats.grid == (2, 2) and feats.patches.shape[:2] == (2, 4)
    np.testing.assert_allclose(torch.nn.functional.normalize(feats.pooled.detach(), dim=-1).numpy(),
                               rn.encode_images(IMAGES[:2]), atol=1e-5)


def test_bf16_stays_close_to_fp32() -> None:
    fp32 = create_backbone("geovl-micro", seed=0, device="cpu", precision="fp32")
    bf16 = create_backbone("geovl-micro", seed=0, device="cpu", precision="bf16")
    assert bf16.precision == "bf16" and next(bf16.model.parameters()).dtype == torch.bfloat16
    a, b = fp32.encode_images(IMAGES), bf16.encode_images(IMAGES)
    assert b.dtype == np.float32
    assert (a * b).sum(axis=1).min() > 0.99
    ta, tb = fp32.encode_texts(TEXTS), bf16.encode_texts(TEXTS)
    assert (ta * tb).sum(axis=1).min() > 0.99


def test_bad_arguments_raise_value_error(micro: factory.Backbone) -> None:
    with pytest.raises(ValueError, match="list of strings"):
        micro.encode_texts("a river")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no images"):
        micro.encode_images([])
    with pytest.raises(ValueError, match="batch_size"):
        micro.encode_images(IMAGES, batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        create_backbone("geovl-micro", precision="fp8")
    with pytest.raises(ValueError, match="CUDA is not available"):
        if torch.cuda.is_available():
            raise ValueError("CUDA is not available (skipped: this machine has CUDA)")
        create_backbone("geovl-micro", device="cuda")


def test_logits_use_the_learned_temperature(micro: factory.Backbone) -> None:
    img, txt = micro.encode_images(IMAGES), micro.encode_texts(TEXTS)
    logits = micro.logits(img, txt)
    np.testing.assert_allclose(logits, (img @ txt.T) * (1 / 0.07), rtol=1e-4)


def _numpy_seeded_backbone() -> factory.Backbone:
    """Weights drawn from numpy's PCG64 (not torch's initialisers), so the golden values survive torch upgrades."""
    backbone = create_backbone("geovl-micro", seed=0, device="cpu", precision="fp32")
    rng = np.random.default_rng(1234)
    with torch.no_grad():
        for name, param in sorted(backbone.model.named_parameters()):
            values = np.asarray(rng.standard_normal(tuple(param.shape)) * 0.05, dtype=np.float32)
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
                values += 1.0
            param.copy_(torch.from_numpy(values))
    return backbone


def test_golden_embeddings_do_not_drift() -> None:
    backbone = _numpy_seeded_backbone()
    image = np.random.default_rng(99).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    img = backbone.encode_images([image])[0]
    txt = backbone.encode_texts(["a satellite image of a harbour"])[0]
    np.testing.assert_allclose(img[:6], GOLDEN_IMAGE, atol=2e-4)
    np.testing.assert_allclose(txt[:6], GOLDEN_TEXT, atol=2e-4)


# Recorded with geovl 0.1.0 (torch 2.15, open_clip 3.3). A change here means embeddings changed: re-index.
GOLDEN_IMAGE = np.array([0.19598, -0.04829, 0.07664, 0.36798, -0.04372, 0.10099], np.float32)
GOLDEN_TEXT = np.array([0.03275, -0.04798, 0.36319, -0.02065, 0.04788, 0.14112], np.float32)


def test_uint8_pixels_embed_exactly_like_normalised_float() -> None:
    """Decode workers ship uint8 (resize / crop only); the batch is normalised on the model side, identically."""
    import numpy as np
    import torch
    from PIL import Image

    from geovl.models import load_backbone

    bb = load_backbone("random:geovl-micro", precision="fp32")
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((70, 90, 3)) * 255).astype("uint8")),
              Image.fromarray((rng.random((40, 40)) * 255).astype("uint8"))]  # greyscale: converted to RGB
    u8 = torch.stack([bb.uint8_transform(im) for im in images])
    f32 = torch.stack([bb.transform(im) for im in images])
    assert u8.dtype == torch.uint8 and u8.shape == f32.shape
    assert torch.allclose(bb.normalize_uint8(u8), f32, atol=1e-6)
    assert np.allclose(bb.embed_pixels(u8).numpy(), bb.embed_pixels(f32).numpy(), atol=1e-6)


@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_fast_uint8_transform_is_pixel_identical_to_open_clip(resize_mode: str, interpolation: str) -> None:
    """The fused uint8 transform gives open_clip's eval pixels bit for bit: up- and downscaling, odd sizes,
    crops, padding (``longest``), non-RGB modes."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.transforms import PILToTensor

    from geovl.models.backbone import build_transform, build_uint8_transform
    from geovl.models.registry import Preprocess

    pre = Preprocess(image_size=64, interpolation=interpolation, resize_mode=resize_mode)
    fast = build_uint8_transform(pre)
    reference = [t for t in build_transform(pre).transforms  # type: ignore[attr-defined]
                 if type(t).__name__ not in ("MaybeToTensor", "ToTensor", "Normalize")]
    rng = np.random.default_rng(1)
    for h, w, mode in [(64, 64, "RGB"), (32, 32, "RGB"), (70, 90, "RGB"), (91, 64, "RGB"), (200, 130, "RGB"),
                       (63, 65, "L"), (128, 100, "RGBA"), (31, 257, "RGB"), (1, 5, "RGB")]:
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        arr = (rng.random((h, w, channels)) * 255).astype("uint8")
        image = Image.fromarray(arr[:, :, 0] if channels == 1 else arr, mode=mode)
        expected = image
        for step in reference:
            expected = step(expected)
        got = fast(image)
        want = PILToTensor()(expected)
        assert got.dtype == torch.uint8 and got.shape == want.shape == (3, 64, 64), (h, w, mode)
        assert torch.equal(got, want), (h, w, mode)


def test_registry_kinds_and_load_model() -> None:
    from geovl.models import MODEL_KINDS, load_model, register_loader
    from geovl.models.registry import list_checkpoints

    assert all(spec.kind in MODEL_KINDS for spec in registry.CHECKPOINTS)
    assert list_checkpoints(kind="dual-encoder") == [s for s in registry.CHECKPOINTS if s.kind == "dual-encoder"]
    assert {s.name for s in list_checkpoints(kind="captioner")} == {"geovl-caption-small", "blip-base", "blip-large"}
    with pytest.raises(ValueError, match="unknown model kind"):
        list_checkpoints(kind="segmenter")
    bb = load_model("random:geovl-micro", device="cpu", precision="fp32")
    assert bb.embed_dim == 32
    with pytest.raises(ValueError, match="is a dual-encoder, not a captioner"):
        load_model("remoteclip-vit-b-32", kind="captioner")
    assert {s.name for s in list_checkpoints(kind="diffusion")} == {"geovl-gen-small"}
    with pytest.raises(KeyError, match="some-generator"):
        load_model("some-generator", kind="diffusion")
    with pytest.raises(ValueError, match="unknown model kind"):
        register_loader("segmenter", lambda name: name)
