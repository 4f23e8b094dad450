"""Calibrating the distance verdict: the threshold, the leave-one-source-out estimate, the calibrated model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geovl.eval.change_calibration import best_distance_threshold, calibrate_distance, pair_distances, source_of
from geovl.eval.change_protocol import ChangePair
from geovl.models.change_captioner import VerdictCalibration, load_change_captioner, save_change_captioner
from geovl.models.decoding import DecodingConfig
from tests.change_fixtures import make_tiny_change_captioner


def test_best_distance_threshold_separates_and_refuses_one_class() -> None:
    d = np.array([0.1, 0.2, 0.3, 0.6, 0.7])
    y = np.array([False, False, False, True, True])
    assert best_distance_threshold(d, y) == pytest.approx(0.45)
    with pytest.raises(ValueError, match="both changed and unchanged"):
        best_distance_threshold(d, np.ones(5, bool))


def _pairs(tile: str, seed: int) -> list[ChangePair]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(6):
        before = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        changed = i % 2 == 0
        after = (255 - before) if changed else np.clip(before.astype(int) + 3, 0, 255).astype(np.uint8)
        out.append(ChangePair(f"{tile}@{i},0", before, after, changed))
    return out


def test_calibration_is_estimated_on_held_out_tiles_and_ships_a_working_verdict(tmp_path: Path) -> None:
    tiny = make_tiny_change_captioner(tmp_path)
    model = load_change_captioner(tiny.folder, backbone=tiny.backbone)
    pairs = _pairs("a", 0) + _pairs("b", 1) + _pairs("c", 2)
    assert {source_of(p) for p in pairs} == {"a", "b", "c"}
    d = pair_distances(model, pairs, batch_size=4)
    assert d.shape == (18,) and np.all(d[0::2] > d[1::2].max())  # inverted images are far, +3 is near
    result = calibrate_distance(model, pairs, {"tiles": pairs})
    assert result.auroc == pytest.approx(1.0)
    assert d[1::2].max() < result.threshold < d[0::2].min()
    held_out = result.held_out["tiles"]
    assert held_out.n_pairs == 18 and held_out.accuracy == pytest.approx(1.0)
    model.verdict = VerdictCalibration("distance", result.threshold, 20.0, "test tiles")
    model.threshold = 0.5
    folder = save_change_captioner(model, tmp_path / "calibrated")
    again = load_change_captioner(folder, backbone=tiny.backbone)
    assert again.verdict == model.verdict
    import torch

    size = again.image_size
    far = again.describe_pixels(torch.zeros(1, 3, size, size, dtype=torch.uint8),
                                torch.full((1, 3, size, size), 255, dtype=torch.uint8), DecodingConfig())
    near = again.describe_pixels(torch.zeros(1, 3, size, size, dtype=torch.uint8),
                                 torch.zeros(1, 3, size, size, dtype=torch.uint8), DecodingConfig())
    assert far[0].probability > near[0].probability and not near[0].changed
    with pytest.raises(ValueError, match="verdict source"):
        VerdictCalibration("magic")
