"""A tiny geovl change captioner for tests: the micro backbone saved as a geovl folder, and an untrained one-layer
change network over a dozen words on it, written as a loadable change-captioner folder. Untrained: its captions
are word salad and its verdicts arbitrary, but deterministic; ``threshold=0.0`` calls every pair changed and
``threshold=1.0`` (almost surely) none."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from geovl.models import Backbone, create_backbone, load_backbone
from geovl.models.caption_decoder import DecoderConfig
from geovl.models.caption_vocab import WordVocab
from geovl.models.captioner import PackedImageFeatures
from geovl.models.change_captioner import ChangeCaptioner, save_change_captioner
from geovl.models.change_net import ChangeNet, ChangeNetConfig
from geovl.models.factory import save_backbone

#: The training captions its vocabulary is built from.
TINY_CHANGE_CAPTIONS = (
    "some houses are built at the top left",
    "a road is built across the farmland",
    "the trees in the middle are removed",
    "there is no difference",
)


class TinyChangeCaptioner(NamedTuple):
    """A saved tiny change-captioner folder and the backbone it was built on."""

    folder: Path
    backbone: Backbone


def make_tiny_change_captioner(tmp_path: Path, *, seed: int = 0, threshold: float = 0.5,
                               semantic_classes: int = 0, name: str = "tiny-change") -> TinyChangeCaptioner:
    """Write a tiny change captioner under ``tmp_path / name`` (backbone under ``tmp_path / "tiny-backbone"``)."""
    backbone_dir = tmp_path / "tiny-backbone"
    if not backbone_dir.is_dir():
        save_backbone(create_backbone("geovl-micro", seed=0, device="cpu", precision="fp32"), backbone_dir)
    backbone = load_backbone(backbone_dir, device="cpu", precision="fp32")
    image_size = backbone.image_size
    with torch.no_grad():
        packed = PackedImageFeatures(backbone)(torch.zeros(1, 3, image_size, image_size))
    cells = packed.shape[1] - 1
    side = round(cells ** 0.5)
    vocab = WordVocab.build(TINY_CHANGE_CAPTIONS, min_count=1)
    decoder = DecoderConfig(vocab_size=len(vocab), feature_dim=packed.shape[2], embed_dim=backbone.embed_dim,
                            patches=cells, width=32, layers=1, heads=2, dropout=0.0, gated=True)
    config = ChangeNetConfig(decoder=decoder, grid=(side, cells // side), image_size=image_size,
                             semantic_classes=semantic_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ChangeNet(config)
        with torch.no_grad():  # open the gates so that the memory, not the prefix alone, picks the words
            for block in net.decoder.layers:
                assert block.gate is not None
                block.gate.fill_(2.0)
    model = ChangeCaptioner(backbone, net.eval(), vocab, threshold=threshold, name=name)
    folder = save_change_captioner(model, tmp_path / name, metadata={"purpose": "tests"})
    return TinyChangeCaptioner(folder, backbone)
