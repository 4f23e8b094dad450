"""The bundled generator ``geovl-gen-small``: loads by name offline, is reproducible for a seed, and both of its
conditions change what it draws in the direction they name (the figures in docs/benchmarks.md are measured on more
images)."""

from __future__ import annotations

import numpy as np
import pytest

from geovl.models import DEFAULT_GENERATOR, load_model
from geovl.models.diffusion import GeoDiffusionPipeline
from geovl.models.registry import get_checkpoint
from geovl.models.weights import local_checkpoint

_MODEL: list[GeoDiffusionPipeline] = []
STEPS = 12


@pytest.fixture(scope="module")
def model() -> GeoDiffusionPipeline:
    if not _MODEL:
        loaded = load_model(DEFAULT_GENERATOR, device="cpu")
        assert isinstance(loaded, GeoDiffusionPipeline)
        _MODEL.append(loaded)
    return _MODEL[0]


def _pixels(model: GeoDiffusionPipeline, prompt: str, gsd: float | None, seeds: int = 3) -> np.ndarray:
    out = model([prompt] * seeds, gsd, steps=STEPS, seed=0)
    return np.stack([np.asarray(image, dtype=np.float64) for image in out.images])


def test_ships_with_the_package_and_is_the_default(model: GeoDiffusionPipeline) -> None:
    from geovl.serving.config import ServeConfig

    assert DEFAULT_GENERATOR == "geovl-gen-small" == ServeConfig().generator
    folder = local_checkpoint(get_checkpoint("geovl-gen-small"))
    assert folder is not None and sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 60e6
    assert model.backbone.info.name == "geovl-rs-small" and model.tile == 64
    assert model.metadata["trained_by"] == "geovl train diffusion" and model.metadata["steps"] == 2400
    assert next(model.unet.parameters()).dtype.is_floating_point


@pytest.mark.slow
def test_same_seed_same_image_and_each_condition_moves_it(model: GeoDiffusionPipeline) -> None:
    sea = _pixels(model, "a satellite image of lake or sea.", 10.0)
    assert np.array_equal(sea, _pixels(model, "a satellite image of lake or sea.", 10.0))  # same seed, same image
    # the text: EuroSAT's industrial tiles are bright roofs, its sea tiles dark water; so are the generated ones
    industrial = _pixels(model, "a satellite image of industrial buildings or commercial buildings.", 10.0)
    assert industrial.mean() > sea.mean() + 20
    # the resolution: the same prompt and seeds at 0.5 m are another image, and not a mere shift of brightness
    fine = _pixels(model, "a satellite image of lake or sea.", 0.5)
    assert np.abs(fine - sea).mean() > 10
    assert np.abs((fine - fine.mean()) - (sea - sea.mean())).mean() > 5
