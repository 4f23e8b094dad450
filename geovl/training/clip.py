"""Contrastive fine-tuning of a geovl backbone (CLIP InfoNCE or SigLIP), single process or DDP under torchrun.

One optimizer step consumes ``batch_size x world_size x grad_accum`` samples, and step ``s`` always reads the
same samples (:class:`geovl.training.data.BatchPlan`), so a resumed run repeats exactly what an uninterrupted one
does, and 2 processes with batch 4 see the same global batch as 1 process with batch 8. The run folder, resume,
checkpoints, logging and evaluation schedule are :class:`geovl.training.runtime.Runtime`'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from geovl.io.fs import atomic_folder
from geovl.models.backbone import Backbone
from geovl.models.device import resolve_precision
from geovl.models.towers import OpenClipTowers
from geovl.training.augment import RSAugment
from geovl.training.checkpoint import TrainingState
from geovl.training.clip_model import (
    ContrastiveForward,
    ContrastiveLoss,
    LockedText,
    ensure_logit_params,
    lr_lambda,
    param_groups,
    set_trainable,
)
from geovl.training.config import TrainConfig, config_to_dict
from geovl.training.data import BatchPlan, EpochDataset, TrainingSet, build_image_cache, collate
from geovl.training.feature_cache import (
    CACHE_FOLDER,
    FeatureCache,
    load_or_build_feature_cache,
    split_at_block,
    split_image_tower,
)
from geovl.training.runtime import RunSpec, Runtime, Stateful, TrainResult

logger = logging.getLogger(__name__)

__all__ = ["TrainResult", "train_clip"]

EXTERNAL_TEXT_PREFIX = "text.transformer."
TRAINED_BY = "geovl train clip"


def train_clip(config: TrainConfig, *, resume: str = "auto", progress: bool = True,
               stop_after: int | None = None) -> TrainResult:
    """Run (or resume) contrastive training as configured.

    Args:
        config: the run (see :class:`geovl.training.config.TrainConfig`).
        resume: ``"auto"`` continues from ``<output>/checkpoints/latest`` when it exists; ``"no"`` refuses an
            output folder that already holds checkpoints (nothing is overwritten); or a checkpoint folder.
        progress: show a progress bar (rank 0 only).
        stop_after: stop (without exporting) after this many optimizer steps of this call, as a crash would.

    Returns:
        The output folder, the exported model folder (``<output>/final``), per-step losses of this call and the
        evaluations.
    """
    config.validate()
    spec = RunSpec.for_config(config)
    losses: list[float] = []
    with Runtime(spec, resume=resume, progress=progress, stop_after=stop_after) as rt:
        job = _ClipJob(config, rt)
        rt.resume_state(job.model, job.stateful)
        job.prepare(progress)
        batches = job.micro_batches(rt.start_step, rt.end_step)
        for index in rt.steps():
            loss = job.train_step(batches)
            losses.append(loss)
            rt.advance(job.plan.per_step, loss=f"{loss:.3f}")
            if rt.should_log(rt.step):
                rt.log(rt.step, job.train_metrics(loss, index, rt.samples_per_s()))
            rt.maybe_eval(rt.step, job.evaluate)
            if rt.should_save(rt.step):
                rt.save(job.model, job.stateful)
        final = rt.on_main(job.finish) if rt.completed else None
    return TrainResult(output=spec.output, final=final, steps=rt.steps_done, losses=losses, evals=rt.evals)


class _ClipJob:
    """What a contrastive run builds (model, optimizer, data, loss) and its step, evaluation and export."""

    def __init__(self, config: TrainConfig, rt: Runtime) -> None:
        from geovl.models.factory import load_backbone

        self.config, self.rt = config, rt
        self.backbone = load_backbone(config.model.name, device=rt.device, precision="fp32", seed=config.run.seed,
                                      optimize=False)
        ensure_logit_params(self.backbone, config)
        self.model: nn.Module = self.backbone.model
        self.visual, self.text = set_trainable(self.model, config)
        self.data = TrainingSet(config.data, seed=config.run.seed)
        self.plan = BatchPlan(self.data.epoch_size, config.data.batch_size, config.optim.grad_accum, rt.rank,
                              rt.world)
        optim = config.optim
        groups = param_groups(self.model, optim.weight_decay, optim.lr, optim.pretrained_lr_scale)
        self.optimizer = torch.optim.AdamW(groups, lr=optim.lr,
                                           betas=optim.betas, eps=optim.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config.optim))
        self.dtype = resolve_precision(optim.precision, rt.device)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=self.dtype == torch.float16)
        self.stateful: dict[str, Stateful] = {"optimizer": self.optimizer, "scheduler": self.scheduler,
                                              "scaler": self.scaler}
        self.image_split = _image_split(self.visual, config)
        self.features: FeatureCache | None = None
        cached_head = self.image_split[1] if self.image_split is not None and config.data.cached_views else None
        self.forward: nn.Module = ContrastiveForward(self.backbone, cached_head)
        self.loss_fn = ContrastiveLoss(config.loss.kind, rt.rank, rt.world, config.loss.label_smoothing)
        self.locked_text = LockedText(self.backbone) if config.model.lock_text else None
        self.augment = RSAugment(config.data.augment, self.backbone.preprocess, train=True)
        self.cache: torch.Tensor | None = None
        self.cache_index: dict[tuple[int, int], int] | None = None

    def prepare(self, progress: bool) -> None:
        """After the resume: announce the run, wrap the model for DDP, decode the image cache, set train modes."""
        config, rt = self.config, self.rt
        if rt.main:
            trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in self.model.parameters())
            logger.info("training %s: %d/%d parameters trainable; %s; %d samples per epoch, %d steps per epoch",
                        config.model.name, trainable, total, self.data.describe(), self.data.epoch_size,
                        self.plan.steps_per_epoch)
        if rt.world > 1:
            device = rt.device
            self.forward = nn.parallel.DistributedDataParallel(
                self.forward, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=False)
        if self.image_split is not None and config.data.cached_views:
            self.features = load_or_build_feature_cache(
                rt.spec.output / CACHE_FOLDER, self.data, self.image_split[0], views=config.data.cached_views,
                augment=config.data.augment, preprocess=self.backbone.preprocess, device=rt.device, dtype=self.dtype,
                workers=config.data.workers, progress=progress and rt.main, write=rt.main)
        elif config.data.cache_images:
            side = round(self.backbone.image_size * 1.25)
            self.cache, self.cache_index = build_image_cache(self.data, side, config.data.workers,
                                                             progress and rt.main)
        self.set_modes()

    def set_modes(self) -> None:
        """Train mode, except locked towers (a locked timm image trunk without its head), which stay in eval mode
        (no dropout / batch-norm updates)."""
        self.model.train()
        if self.config.model.lock_image:
            (self.image_split[0] if self.image_split is not None else self.visual).eval()
        elif self.image_split is not None:  # the frozen stages of a trunk split at a block boundary
            self.image_split[0].eval()
        if self.config.model.lock_text:
            self.text.eval()

    def micro_batches(self, start_step: int, end_step: int) -> Iterator[dict[str, Any]]:
        """This rank's micro-batches for steps ``start_step`` to ``end_step - 1``, one DataLoader per epoch."""
        data_cfg, plan = self.config.data, self.plan
        step = start_step
        while step < end_step:
            epoch = plan.epoch_of(step)
            last = min(end_step, (epoch + 1) * plan.steps_per_epoch)
            dataset = EpochDataset(self.data, self.data.epoch_order(epoch), epoch, self.augment, self.cache,
                                   self.cache_index, self.features)
            loader = DataLoader(dataset, batch_sampler=list(plan.positions(step, last)),
                                num_workers=data_cfg.workers, collate_fn=collate(self.backbone.towers.tokenize),
                                prefetch_factor=4 if data_cfg.workers else None)
            yield from loader
            step = last

    def _loss(self, batch: dict[str, Any]) -> torch.Tensor:
        device, dtype = self.rt.device, self.dtype
        pixels = batch["pixels"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            if self.locked_text is not None:
                img, _ = self.forward(pixels, None)
                txt = self.locked_text(batch["captions"], batch["tokens"], device, dtype)
            else:
                img, txt = self.forward(pixels, batch["tokens"].to(device, non_blocking=True))
            scale, bias = self.backbone.towers.logit_scale_bias()
            if txt is None:
                raise RuntimeError("the text tower returned nothing")
            return self.loss_fn(img, txt, scale, bias)

    def train_step(self, batches: Iterator[dict[str, Any]]) -> float:
        """One optimizer step over ``grad_accum`` micro-batches; returns its mean loss."""
        micro = self.config.optim.grad_accum
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for m in range(micro):
            batch = next(batches)
            sync = m == micro - 1 or self.rt.world == 1
            forward: Any = self.forward
            with forward.no_sync() if not sync else contextlib.nullcontext():
                loss = self._loss(batch)
                self.scaler.scale(loss / micro).backward()
            step_loss += float(loss.detach()) / micro
        if self.config.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                           self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        with torch.no_grad():
            model: Any = self.model
            model.logit_scale.clamp_(0, math.log(100))
        return step_loss

    def train_metrics(self, loss: float, index: int, samples_per_s: float) -> dict[str, float]:
        return {"train/loss": loss, "train/lr": float(self.scheduler.get_last_lr()[0]),
                "train/logit_scale": float(self.backbone.towers.logit_scale_bias()[0].detach().exp()),
                "train/samples_per_s": samples_per_s, "train/epoch": self.plan.epoch_of(index)}

    def evaluate(self) -> dict[str, float]:
        """The configured evaluations of the model as it is now; the train modes are restored after."""
        try:
            return evaluate_backbone(self.backbone, self.config)
        finally:
            self.set_modes()

    def finish(self) -> Path:
        """The final evaluation (when configured) and the export to ``<output>/final``; rank 0 only."""
        rt = self.rt
        figures = self.evaluate() if (self.config.eval.retrieval or self.config.eval.zeroshot) else {}
        if figures:
            rt.record_eval(rt.step, figures)
        return export_backbone(self.backbone, rt.spec.output / "final", self.config, rt.state, figures)


def _image_split(visual: nn.Module, config: TrainConfig) -> tuple[nn.Module, nn.Module] | None:
    """``(frozen part, trained part)`` of the image tower when its frozen part's output can be cached: a locked
    timm trunk (the head trains), or a timm EfficientNet-style trunk whose first ``model.freeze_image_blocks``
    stages are frozen (:func:`geovl.training.feature_cache.split_at_block`); else ``None``."""
    from open_clip.timm_model import TimmModel

    if config.model.lock_image:
        return split_image_tower(visual)
    if config.model.freeze_image_blocks and isinstance(visual, TimmModel):
        return split_at_block(visual, config.model.freeze_image_blocks)
    return None


# ---------------------------------------------------------------- evaluation and export


def evaluate_backbone(backbone: Backbone, cfg: TrainConfig) -> dict[str, float]:
    """``eval/<set>/<figure>`` of the retrieval and zero-shot sets ``cfg.eval`` names."""
    from geovl.eval.protocols import eval_retrieval, eval_zeroshot

    out: dict[str, float] = {}
    module = backbone.model
    was_training = module.training
    module.eval()
    try:
        for path in cfg.eval.retrieval:
            rep = eval_retrieval(backbone, path, split=cfg.eval.retrieval_split, batch_size=cfg.eval.batch_size,
                                 workers=0, progress=False)
            name = Path(path).name
            for k in ("mean_recall", "i2t_R@1", "t2i_R@1"):
                value = rep.figures.get(k)
                if value is not None:
                    out[f"eval/{name}/{k}"] = float(value)
        holdouts = {str(Path(s.path)): s.holdout_fraction for s in cfg.data.sources if s.holdout_fraction > 0}
        for path in cfg.eval.zeroshot:
            hold = holdouts.get(str(Path(path)))
            rep = eval_zeroshot(backbone, path, label_set=cfg.eval.zeroshot_label_set,
                                limit_per_class=cfg.eval.zeroshot_limit_per_class, holdout=hold,
                                batch_size=cfg.eval.batch_size, workers=0, progress=False)
            out[f"eval/{Path(path).name}/zeroshot_accuracy"] = float(rep.figures["accuracy"] or 0.0)
    finally:
        module.train(was_training)
    return out


def _training_metadata(config: TrainConfig, state: TrainingState, figures: dict[str, float]) -> dict[str, Any]:
    return {"trained_by": TRAINED_BY, "steps": state.step, "samples_seen": state.samples,
            "config": config_to_dict(config), "final_eval": figures}


def export_backbone(backbone: Backbone, folder: Path, config: TrainConfig, state: TrainingState,
                    figures: dict[str, float]) -> Path:
    """Write the trained model to ``folder`` (atomically), in a form :func:`geovl.models.load_backbone` reads.

    An open_clip model becomes a geovl checkpoint in ``run.save_dtype``; a locked pretrained transformers text
    tower (LiT) is left out and referenced by name and sha256, and so is a locked timm image trunk that still holds
    exactly its packaged weights (:func:`geovl.models.external.packaged_trunk_external`). A transformers SigLIP
    model is written with ``save_pretrained``.
    """
    from geovl.models.factory import save_backbone

    if not isinstance(backbone.towers, OpenClipTowers):
        return _export_transformers(backbone, folder, config, state, figures)
    external: dict[str, dict[str, Any]] = {}
    cfg = getattr(backbone.towers, "model_cfg", {}) or {}
    text_cfg = cfg.get("text_cfg", {})
    if config.model.lock_text and text_cfg.get("hf_model_name") and text_cfg.get("hf_model_pretrained"):
        from geovl.models.text_models import text_model_sha256

        external[EXTERNAL_TEXT_PREFIX] = {"source": text_cfg["hf_model_name"], "locked": True,
                                          "sha256": text_model_sha256(text_cfg["hf_model_name"])}
    if config.model.lock_image:
        external.update(_packaged_trunk(backbone, cfg))
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.run.save_dtype]
    meta = _training_metadata(config, state, figures)
    return save_backbone(backbone, folder, metadata=meta, dtype=dtype, external=external or None)


