"""A tiny geovl captioner for tests: a micro backbone saved as a geovl folder (so the captioner's config records its
weights' sha256 and a different backbone is refused), and a one-layer caption decoder over a dozen words on top of
it, written as a loadable captioner folder. Untrained: its captions are word salad, but deterministic and different
from image to image."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from geovl.models import Backbone, create_backbone, load_backbone
from geovl.models.caption_decoder import CaptionDecoder, DecoderConfig
from geovl.models.caption_vocab import WordVocab
from geovl.models.captioner import BackboneCaptioner, PackedImageFeatures, load_captioner, save_captioner
from geovl.models.decoding import DecodingConfig
from geovl.models.factory import save_backbone
from geovl.tasks.captioning import CaptioningPipeline

#: The training captions its vocabulary is built from.
TINY_CAPTIONS = (
    "many buildings and green trees are in a dense residential area",
    "a river crosses the farmland next to a forest",
    "several planes are parked at the airport",
    "a beach with white sand next to the blue sea",
)


class TinyCaptioner(NamedTuple):
    """A saved tiny captioner folder and the backbone it was built on (loaded from its own saved folder)."""

    folder: Path
    backbone: Backbone


def make_tiny_captioner(tmp_path: Path, *, seed: int = 0) -> TinyCaptioner:
    """Write a tiny captioner under ``tmp_path``: ``(captioner folder, backbone)``, both on the CPU in fp32.

    ``load_captioner(folder)`` loads it with its backbone (read from ``tmp_path / "tiny-backbone"``);
    ``load_captioner(folder, backbone=backbone)`` shares the returned backbone; any other backbone is refused
    with a ``ValueError`` (its weights' sha256 differs).
    """
    backbone_dir = save_backbone(create_backbone("geovl-micro", seed=seed, device="cpu", precision="fp32"),
                                 tmp_path / "tiny-backbone")
    backbone = load_backbone(backbone_dir, device="cpu", precision="fp32")
    size = backbone.image_size
    with torch.no_grad():
        packed = PackedImageFeatures(backbone)(torch.zeros(1, 3, size, size))
    vocab = WordVocab.build(TINY_CAPTIONS, min_count=1)
    config = DecoderConfig(vocab_size=len(vocab), feature_dim=packed.shape[2], embed_dim=backbone.embed_dim,
                           patches=packed.shape[1] - 1, width=32, layers=1, heads=2, dropout=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = CaptionDecoder(config)
        with torch.no_grad():  # large memory projections: the image, not the prefix alone, picks the words
            for proj in (decoder.patch_proj, decoder.pooled_proj):
                linear = proj[1]
                assert isinstance(linear, torch.nn.Linear)
                linear.weight.normal_(0.0, 3.0)
    captioner = BackboneCaptioner(backbone, decoder.eval(), vocab, name="tiny-captioner")
    folder = save_captioner(captioner, tmp_path / "tiny-captioner", metadata={"purpose": "tests"})
    return TinyCaptioner(folder, backbone)


def expected_captions(tiny: TinyCaptioner, images: list[bytes], decoding: DecodingConfig) -> list[str]:
    """The tiny captioner's captions of encoded images, straight from :class:`CaptioningPipeline`."""
    model = load_captioner(tiny.folder, backbone=tiny.backbone)
    return CaptioningPipeline(model, decoding=decoding, workers=0)(images).captions


def distinct_images(tiny: TinyCaptioner, n: int, decoding: DecodingConfig) -> tuple[list[bytes], list[str]]:
    """``n`` random PNGs whose captions all differ (so a test also checks their order), and those captions."""
    from tests.api_fixtures import png_bytes

    pool = [png_bytes(seed) for seed in range(4 * n)]
    chosen: dict[str, bytes] = {}
    for image, caption in zip(pool, expected_captions(tiny, pool, decoding), strict=True):
        chosen.setdefault(caption, image)
        if len(chosen) == n:
            return list(chosen.values()), list(chosen)
    raise AssertionError(f"only {len(chosen)} different captions among {len(pool)} images")
