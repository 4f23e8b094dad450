"""Similarity maps (patch embeddings and occlusion) and their heat-map overlay."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from geovl.models import Backbone, Preprocess, load_backbone
from geovl.tasks.explain import OCCLUSION_GREY, model_view_box, overlay, similarity_map

RNG = np.random.default_rng(0)
PICTURE = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def micro() -> Backbone:
    return load_backbone("random:geovl-micro", precision="fp32", device="cpu")


def _colour(cmap: str, level: float) -> np.ndarray:
    return np.round(np.asarray(colormaps[cmap](level)[:3]) * 255).astype(np.uint8)


# ---------------------------------------------------------------- patch path


def test_patch_map_peaks_at_the_patch_used_as_query(micro: Backbone) -> None:
    patches = micro.patch_embeddings([PICTURE])[0]
    query = patches[2, 1].numpy()
    result = similarity_map(micro, PICTURE, query)
    assert result.method == "patch"
    assert result.scores.shape == (4, 4) and result.scores.dtype == np.float32
    assert np.unravel_index(result.scores.argmax(), result.scores.shape) == (2, 1)
    assert result.scores[2, 1] == pytest.approx(1.0, abs=1e-5)
    unit = torch.nn.functional.normalize(patches, dim=-1)
    expected = (unit @ unit[2, 1]).numpy()
    np.testing.assert_allclose(result.scores, expected, rtol=1e-5, atol=1e-6)
    assert result.scores.std() > 1e-3  # not a constant map


def test_map_is_deterministic_and_accepts_any_image_source(micro: Backbone) -> None:
    query = micro.encode_texts(["a river"])[0]
    buf = io.BytesIO()
    Image.fromarray(PICTURE).save(buf, format="PNG")
    first = similarity_map(micro, PICTURE, query)
    for source in (PICTURE, Image.fromarray(PICTURE), buf.getvalue()):
        np.testing.assert_array_equal(similarity_map(micro, source, query).scores, first.scores)
    as_tensor = similarity_map(micro, PICTURE, torch.from_numpy(query)[None])  # a (1, D) torch query works too
    np.testing.assert_array_equal(as_tensor.scores, first.scores)


# ---------------------------------------------------------------- occlusion path


def _grey_with_content(size: int, cell: tuple[int, int], grid: int = 8) -> np.ndarray:
    """A mid-grey image (the occlusion colour) with random content in one cell only."""
    image = np.full((size, size, 3), OCCLUSION_GREY, dtype=np.uint8)
    step = size // grid
    rows, cols = slice(cell[0] * step, (cell[0] + 1) * step), slice(cell[1] * step, (cell[1] + 1) * step)
    image[rows, cols] = np.random.default_rng(1).integers(0, 256, (step, step, 3), dtype=np.uint8)
    return image


def test_occlusion_scores_the_only_informative_cell(micro: Backbone) -> None:
    """Hiding a grey cell changes nothing (score 0); hiding the content cell turns the image all grey, so the
    similarity to the image's own embedding drops: that cell, and only it, scores above zero. A transposed,
    constant or shuffled map fails."""
    backbone = micro
    image = _grey_with_content(backbone.image_size, (1, 5))
    query = backbone.encode_images([image])[0]
    result = similarity_map(backbone, image, query, method="occlusion")
    assert result.method == "occlusion"
    assert result.scores.shape == (8, 8) and result.scores.dtype == np.float32
    assert result.scores[1, 5] > 1e-4
    others = np.delete(result.scores.ravel(), 1 * 8 + 5)
    assert np.abs(others).max() < 1e-6
    assert np.unravel_index(result.scores.argmax(), result.scores.shape) == (1, 5)
    again = similarity_map(backbone, image, query, method="occlusion")
    np.testing.assert_array_equal(again.scores, result.scores)


def test_auto_falls_back_to_occlusion_without_patch_embeddings(micro: Backbone,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    query = micro.encode_images([PICTURE])[0]
    forced = similarity_map(micro, PICTURE, query, method="occlusion", grid=4)
    monkeypatch.setattr(micro.towers, "patch_embeddings_error", lambda: "no patches here")
    auto = similarity_map(micro, PICTURE, query, grid=4)
    assert auto.method == "occlusion" and auto.scores.shape == (4, 4)
    np.testing.assert_allclose(auto.scores, forced.scores, atol=1e-6)
    with pytest.raises(ValueError, match="no patches here"):
        similarity_map(micro, PICTURE, query, method="patch")


# ---------------------------------------------------------------- validation and geometry


@pytest.mark.parametrize(("query", "kwargs", "message"), [
    (np.ones(31), {}, "dimension 32"),
    (np.ones((2, 32)), {}, "dimension 32"),
    (np.zeros(32), {}, "zero vector"),
    (np.full(32, np.nan), {}, "NaN"),
    (np.ones(32), {"method": "gradcam"}, "method must be"),
    (np.ones(32), {"method": "occlusion", "grid": 0}, "grid must be"),
    (np.ones(32), {"method": "occlusion", "grid": 33}, "grid must be"),
])
def test_bad_inputs_are_refused(micro: Backbone, query: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        similarity_map(micro, PICTURE, query, **kwargs)


def test_model_view_box_follows_the_resize_mode() -> None:
    assert model_view_box((60, 40), Preprocess(resize_mode="shortest")) == (10.0, 0.0, 50.0, 40.0)
    assert model_view_box((40, 60), Preprocess(resize_mode="longest")) == (-10.0, 0.0, 50.0, 60.0)
    assert model_view_box((60, 40), Preprocess(resize_mode="squash")) == (0.0, 0.0, 60.0, 40.0)
    with pytest.raises(ValueError, match="resize_mode"):
        model_view_box((60, 40), Preprocess(resize_mode="zoom"))


# ---------------------------------------------------------------- overlay


def test_overlay_colours_the_highest_score_hottest() -> None:
    image = np.full((40, 40, 3), 50, dtype=np.uint8)
    scores = np.array([[0.1, 0.9], [0.1, 0.1]], dtype=np.float32)
    out = np.asarray(overlay(image, scores, alpha=1.0))
    assert out.shape == (40, 40, 3)
    np.testing.assert_array_equal(out[0, 39], _colour("inferno", 1.0))  # top-right corner: the maximum
    np.testing.assert_array_equal(out[39, 0], _colour("inferno", 0.0))  # bottom-left: the minimum
    half = np.asarray(overlay(image, scores, alpha=0.5, cmap="viridis")).astype(int)
    expected = np.round(0.5 * 50 + 0.5 * _colour("viridis", 1.0).astype(float))
    np.testing.assert_allclose(half[0, 39], expected, atol=1)


def test_overlay_alpha_zero_and_constant_maps() -> None:
    image = RNG.integers(0, 256, (24, 36, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(overlay(image, np.ones((3, 3)), alpha=0.0)), image)
    for value in (0.7, 0.0, -3.0):
        flat = np.asarray(overlay(image, np.full((3, 3), value), alpha=1.0))
        assert (flat == _colour("inferno", 0.0)).all()


def test_overlay_of_a_map_draws_inside_its_box_only(micro: Backbone) -> None:
    wide = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    result = similarity_map(micro, wide, micro.encode_texts(["a forest"])[0])
    assert result.box == (10.0, 0.0, 50.0, 40.0)
    out = np.asarray(overlay(wide, result, alpha=0.6))
    assert out.shape == wide.shape
    np.testing.assert_array_equal(out[:, :10], wide[:, :10])
    np.testing.assert_array_equal(out[:, 50:], wide[:, 50:])
    assert (out[:, 10:50] != wide[:, 10:50]).any()


@pytest.mark.parametrize(("scores", "kwargs", "message"), [
    (np.ones(4), {}, r"\(h, w\)"),
    (np.full((2, 2), np.inf), {}, "NaN or infinite"),
    (np.ones((2, 2)), {"alpha": 1.5}, "alpha"),
    (np.ones((2, 2)), {"cmap": "no-such-map"}, "colormap"),
])
def test_overlay_refuses_bad_input(scores: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        overlay(PICTURE, scores, **kwargs)

