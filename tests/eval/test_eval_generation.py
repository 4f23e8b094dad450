"""Generated-image metrics: Fréchet distance (closed forms), FD-CLIP, CLIP score, zero-shot accuracy, FID loading."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from geovl._optional import MissingDependencyError
from geovl.eval import generation
from geovl.eval.generation import (
    INCEPTION_WEIGHTS_FILE,
    BackboneFeatures,
    InceptionFeatures,
    clip_fd,
    clip_score,
    clip_scores,
    fid,
    frechet_distance,
    frechet_distance_from_stats,
    zero_shot_accuracy,
)
from geovl.models import Backbone, create_backbone
from geovl.tasks.zeroshot.prompts import RS_TEMPLATES

# ------------------------------------------------------------------------------------------- Fréchet distance


def _with_moments(rng: np.random.Generator, n: int, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """n samples whose sample mean is exactly ``mean`` and unbiased sample covariance exactly ``diag(var)``."""
    z = rng.standard_normal((n, mean.size))
    z -= z.mean(axis=0)
    w, v = np.linalg.eigh(np.cov(z, rowvar=False))
    z = z @ v @ np.diag(w**-0.5) @ v.T  # whitened: covariance exactly I
    return mean + z * np.sqrt(var)


def test_frechet_distance_closed_form_diagonal() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    a, b = _with_moments(rng, 500, mu1, v1), _with_moments(rng, 300, mu2, v2)
    # For diagonal covariances: ||mu1 - mu2||^2 + sum (sqrt(v1) - sqrt(v2))^2.
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance_from_stats(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


def test_eigen_method_agrees_with_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + 0.3
    with_scipy = frechet_distance(a, b)
    monkeypatch.setitem(sys.modules, "scipy", None)  # no SciPy: the eigenvalue route
    assert frechet_distance(a, b) == pytest.approx(with_scipy, rel=1e-8)


def test_frechet_distance_properties() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((200, 8))
    b = rng.standard_normal((150, 8)) * 1.5
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    shifts = [frechet_distance(a, a + s) for s in (0.0, 0.5, 1.0, 2.0)]
    assert shifts == pytest.approx([0.0, 8 * 0.25, 8 * 1.0, 8 * 4.0], abs=1e-9)  # a shift s adds D * s^2
    assert frechet_distance(a, b) > 0


def test_frechet_distance_singular_covariance_is_finite() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 16)), rng.standard_normal((6, 16))  # fewer samples than dimensions
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value > 0


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.zeros((4, 3)), np.zeros((4, 2)), "same D"),
        (np.zeros(4), np.zeros((4, 1)), "same D"),
        (np.zeros((1, 3)), np.zeros((4, 3)), "at least 2"),
        (np.full((3, 2), np.nan), np.zeros((3, 2)), "NaN"),
    ],
)
def test_frechet_distance_rejects_bad_features(a: np.ndarray, b: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        frechet_distance(a, b)


def test_frechet_stats_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance_from_stats(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


# ------------------------------------------------------------------------------------------ backbone metrics


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return create_backbone("geovl-micro", precision="fp32")


def _images(seed: int, n: int, shift: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 200, size=(n, 32, 32, 3))
    return [np.clip(im + shift, 0, 255).astype(np.uint8) for im in imgs]


def test_clip_fd(backbone: Backbone) -> None:
    real, other = _images(0, 12), _images(1, 10, shift=50)
    same = clip_fd(backbone, real, real)
    assert same.value == pytest.approx(0.0, abs=1e-6)
    assert same.metric == "FD-CLIP (random:geovl-micro)" and (same.n_a, same.n_b, same.dim) == (12, 12, 32)
    res = clip_fd(backbone, real, other)
    expected = frechet_distance(backbone.encode_images(real), backbone.encode_images(other))
    assert res.value == pytest.approx(expected, rel=1e-9) and res.value > 0
    assert fid(real, other, BackboneFeatures(backbone)).to_dict() == res.to_dict()


def test_clip_score_matches_numpy(backbone: Backbone) -> None:
    images = _images(2, 6)
    prompts = ["a satellite image of a forest", "an airport", "a river", "houses", "a beach", "farmland"]
    per_pair = clip_scores(backbone, images, prompts)
    img = backbone.encode_images(images).astype(np.float64)
    txt = backbone.encode_texts(prompts).astype(np.float64)
    cos = np.sum(img * txt, axis=1) / np.linalg.norm(img, axis=1) / np.linalg.norm(txt, axis=1)
    assert per_pair == pytest.approx(100 * np.maximum(cos, 0), abs=1e-4)
    assert np.all((per_pair >= 0) & (per_pair <= 100))
    assert clip_score(backbone, images, prompts) == pytest.approx(per_pair.mean(), rel=1e-9)


def test_clip_score_rejects_mismatch(backbone: Backbone) -> None:
    with pytest.raises(ValueError, match="one prompt per image"):
        clip_score(backbone, _images(3, 2), ["one prompt"])
    with pytest.raises(ValueError, match="list of prompts"):
        clip_score(backbone, _images(3, 1), "a prompt")


def test_zero_shot_accuracy_matches_numpy(backbone: Backbone) -> None:
    classes = ["forest", "airport", "river", "farmland"]
    images = _images(4, 10)
    labels = [i % 4 for i in range(10)]
    res = zero_shot_accuracy(backbone, images, labels, classes)
    # The classifier by hand: mean of normalised prompt embeddings per class, renormalised; argmax cosine.
    prompts = [t.format(c) for c in classes for t in RS_TEMPLATES]
    txt = backbone.encode_texts(prompts).reshape(len(classes), len(RS_TEMPLATES), -1).mean(axis=1)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    pred = np.argmax(backbone.encode_images(images) @ txt.T, axis=1)
    assert list(res.predictions) == pred.tolist()
    assert res.accuracy == pytest.approx(np.mean(pred == np.array(labels)))
    for c, name in enumerate(classes):
        assert res.per_class[name] == pytest.approx(np.mean(pred[np.array(labels) == c] == c))
    by_name = zero_shot_accuracy(backbone, images, [classes[i] for i in labels], classes)
    assert by_name.to_dict() == res.to_dict() and res.model == "random:geovl-micro"


@pytest.mark.parametrize(
    ("labels", "message"),
    [([0, 1], "one label per image"), ([0, 1, 9], "neither a class name"), ([0, 1, "lake"], "not one of")],
)
def test_zero_shot_accuracy_rejects_bad_labels(backbone: Backbone, labels: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        zero_shot_accuracy(backbone, _images(5, 3), labels, ["forest", "river"])


# ----------------------------------------------------------------------------------------------- Inception FID


def test_inception_needs_pytorch_fid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pytorch_fid", None)
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", None)
    with pytest.raises(MissingDependencyError, match="pytorch_fid"):
        InceptionFeatures(tmp_path / INCEPTION_WEIGHTS_FILE)


@pytest.fixture
def fake_pytorch_fid(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in for ``pytorch_fid.inception`` whose network, like the real one, fetches weights from a URL."""
    module = types.ModuleType("pytorch_fid.inception")

    def load_state_dict_from_url(url: str, progress: bool = True) -> dict:
        raise AssertionError("must not download")

    class InceptionV3(torch.nn.Module):
        BLOCK_INDEX_BY_DIM: ClassVar[dict[int, int]] = {64: 0, 192: 1, 768: 2, 2048: 3}

        def __init__(self, output_blocks: list[int]) -> None:
            super().__init__()
            assert output_blocks == [3]
            self.proj = torch.nn.Conv2d(3, 4, kernel_size=1)
            self.proj.load_state_dict(module.load_state_dict_from_url("https://example.invalid/w.pth"))

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            assert x.shape[1:] == (3, 299, 299) and float(x.min()) >= 0 and float(x.max()) <= 1
            return [self.proj(x).mean(dim=(2, 3), keepdim=True)]

    module.load_state_dict_from_url = load_state_dict_from_url  # type: ignore[attr-defined]
    module.InceptionV3 = InceptionV3  # type: ignore[attr-defined]
    package = types.ModuleType("pytorch_fid")
    package.inception = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pytorch_fid", package)
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", module)
    return module


