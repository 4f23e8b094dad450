"""geovl-effnet-lite0-minilm: the packaged EfficientNet-Lite0 as a pretrained image tower, its preprocessing, its
spatial features, and checkpoints that leave the locked trunk out and take it back from the package."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open

import geovl.models.packaged as packaged
from geovl.io.loading import load_image
from geovl.models import (
    Backbone,
    ChecksumError,
    Preprocess,
    architecture_config,
    create_backbone,
    load_backbone,
    save_backbone,
)
from geovl.models.backbone import build_transform
from geovl.models.external import EXTERNAL_IMAGE_PREFIX, EXTERNAL_TEXT_PREFIX, packaged_trunk_external
from geovl.models.packaged import distribution_installed, get_packaged, load_packaged_state_dict
from tests.helpers import shared_data

ARCH = "geovl-effnet-lite0-minilm"
LITE0 = get_packaged("efficientnet-lite0")
#: ImageNet-1k classes of aircraft: aircraft carrier, airliner, warplane, wing
AIRCRAFT = {403, 404, 895, 908}


needs_lite0 = pytest.mark.skipif(not distribution_installed(LITE0.package), reason=f"pip install {LITE0.package}")


def _ucm(*ids: int) -> list[Path]:
    folder = shared_data("ucm_captions") / "images"
    return [folder / f"{i}.jpg" for i in ids]


@pytest.fixture(scope="module")
def pretrained() -> Backbone:
    if not distribution_installed(LITE0.package):
        pytest.skip(f"pip install {LITE0.package}")
    return create_backbone(ARCH, pretrained_image=True, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def random_init() -> Backbone:
    return create_backbone(ARCH, pretrained_image=False, device="cpu", precision="fp32")


def test_preprocessing_is_the_packaged_one_at_the_config_size(random_init: Backbone) -> None:
    expected = dataclasses.replace(LITE0.preprocess, image_size=160)
    assert random_init.preprocess == expected
    assert expected.mean == expected.std == (0.5, 0.5, 0.5) and expected.interpolation == "bicubic"
    x = random_init.normalize_uint8(torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).repeat(1, 3, 1, 1))
    torch.testing.assert_close(x[0, :, 0], torch.tensor([[-1.0, 1.0]] * 3))  # inputs in [-1, 1]
    assert create_backbone("geovl-micro", device="cpu").preprocess == Preprocess(image_size=32)  # OpenAI's


@needs_lite0
def test_the_config_declares_the_pretrained_trunk(pretrained: Backbone) -> None:
    assert architecture_config(ARCH)["vision_cfg"]["timm_model_pretrained"] is True
    assert pretrained.info.extra["pretrained_image"] == {"source": LITE0.name, "sha256": LITE0.sha256}
    default = load_backbone(f"random:{ARCH}", device="cpu", precision="fp32", optimize=False)
    for key, value in pretrained.model.state_dict().items():
        assert torch.equal(default.model.state_dict()[key], value), key


@needs_lite0
def test_trunk_holds_the_packaged_weights(pretrained: Backbone, random_init: Backbone) -> None:
    expected = load_packaged_state_dict("efficientnet-lite0", classifier=False)
    trunk = pretrained.model.visual.trunk.state_dict()
    assert set(trunk) == set(expected)
    for key, value in expected.items():
        assert torch.equal(trunk[key], value), key
    assert not torch.equal(random_init.model.visual.trunk.conv_stem.weight, expected["conv_stem.weight"])
    # the rest is the same seeded initialisation: only the trunk differs
    assert torch.equal(pretrained.model.visual.head.proj.weight, random_init.model.visual.head.proj.weight)
    images = _ucm(105, 1005)
    with torch.no_grad():
        real = pretrained.image_features(images).patches.mean(dim=1)
        rand = random_init.image_features(images).patches.mean(dim=1)
    assert float(torch.nn.functional.cosine_similarity(real, rand).max()) < 0.9


@needs_lite0
def test_pretrained_trunk_recognises_airplanes_with_its_own_normalisation(pretrained: Backbone) -> None:
    """The packaged ImageNet classifier on the trunk's pooled features: UCM airplane tiles (ids 101-120) come out as
    aircraft classes with the package's [-1, 1] inputs far more often than with OpenAI's mean / std."""
    state = load_packaged_state_dict("efficientnet-lite0")
    images = _ucm(*range(101, 121))
    trunk = pretrained.model.visual.trunk

    def aircraft(pre: Preprocess) -> int:
        transform = build_transform(pre)
        pixels = torch.stack([transform(load_image(p)) for p in images])
        with torch.no_grad():
            logits = trunk(pixels) @ state["classifier.weight"].T + state["classifier.bias"]
        return sum(int(c) in AIRCRAFT for c in logits.argmax(dim=1))

    own = aircraft(pretrained.preprocess)
    openai = aircraft(Preprocess(image_size=pretrained.image_size))
    assert own >= 8 and own > openai, (own, openai)


@needs_lite0
def test_real_image_patch_embeddings_average_to_the_image_embedding(pretrained: Backbone) -> None:
    images = _ucm(105, 1005)
    feats = pretrained.image_features(images)
    assert feats.grid == (5, 5) and feats.patches.shape == (2, 25, 1280)
    patches = pretrained.patch_embeddings(images)
    pooled = torch.from_numpy(pretrained.encode_images(images, normalize=False))
    assert patches.shape == (2, 5, 5, 256)
    torch.testing.assert_close(patches.mean(dim=(1, 2)), pooled, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(feats.pooled, pooled)


def test_pretrained_image_needs_a_timm_tower() -> None:
    with pytest.raises(ValueError, match="timm image towers"):
        create_backbone("geovl-micro", pretrained_image=True, device="cpu")


# ---------------------------------------------------------------- checkpoints with an external trunk


def _keys(folder: Path) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return set(f.keys())


@needs_lite0
@pytest.mark.parametrize("with_text", [False, True], ids=["trunk", "trunk+text"])
def test_external_trunk_round_trip_is_exact(pretrained: Backbone, tmp_path: Path, with_text: bool) -> None:
    cfg = architecture_config(ARCH)
    external: dict[str, dict[str, Any]] = {EXTERNAL_IMAGE_PREFIX: {"source": LITE0.name, "locked": True}}
    if with_text:
        external[EXTERNAL_TEXT_PREFIX] = {"source": cfg["text_cfg"]["hf_model_name"], "locked": True}
    folder = save_backbone(pretrained, tmp_path / "ckpt", external=external)
    keys = _keys(folder)
    assert not any(k.startswith(EXTERNAL_IMAGE_PREFIX) for k in keys)
    assert "visual.head.proj.weight" in keys
    assert any(k.startswith(EXTERNAL_TEXT_PREFIX) for k in keys) is not with_text
    config = json.loads((folder / "geovl_config.json").read_text())
    assert config["external_weights"][EXTERNAL_IMAGE_PREFIX] == packaged_trunk_external(cfg)[EXTERNAL_IMAGE_PREFIX]
    assert config["preprocess"]["mean"] == [0.5, 0.5, 0.5]

    loaded = load_backbone(folder, device="cpu", precision="fp32", optimize=False)
    assert loaded.preprocess == pretrained.preprocess
    images = _ucm(105, 1005)
    assert np.array_equal(loaded.encode_images(images), pretrained.encode_images(images))
    texts = ["an airplane parked at a terminal", "boats in a harbour"]
    assert np.array_equal(loaded.encode_texts(texts), pretrained.encode_texts(texts))


@needs_lite0
def test_a_trained_trunk_cannot_be_external(pretrained: Backbone, tmp_path: Path) -> None:
    bn: Any = pretrained.model.visual.trunk.bn2
    saved = bn.running_mean.clone()
    try:
        with torch.no_grad():
            bn.running_mean[0] += 0.01  # what a training step in train() mode does to a "locked" trunk
        with pytest.raises(ValueError, match=r"bn2.running_mean differs.*must be saved"):
            save_backbone(pretrained, tmp_path / "ckpt", external=packaged_trunk_external(architecture_config(ARCH)))
    finally:
        with torch.no_grad():
            bn.running_mean.copy_(saved)
    assert not (tmp_path / "ckpt").exists()


def test_external_trunk_needs_packaged_weights(tmp_path: Path, random_init: Backbone) -> None:
    micro = create_backbone("geovl-micro", device="cpu", precision="fp32")
    with pytest.raises(ValueError, match="no packaged weights"):
        save_backbone(micro, tmp_path / "a", external={EXTERNAL_IMAGE_PREFIX: {}})
    with pytest.raises(ValueError, match="can be external"):
        save_backbone(micro, tmp_path / "b", external={"visual.": {}})
    with pytest.raises(ValueError, match="sha256"):
        save_backbone(random_init, tmp_path / "c", external={EXTERNAL_IMAGE_PREFIX: {"sha256": "0" * 64}})


@needs_lite0
def test_loading_checks_the_recorded_and_installed_trunk(pretrained: Backbone, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    folder = save_backbone(pretrained, tmp_path / "ckpt", external=packaged_trunk_external(architecture_config(ARCH)))
    config_path = folder / "geovl_config.json"
    good = config_path.read_text()

    config = json.loads(good)
    config["external_weights"][EXTERNAL_IMAGE_PREFIX]["sha256"] = "f" * 64
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not the packaged file"):
        load_backbone(folder, device="cpu", precision="fp32")

    config = json.loads(good)
    config["external_weights"]["visual.head."] = {}
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown external weights"):
        load_backbone(folder, device="cpu", precision="fp32")

    config_path.write_text(good)
    fake = tmp_path / "efficientnet-lite0-57934424.pth"
    fake.write_bytes(b"not the published weights")
    monkeypatch.setattr(packaged, "locate_packaged_file", lambda entry: fake)
    with pytest.raises(ChecksumError):
        load_backbone(folder, device="cpu", precision="fp32")
