"""The bundled change captioner ``geovl-change-small``: loads by name offline, and means something on real pairs
and under acquisition nuisances (the figures in docs/benchmarks.md are measured on more pairs)."""

from __future__ import annotations

import numpy as np
import pytest

from geovl.data.change_sentences import is_no_change_sentence
from geovl.eval.change_protocol import NUISANCES, mask_pairs, robustness_pairs, synthetic_change_set
from geovl.models import DEFAULT_CHANGE_CAPTIONER, load_model
from geovl.models.change_captioner import ChangeCaptioner
from geovl.models.decoding import DecodingConfig
from geovl.models.registry import get_checkpoint
from geovl.models.weights import local_checkpoint
from geovl.tasks.change_captioning import ChangeCaptioningPipeline
from tests.helpers import shared_data

_MODEL: list[ChangeCaptioner] = []


@pytest.fixture(scope="module")
def model() -> ChangeCaptioner:
    if not _MODEL:
        loaded = load_model(DEFAULT_CHANGE_CAPTIONER, device="cpu", precision="fp32")
        assert isinstance(loaded, ChangeCaptioner)
        _MODEL.append(loaded)
    return _MODEL[0]


def test_ships_with_the_package_and_is_the_default(model: ChangeCaptioner) -> None:
    from geovl.serving.config import ServeConfig

    assert DEFAULT_CHANGE_CAPTIONER == "geovl-change-small" == ServeConfig().change_captioner
    folder = local_checkpoint(get_checkpoint("geovl-change-small"))
    assert folder is not None and sum(f.stat().st_size for f in folder.iterdir()) < 12e6
    assert model.backbone.info.name == "geovl-rs-small" and 0.0 < model.threshold < 1.0
    assert model.metadata["trained_by"] == "geovl train change-captioner"


@pytest.mark.realdata
def test_real_levir_cd_changes_are_found_and_described(model: ChangeCaptioner) -> None:
    pairs = [p for p in mask_pairs(shared_data("change_samples/levir_cd_bitcd")) if p.changed]
    out = ChangeCaptioningPipeline(model, decoding=DecodingConfig(), workers=0)(
        [p.before for p in pairs], [p.after for p in pairs])
    assert not out.failures
    found = [r for r in out.results if r.changed]
    assert len(found) >= MIN_REAL_FOUND * len(pairs)
    assert all(not is_no_change_sentence(r.caption) for r in found)


@pytest.mark.parametrize("nuisance", NUISANCES)
def test_unchanged_pairs_stay_unchanged_under_acquisition_nuisances(model: ChangeCaptioner, nuisance: str) -> None:
    pairs = [p for p in synthetic_change_set(9101, 24, workers=0) if not p.changed][:10]
    varied = robustness_pairs(pairs, nuisance, seed=3)
    out = ChangeCaptioningPipeline(model, decoding=DecodingConfig(method="greedy", max_length=1, min_length=0),
                                   workers=0)([p.before for p in varied], [p.after for p in varied])
    kept = sum(not r.changed for r in out.results)
    assert kept >= MIN_UNCHANGED_KEPT * len(pairs), f"{nuisance}: {kept} of {len(pairs)} called unchanged"
    assert np.isfinite([r.probability for r in out.results]).all()


MIN_REAL_FOUND = 0.8  # 10 of 10 measured
MIN_UNCHANGED_KEPT = 0.8  # 100% of 174 held-out unchanged pairs measured, per nuisance
