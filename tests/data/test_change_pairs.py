"""Acquisition nuisances and real-texture pasted change pairs."""

from __future__ import annotations

import numpy as np
import pytest

from geovl.data.change_sentences import is_no_change_sentence
from geovl.data.synthetic.nuisance import NuisanceConfig, nuisance
from geovl.data.synthetic.paste_change import paste_change_pair


def _image(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.zeros((size, size, 3), np.float32)
    base[..., 1] = 120  # green-ish ground, so the season shift has something to act on
    base[..., 0] = 60
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


ONLY = {name: NuisanceConfig(**{k: (1.0 if k == name else 0.0) for k in
                                ("illumination", "season", "shift", "blur", "resolution", "haze", "noise")})
        for name in ("illumination", "season", "shift", "blur", "resolution", "haze", "noise")}


@pytest.mark.parametrize("name", sorted(ONLY))
def test_each_nuisance_changes_pixels_but_not_shape(name: str) -> None:
    image = _image(0)
    out = nuisance(image, np.random.default_rng(1), ONLY[name])
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image.astype(int)).mean() > 0.5


def test_nuisance_is_deterministic_and_zero_strength_is_identity() -> None:
    image = _image(0)
    a = nuisance(image, np.random.default_rng(3))
    b = nuisance(image, np.random.default_rng(3))
    assert np.array_equal(a, b)
    assert nuisance(image, np.random.default_rng(3), strength=0.0) is image
    with pytest.raises(ValueError, match="uint8"):
        nuisance(image.astype(np.float32), np.random.default_rng(0))


def test_shift_moves_content_by_a_few_pixels_without_black_borders() -> None:
    image = np.zeros((64, 64, 3), np.uint8) + 90
    image[20:40, 20:40] = 250
    out = nuisance(image, np.random.default_rng(5), ONLY["shift"])
    assert out.min() >= 80  # reflected borders, no black margin
    ys, xs = np.nonzero(out[..., 0] > 170)
    assert abs(ys.mean() - 29.5) <= 5 and abs(xs.mean() - 29.5) <= 5


def test_pasted_construction_marks_the_pasted_region() -> None:
    target, donor = _image(0), np.full((64, 64, 3), 230, np.uint8)
    pair = paste_change_pair(target, donor, np.random.default_rng(2), "buildings_built", ground="farmland",
                             nuisance_strength=0.0)
    assert pair.change_type == "buildings_built" and pair.mask.any() and not pair.mask.all()
    assert np.array_equal(pair.image_a, target)
    inside = pair.image_b[pair.mask.astype(bool)].mean()
    outside = pair.image_b[~pair.mask.astype(bool)].mean()
    assert inside > outside + 30
    assert not any(is_no_change_sentence(c) for c in pair.captions) and len(pair.captions) == 5


def test_pasted_demolition_is_the_reverse_and_unchanged_pairs_are_unchanged() -> None:
    target, donor = _image(0), np.full((64, 64, 3), 230, np.uint8)
    removed = paste_change_pair(target, donor, np.random.default_rng(2), "buildings_removed", nuisance_strength=0.0)
    assert np.array_equal(removed.image_b, target) and removed.mask.any()
    assert any("removed" in c or "demolished" in c for c in removed.captions)
    none = paste_change_pair(target, None, np.random.default_rng(2), "none")
    assert not none.mask.any() and all(is_no_change_sentence(c) for c in none.captions)
    assert not np.array_equal(none.image_b, target)  # a different acquisition of the same scene
    with pytest.raises(ValueError, match="donor"):
        paste_change_pair(target, None, np.random.default_rng(2), "buildings_built")
    with pytest.raises(ValueError, match="unknown pasted change"):
        paste_change_pair(target, donor, np.random.default_rng(2), "volcano")
