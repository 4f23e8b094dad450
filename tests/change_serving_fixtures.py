"""Shared helpers of the change-captioning serving, API and demo tests: what the tiny change captioner says about
pairs of encoded images, straight from :class:`~geovl.tasks.change_captioning.pipeline.ChangeCaptioningPipeline`
(the reference the served answers are held to)."""

from __future__ import annotations

from geovl.models.change_captioner import ChangeResult, load_change_captioner
from geovl.models.decoding import DecodingConfig
from geovl.tasks.change_captioning.pipeline import ChangeCaptioningPipeline
from tests.change_fixtures import TinyChangeCaptioner

#: Short captions keep decoding quick on a loaded CPU.
FAST = DecodingConfig(method="greedy", max_length=8)


def expected_changes(tiny: TinyChangeCaptioner, before: list[bytes], after: list[bytes],
                     decoding: DecodingConfig = FAST, threshold: float | None = None) -> list[ChangeResult]:
    """The tiny change captioner's results for the pairs ``zip(before, after)``."""
    model = load_change_captioner(tiny.folder, backbone=tiny.backbone)
    out = ChangeCaptioningPipeline(model, decoding=decoding, threshold=threshold, workers=0)(before, after)
    assert not out.failures, out.failures
    return out.results