def _packaged_trunk(backbone: Backbone, model_cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The external entry of a locked image trunk that still equals its packaged weights, else nothing (a trunk
    loaded from a fine-tuned checkpoint is saved with the model)."""
    from geovl.models.external import packaged_trunk_external
    from geovl.models.packaged import packaged_image_tower, trunk_difference

    packaged = packaged_image_tower(model_cfg)
    visual: Any = getattr(backbone.model, "visual", None)
    if packaged is None or split_image_tower(visual) is None:
        return {}
    why = trunk_difference(visual.trunk, packaged.name)
    if why is not None:
        logger.info("the locked image trunk is saved with the model: it is not the packaged '%s' (%s)",
                    packaged.name, why)
        return {}
    return packaged_trunk_external(model_cfg)


def _export_transformers(backbone: Backbone, folder: Path, config: TrainConfig, state: TrainingState,
                         figures: dict[str, float]) -> Path:
    """A transformers SigLIP model (Git-RSCLIP) is written as a ``save_pretrained`` folder (weights, config,
    tokenizer, preprocessor), which :func:`geovl.models.load_backbone` reads back."""
    towers: Any = backbone.towers
    model: Any = backbone.model
    pre = backbone.preprocess
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp)
        towers.tokenizer.save_pretrained(tmp)
        (tmp / "preprocessor_config.json").write_text(json.dumps({
            "image_mean": list(pre.mean), "image_std": list(pre.std),
            "size": {"height": pre.image_size, "width": pre.image_size}}, indent=2) + "\n")
        (tmp / "geovl_training.json").write_text(
            json.dumps(_training_metadata(config, state, figures), indent=2) + "\n")
    return folder
