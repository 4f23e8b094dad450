"""Training a text- and resolution-conditioned generator (``geovl train diffusion``).

Rules:

* the backbone is frozen: every training text is encoded once (:class:`~geovl.training.diffusion_data.TileBank`);
  only the UNet trains;
* the loss is the MSE of the UNet's prediction (``v`` or noise, as configured) with min-SNR weighting
  (``snr_gamma``); timesteps and noise of step ``s`` come from a generator seeded by ``(seed, s)``;
* condition adaptation: each sample drops its text, its resolution or both with the configured probabilities, so
  the one UNet learns ``e(∅,∅)``, ``e(text,∅)`` and ``e(text,level)`` for separately weighted guidance;
* EMA weights (diffusers' ``EMAModel``, with warm-up) are kept, checkpointed with the optimizer and exported;
* sample grids (prompts x GSDs) go to ``<output>/samples/`` every ``eval.every_steps`` and at the end; the EMA
  generator is exported to ``<output>/final``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel, compute_snr
from PIL import Image
from torch import nn

from geovl.io.fs import atomic_path
from geovl.models.device import resolve_precision
from geovl.models.diffusion import GeoDiffusionPipeline, build_scheduler, build_unet
from geovl.models.diffusion_conditioning import TextConditioner
from geovl.models.factory import load_backbone
from geovl.models.generator import load_generator, save_generator
from geovl.models.record import model_record
from geovl.training.clip_model import lr_lambda
from geovl.training.config import config_to_dict
from geovl.training.data import mix_seed
from geovl.training.diffusion_config import DiffusionTrainConfig
from geovl.training.diffusion_data import TileBank
from geovl.training.runtime import RunSpec, Runtime, Stateful, TrainResult

__all__ = ["sample_grid", "train_diffusion"]

logger = logging.getLogger(__name__)

TRAINED_BY = "geovl train diffusion"


def train_diffusion(config: DiffusionTrainConfig, *, resume: str = "auto", progress: bool = True,
                    stop_after: int | None = None) -> TrainResult:
    """Run (or resume) generator training as configured (``stop_after``: stop after this many steps of this call,
    as if interrupted)."""
    config.validate()
    spec = RunSpec.for_config(config)
    losses: list[float] = []
    with Runtime(spec, resume=resume, progress=progress, stop_after=stop_after) as rt:
        if rt.world > 1:
            raise ValueError("generator training runs in one process here; start it without torchrun")
        job = _DiffusionJob(config, rt, progress)
        rt.resume_state(job.unet, job.stateful)
        job.unet.train()
        for index in rt.steps():
            loss = job.train_step(index)
            losses.append(loss)
            rt.advance(config.data.batch_size, loss=f"{loss:.4f}")
            if rt.should_log(rt.step):
                rt.log(rt.step, {"train/loss": loss, "train/lr": float(job.lr.get_last_lr()[0]),
                                 "train/samples_per_s": rt.samples_per_s()})
            rt.maybe_eval(rt.step, job.evaluate)
            if rt.should_save(rt.step):
                rt.save(job.unet, job.stateful)
        final = rt.on_main(job.finish) if rt.completed else None
    return TrainResult(output=spec.output, final=final, steps=rt.steps_done, losses=losses, evals=rt.evals)


def sample_grid(pipe: GeoDiffusionPipeline, prompts: list[str], gsds: list[float | None], *, steps: int,
                guidance: float, seed: int) -> Image.Image:
    """A grid image: one row per prompt, one column per GSD, every cell from the same seed."""
    tile = pipe.tile
    grid = Image.new("RGB", (tile * len(gsds), tile * len(prompts)))
    for r, prompt in enumerate(prompts):
        for c, gsd in enumerate(gsds):
            image = pipe(prompt, gsd=gsd, steps=steps, guidance=guidance, seed=seed).images[0]
            grid.paste(image, (c * tile, r * tile))
    return grid


def _init_from(unet: nn.Module, source: str, backbone_name: str, backbone: Any) -> None:
    """Copy the UNet weights of generator ``source`` into ``unet`` (a fresh run's starting point)."""
    pipe = load_generator(source, backbone=backbone, device="cpu", precision="fp32")
    named = pipe.metadata.get("training", {}).get("model", {}).get("backbone")
    if named and named != backbone_name:
        raise ValueError(f"model.init {source!r} was trained on backbone {named!r}, this run uses {backbone_name!r}")
    theirs = pipe.unet.state_dict()
    mine = unet.state_dict()
    wrong = sorted(k for k in mine if k not in theirs or theirs[k].shape != mine[k].shape)
    if wrong or len(theirs) != len(mine):
        raise ValueError(f"model.init {source!r} has a different UNet shape from this config's model section "
                         f"(first mismatch: {wrong[0] if wrong else 'extra weights'}); copy its model section")
    unet.load_state_dict({k: v.float() for k, v in theirs.items()})
    logger.info("UNet initialised from %s", source)


class _EMAState:
    """:class:`EMAModel` as a runtime ``Stateful``."""

    def __init__(self, ema: EMAModel) -> None:
        self.ema = ema

    def state_dict(self) -> dict[str, Any]:
        return dict(self.ema.state_dict())

    def load_state_dict(self, state_dict: dict[str, Any], /) -> None:
        self.ema.load_state_dict(state_dict)


class _DiffusionJob:
    """The UNet, its tiles and texts, optimizer and EMA for one run."""

    def __init__(self, config: DiffusionTrainConfig, rt: Runtime, progress: bool) -> None:
        self.config, self.rt = config, rt
        self.dtype = resolve_precision(config.optim.precision, rt.device)
        self.backbone = load_backbone(config.model.backbone, device=rt.device, precision="fp32", optimize=False)
        gen_cfg = config.generator()
        self.conditioner = TextConditioner(self.backbone, gen_cfg.text_length)
        self.bank = TileBank(config.data, gen_cfg.image_size, progress=progress and rt.main)
        cache = Path(config.data.cache_dir) if config.data.cache_dir else rt.spec.output / "data-cache"
        self.bank.encode_texts(self.conditioner, cache)
        self.null = self.conditioner.null()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.run.seed)
            self.unet = build_unet(gen_cfg, self.conditioner.dim).to(rt.device)
        if config.model.init:
            _init_from(self.unet, config.model.init, config.model.backbone, self.backbone)
        self.noise = build_scheduler(gen_cfg)
        o = config.optim
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=o.lr, betas=o.betas, eps=o.eps,
                                           weight_decay=o.weight_decay)
        self.lr = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(o))
        self.stateful: dict[str, Stateful] = {"optimizer": self.optimizer, "scheduler": self.lr}
        self.ema: EMAModel | None = None
        if config.ema_decay > 0:
            self.ema = EMAModel(self.unet.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=2 / 3)
            self.stateful["ema"] = _EMAState(self.ema)
        self.alphas = self.noise.alphas_cumprod.to(rt.device)
        if rt.main:
            logger.info("training a generator on %s: %d UNet parameters; tiles: %s", config.model.backbone,
                        sum(p.numel() for p in self.unet.parameters()), self.bank.describe())

    def train_step(self, index: int) -> float:
        cfg, device = self.config, self.rt.device
        batch = self.bank.batch(cfg.run.seed, index, cfg.data.batch_size)
        pipe_patch = cfg.model.patch
        x0 = F.pixel_unshuffle(batch.pixels.to(device), pipe_patch)
        gen = torch.Generator().manual_seed(mix_seed(cfg.run.seed, index, 5))
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (x0.shape[0],), generator=gen).to(device)
        noisy = self.noise.add_noise(x0, noise, t)
        target = self.noise.get_velocity(x0, noise, t) if cfg.model.prediction_type == "v_prediction" else noise
        text = self.bank.text_tokens(batch.text, self.null).to(device)
        classes = torch.where(batch.levels > 0, batch.levels - 9, torch.zeros_like(batch.levels)).to(device)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            pred = self.unet(noisy, t, encoder_hidden_states=text.features, class_labels=classes,
                             encoder_attention_mask=text.mask).sample
        per_sample = F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3))
        if cfg.snr_gamma > 0:
            snr = compute_snr(self.noise, t)
            weight = torch.clamp(snr, max=cfg.snr_gamma) / snr
            if cfg.model.prediction_type == "v_prediction":
                weight = torch.clamp(snr, max=cfg.snr_gamma) / (snr + 1)
            per_sample = per_sample * weight
        loss = per_sample.mean()
        loss.backward()
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(self.unet.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        self.lr.step()
        if self.ema is not None:
            self.ema.step(self.unet.parameters())
        return float(loss.detach())

    def pipeline(self) -> GeoDiffusionPipeline:
        """A pipeline over a copy of the UNet with the EMA weights (the training UNet is left as it is)."""
        gen_cfg = self.config.generator()
        unet = build_unet(gen_cfg, self.conditioner.dim).to(self.rt.device)
        unet.load_state_dict(self.unet.state_dict())
        if self.ema is not None:
            self.ema.copy_to(unet.parameters())
        pipe = GeoDiffusionPipeline(unet.eval(), build_scheduler(gen_cfg), patch=gen_cfg.patch,
                                    text_length=gen_cfg.text_length,
                                    backbone_name=model_record(self.backbone)["name"],
                                    backbone_sha256=model_record(self.backbone).get("checkpoint_sha256"))
        pipe.set_progress_bar_config(disable=True)
        pipe.attach_backbone(self.backbone)
        pipe.name = "trained generator"
        return pipe

    def evaluate(self) -> dict[str, float]:
        self._grid(self.pipeline())
        return {}

    def _grid(self, pipe: GeoDiffusionPipeline) -> Path:
        ev = self.config.eval
        grid = sample_grid(pipe, list(ev.prompts), list(ev.gsds), steps=ev.steps, guidance=ev.guidance, seed=ev.seed)
        path = self.rt.spec.output / "samples" / f"step-{self.rt.step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".tmp.png") as tmp:
            grid.save(tmp)
        return path

    def finish(self) -> Path:
        """The final sample grid and the export of the EMA generator to ``<output>/final``."""
        pipe = self.pipeline()
        self._grid(pipe)
        meta: dict[str, Any] = {"trained_by": TRAINED_BY, "steps": self.rt.step,
                                "config_hash": self.rt.spec.config_hash, "training": config_to_dict(self.config),
                                "tiles": self.bank.describe()}
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.config.run.save_dtype]
        return save_generator(pipe, self.rt.spec.output / "final", metadata=meta, dtype=dtype)
