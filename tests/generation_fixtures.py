"""A tiny geovl generator for tests: the micro backbone saved as a geovl folder and an untrained two-level UNet on
32 px tiles (8x8 patches of 48 channels) written as a loadable generator folder. Untrained: its images are
noise-like, but deterministic for a seed."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from geovl.models import Backbone, create_backbone, load_backbone
from geovl.models.diffusion import GeneratorConfig, GeoDiffusionPipeline, build_scheduler, build_unet
from geovl.models.diffusion_conditioning import TextConditioner
from geovl.models.factory import save_backbone
from geovl.models.generator import save_generator
from geovl.models.record import model_record

#: The tiny generator's UNet shape.
TINY_GENERATOR = GeneratorConfig(image_size=32, patch=4, channels=(32, 64), attention=(False, True),
                                 cross_attention_dim=32, head_dim=16, text_length=16)


class TinyGenerator(NamedTuple):
    """A saved tiny generator folder and the backbone it was built on."""

    folder: Path
    backbone: Backbone


def tiny_pipeline(backbone: Backbone, *, seed: int = 0, config: GeneratorConfig = TINY_GENERATOR,
                  default_steps: int = 4) -> GeoDiffusionPipeline:
    """An untrained pipeline on ``backbone`` (not saved)."""
    conditioner = TextConditioner(backbone, config.text_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(config, conditioner.dim)
    record = model_record(backbone)
    pipe = GeoDiffusionPipeline(unet.eval(), build_scheduler(config), patch=config.patch,
                                text_length=config.text_length, backbone_name=record["name"],
                                backbone_sha256=record.get("checkpoint_sha256"), default_steps=default_steps)
    pipe.set_progress_bar_config(disable=True)
    return pipe.attach_backbone(backbone)


def make_tiny_generator(tmp_path: Path, *, seed: int = 0, name: str = "tiny-generator") -> TinyGenerator:
    """Write a tiny generator under ``tmp_path / name`` (backbone under ``tmp_path / "tiny-backbone"``)."""
    backbone_dir = tmp_path / "tiny-backbone"
    if not backbone_dir.is_dir():
        save_backbone(create_backbone("geovl-micro", seed=0, device="cpu", precision="fp32"), backbone_dir)
    backbone = load_backbone(backbone_dir, device="cpu", precision="fp32")
    folder = save_generator(tiny_pipeline(backbone, seed=seed), tmp_path / name)
    return TinyGenerator(folder, backbone)