def test_inception_features_load_local_weights(fake_pytorch_fid: types.ModuleType, tmp_path: Path) -> None:
    weights = tmp_path / INCEPTION_WEIGHTS_FILE
    torch.save(torch.nn.Conv2d(3, 4, kernel_size=1).state_dict(), weights)
    with pytest.raises(ValueError, match="not the FID Inception weights"):
        InceptionFeatures(weights)  # the checksum of a real download starts with 6726825d
    extractor = InceptionFeatures(weights, check_hash=False, batch_size=2)
    imgs = [np.full((20 + 4 * i, 24, 3), 40 * i, np.uint8) for i in range(5)]  # sizes may differ
    feats = extractor(imgs)
    assert feats.shape == (5, 4) and feats.dtype == np.float64
    res = fid(imgs[:3], imgs[2:], extractor)
    assert res.metric.startswith("FID (Inception-v3") and res.dim == 4 and res.value > 0
    assert fake_pytorch_fid.load_state_dict_from_url.__name__ == "load_state_dict_from_url"  # patch was undone


def test_inception_missing_weights_says_where_to_get_them(fake_pytorch_fid: types.ModuleType, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"pt_inception-2015-12-05-6726825d\.pth.*github\.com/mseitzer"):
        InceptionFeatures(tmp_path / "missing.pth")
    assert generation.INCEPTION_WEIGHTS_URL.endswith(INCEPTION_WEIGHTS_FILE)
