"""Contrastive fine-tuning of a geovl backbone (CLIP InfoNCE or SigLIP), single process or DDP under torchrun.

One optimizer step consumes ``batch_size x world_size x grad_accum`` samples, and step ``s`` always reads the
same samples (see :mod:`geovl.training.data`), so a resumed run repeats exactly what an uninterrupted one does,
and 2 processes with batch 4 see the same global batch as 1 process with batch 8.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from geovl.io.fs import swap_in_folder
from geovl.models.backbone import Backbone
from geovl.models.device import resolve_device, resolve_precision
from geovl.models.towers import OpenClipTowers
from geovl.training.augment import RSAugment
from geovl.training.checkpoint import TrainingState, latest_checkpoint, load_checkpoint, save_checkpoint
from geovl.training.config import TrainConfig, config_to_dict
from geovl.training.data import EpochDataset, TrainingSet, build_image_cache, collate

logger = logging.getLogger(__name__)

__all__ = ["TrainResult", "train_clip"]

EXTERNAL_TEXT_PREFIX = "text.transformer."


@dataclass
class TrainResult:
    """What a run produced."""

    output: Path
    final: Path | None
    steps: int
    losses: list[float] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_pref: str) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), resolve_device(device_pref)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return _Dist(rank, world, local), device


# ---------------------------------------------------------------- model set-up


def _blocks(tower: Any) -> list[nn.Module]:
    for path in ("transformer.resblocks", "trunk.blocks", "encoder.layer", "transformer.encoder.layer",
                 "encoder.layers"):
        obj = tower
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return list(obj)
    if all(hasattr(tower, n) for n in ("layer1", "layer2", "layer3", "layer4")):  # ModifiedResNet
        return [tower.layer1, tower.layer2, tower.layer3, tower.layer4]
    raise ValueError(f"cannot find the blocks of a {type(tower).__name__} tower to freeze")


def _freeze_first(tower: nn.Module, n: int, what: str) -> None:
    if n <= 0:
        return
    blocks = _blocks(tower)
    if n > len(blocks):
        raise ValueError(f"{what}: cannot freeze {n} blocks, the tower has {len(blocks)}")
    frozen = {id(p) for b in blocks[:n] for p in b.parameters()}
    trained_later = {id(p) for b in blocks[n:] for p in b.parameters()}
    # embeddings / stems come before the first block: freeze everything not in a later block or after them
    for name, p in tower.named_parameters():
        if id(p) in frozen or (id(p) not in trained_later and _is_input_side(name)):
            p.requires_grad_(False)


def _is_input_side(name: str) -> bool:
    return any(k in name for k in ("embed", "conv1", "class_embedding", "positional", "ln_pre", "stem",
                                   "bn1", "conv2", "bn2", "conv3", "bn3", "embeddings"))


def _towers_of(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    m: Any = model
    if hasattr(m, "visual"):
        text = m.text if hasattr(m, "text") else None
        if text is None:  # open_clip CLIP keeps its text modules on the model itself
            return m.visual, _BuiltinText(m)
        return m.visual, text
    return m.vision_model, m.text_model  # transformers SigLIP


class _BuiltinText(nn.Module):
    """A view of open_clip CLIP's built-in text tower (token embedding, transformer, ln_final, projection)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.transformer = model.transformer
        self.token_embedding = model.token_embedding
        self.ln_final = model.ln_final
        self._extra = [model.positional_embedding] + ([model.text_projection]
                                                      if isinstance(model.text_projection, nn.Parameter) else [])
        if isinstance(model.text_projection, nn.Module):
            self.text_projection = model.text_projection

    def all_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.parameters()
        yield from self._extra


def _set_trainable(model: nn.Module, cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    visual, text = _towers_of(model)
    if cfg.model.lock_image:
        for p in visual.parameters():
            p.requires_grad_(False)
    if cfg.model.lock_text:
        head = {id(p) for p in _text_head_params(model)}
        params = text.all_parameters() if isinstance(text, _BuiltinText) else text.parameters()
        for p in params:
            if id(p) not in head:
                p.requires_grad_(False)
    _freeze_first(visual, cfg.model.freeze_image_blocks, "model.freeze_image_blocks")
    _freeze_first(text, cfg.model.freeze_text_blocks, "model.freeze_text_blocks")
    return visual, text


def _text_head_params(model: nn.Module) -> list[nn.Parameter]:
    """The projection from the text encoder into the joint space, which stays trainable under ``lock_text``
    (LiT: a locked encoder with a learned head). SigLIP text models have no separable head."""
    m: Any = model
    text = getattr(m, "text", None)
    if text is not None and hasattr(text, "proj"):  # open_clip HFTextEncoder
        return list(text.proj.parameters())
    proj = getattr(m, "text_projection", None)
    if isinstance(proj, nn.Parameter):
        return [proj]
    if isinstance(proj, nn.Module):
        return list(proj.parameters())
    return []


class _LockedText:
    """Locked text encoder + trainable head: the encoder's pooled features are computed once per distinct
    caption (the encoder is frozen and in eval mode, so they cannot change) and only the head runs per step."""

    def __init__(self, backbone: Backbone, limit: int = 2_000_000) -> None:
        self.backbone = backbone
        self.m: Any = backbone.model
        self.cache: dict[str, torch.Tensor] = {}
        self.limit = limit
        self.split = bool(_text_head_params(backbone.model))

    def trunk(self, tokens: torch.Tensor) -> torch.Tensor:
        m = self.m
        if not self.split:
            return self.backbone.towers.encode_text(tokens)
        text = getattr(m, "text", None)
        if text is not None and hasattr(text, "proj"):
            mask = (tokens != text.config.pad_token_id).long()
            return text.pooler(text.transformer(input_ids=tokens, attention_mask=mask), mask)
        from open_clip.transformer import text_global_pool

        towers: Any = self.backbone.towers
        tokens = towers._trim(tokens)
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[: tokens.shape[1]].to(cast)
        mask = m.attn_mask[: tokens.shape[1], : tokens.shape[1]] if m.attn_mask is not None else None
        x = m.ln_final(m.transformer(x, attn_mask=mask))
        return text_global_pool(x, tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        m = self.m
        if not self.split:
            return feats
        text = getattr(m, "text", None)
        if text is not None and hasattr(text, "proj"):
            return text.proj(feats)
        proj = m.text_projection
        return proj(feats) if isinstance(proj, nn.Module) else feats @ proj

    def __call__(self, captions: list[str], tokens: torch.Tensor, device: torch.device, dtype: torch.dtype
                 ) -> torch.Tensor:
        fresh: dict[str, torch.Tensor] = {}
        missing = [i for i, c in enumerate(captions) if c not in self.cache]
        if missing:
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                out = self.trunk(tokens[missing].to(device)).float()
            fresh = {captions[i]: row for i, row in zip(missing, out, strict=True)}
            if len(self.cache) < self.limit:
                self.cache.update(fresh)
        feats = torch.stack([self.cache[c] if c in self.cache else fresh[c] for c in captions])
        return self.head(feats)


def _ensure_logit_params(backbone: Backbone, cfg: TrainConfig) -> None:
    m: Any = backbone.model
    if cfg.loss.kind == "siglip" and getattr(m, "logit_bias", None) is None:
        m.logit_bias = nn.Parameter(torch.tensor(-10.0, device=backbone.device))
        if isinstance(backbone.towers, OpenClipTowers):
            backbone.towers.model_cfg = {**backbone.towers.model_cfg, "init_logit_bias": -10.0}
        if cfg.model.init_logit_scale is None:
            with torch.no_grad():
                m.logit_scale.fill_(math.log(10.0))
    if cfg.model.init_logit_scale is not None:
        with torch.no_grad():
            m.logit_scale.fill_(cfg.model.init_logit_scale)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or any(k in name for k in ("bn", "ln", "norm", "bias", "logit_scale", "logit_bias",
                                                   "embedding", "class_embedding")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_lambda(cfg: TrainConfig) -> Any:
    warm, total, floor = cfg.optim.warmup_steps, cfg.optim.steps, cfg.optim.min_lr_ratio

    def fn(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return fn


class _Forward(nn.Module):
    """The module DDP wraps: both towers' pooled embeddings (the text side may be skipped when cached)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.model = backbone.model
        self.towers = backbone.towers

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        img = self.towers.encode_image(pixels)
        txt = self.towers.encode_text(tokens) if tokens is not None else None
        return img, txt


# ---------------------------------------------------------------- losses


class _Loss:
    def __init__(self, kind: str, rank: int, world: int, label_smoothing: float) -> None:
        from open_clip.loss import ClipLoss, SigLipLoss

        self.kind = kind
        self.smoothing = label_smoothing
        if kind == "siglip":
            self.fn: Any = SigLipLoss(rank=rank, world_size=world)
        else:
            # gather with grad: every rank computes the full-batch loss and gradients reach every feature, so
            # DDP's gradient average equals the single-process gradient of the same global batch
            self.fn = ClipLoss(local_loss=False, gather_with_grad=True, rank=rank, world_size=world)
        self.world = world

    def __call__(self, img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor,
                 bias: torch.Tensor | None) -> torch.Tensor:
        img, txt = F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)
        s = scale.float().exp().clamp(max=100.0)
        if self.kind == "siglip":
            return self.fn(img, txt, s, bias.float() if bias is not None else None)
        if self.smoothing and self.world == 1:
            logits = s * img @ txt.T
            labels = torch.arange(len(img), device=img.device)
            return (F.cross_entropy(logits, labels, label_smoothing=self.smoothing)
                    + F.cross_entropy(logits.T, labels, label_smoothing=self.smoothing)) / 2
        return self.fn(img, txt, s)


# ---------------------------------------------------------------- logging


class _Logger:
    def __init__(self, output: Path, tensorboard: bool, enabled: bool) -> None:
        self.enabled = enabled
        self.path = output / "metrics.csv"
        self.tb: Any = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(output / "tensorboard"))
            except ImportError:
                logger.warning("tensorboard is not installed; logging to metrics.csv only")

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        new = not self.path.is_file()
        with self.path.open("a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(["step", "key", "value"])
            for k, v in values.items():
                w.writerow([step, k, f"{v:.6g}"])
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def truncate_after(self, step: int) -> None:
        """Drop rows a killed run logged after its last checkpoint (they are about to be redone)."""
        if not self.enabled or not self.path.is_file():
            return
        with self.path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            csv.writer(fh).writerows(kept)
        os.replace(tmp, self.path)


# ---------------------------------------------------------------- evaluation


def _evaluate(backbone: Backbone, cfg: TrainConfig) -> dict[str, float]:
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


# ---------------------------------------------------------------- the run


def _config_hash(cfg: TrainConfig) -> str:
    data = config_to_dict(cfg)
    for key in ("run", "eval"):
        data.pop(key, None)
    data["optim"].pop("steps", None)  # a run may be extended
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _batches(start_step: int, steps_per_epoch: int, per_step: int, micro: int, bs: int, rank: int,
             world: int, total_steps: int) -> Iterator[tuple[int, int, list[int]]]:
    """(step, epoch, positions) for this rank's micro-batches, from ``start_step``."""
    for step in range(start_step, total_steps):
        epoch, within = divmod(step, steps_per_epoch)
        base = within * per_step
        for m in range(micro):
            first = base + (m * world + rank) * bs
            yield step, epoch, list(range(first, first + bs))


def train_clip(config: TrainConfig, *, resume: str = "auto", progress: bool = True,
               stop_after: int | None = None) -> TrainResult:
    """Run (or resume) contrastive training as configured.

    Args:
        config: the run (see :class:`~geovl.training.config.TrainConfig`).
        resume: ``"auto"`` continues from ``<output>/checkpoints/latest`` when it exists; ``"no"`` refuses an
            output folder that already holds checkpoints (nothing is overwritten); or a checkpoint folder.
        progress: show a progress bar (rank 0 only).
        stop_after: stop (without exporting) after this many optimizer steps of this call, as a crash would.

    Returns:
        The output folder, the exported model folder (``<output>/final``), per-step losses of this call and the
        evaluations.
    """
    from geovl.models.factory import load_backbone

    config.validate()
    ddp, device = _init_distributed(config.run.device)
    output = Path(config.run.output)
    ckpt_dir = output / "checkpoints"
    if ddp.main:
        output.mkdir(parents=True, exist_ok=True)

    # ---- resume decision (before anything is written)
    start_ckpt: Path | None
    if resume == "auto":
        start_ckpt = latest_checkpoint(ckpt_dir)
    elif resume == "no":
        if latest_checkpoint(ckpt_dir) is not None:
            raise ValueError(f"{output} already holds checkpoints of a run; resume it (--resume auto) or choose "
                             "another --output")
        start_ckpt = None
    else:
        start_ckpt = Path(resume)
        if not start_ckpt.is_dir():
            raise FileNotFoundError(f"{start_ckpt}: no such checkpoint folder")

    _seed_all(config.run.seed + ddp.rank)
    backbone = load_backbone(config.model.name, device=device, precision="fp32", seed=config.run.seed)
    _ensure_logit_params(backbone, config)
    model = backbone.model
    visual, text = _set_trainable(model, config)
    text_locked = config.model.lock_text
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    data = TrainingSet(config.data, seed=config.run.seed)
    per_step = config.data.batch_size * ddp.world * config.optim.grad_accum
    steps_per_epoch = data.epoch_size // per_step
    if steps_per_epoch < 1:
        raise ValueError(f"an epoch has {data.epoch_size} samples, fewer than one optimizer step's {per_step} "
                         "(batch_size x processes x grad_accum); lower the batch size or set data.samples_per_epoch")

    optimizer = torch.optim.AdamW(_param_groups(model, config.optim.weight_decay), lr=config.optim.lr,
                                  betas=config.optim.betas, eps=config.optim.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    dtype = resolve_precision(config.optim.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    state = TrainingState(config_hash=_config_hash(config))
    if start_ckpt is not None:
        state, extra = load_checkpoint(start_ckpt, model)
        if state.config_hash != _config_hash(config):
            raise ValueError(f"{start_ckpt} was written by a run with a different model/data/optimizer/loss config; "
                             "use another --output for a new run")
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        if "scaler" in extra:
            scaler.load_state_dict(extra["scaler"])
        _set_rng_state(extra["rng"][ddp.rank] if ddp.rank < len(extra["rng"]) else extra["rng"][0])
        if ddp.main:
            logger.info("resuming from %s (step %d)", start_ckpt, state.step)
    log = _Logger(output, config.run.tensorboard, ddp.main)
    if ddp.main:
        log.truncate_after(state.step)
        (output / "config.json").write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
        logger.info("training %s: %d/%d parameters trainable; %s; %d samples per epoch, %d steps per epoch",
                    config.model.name, trainable, total, data.describe(), data.epoch_size, steps_per_epoch)

    forward: nn.Module = _Forward(backbone)
    if ddp.world > 1:
        forward = nn.parallel.DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)
    loss_fn = _Loss(config.loss.kind, ddp.rank, ddp.world, config.loss.label_smoothing)

    augment = RSAugment(config.data.augment, backbone.preprocess, train=True)
    cache = cache_index = None
    if config.data.cache_images:
        side = round(backbone.image_size * 1.25)
        cache, cache_index = build_image_cache(data, side, config.data.workers, progress and ddp.main)
    tokenize = backbone.towers.tokenize
    locked_text = _LockedText(backbone) if text_locked else None

    def set_modes() -> None:
        model.train()
        if config.model.lock_image:
            visual.eval()
        if text_locked:
            text.eval()

    set_modes()
    losses: list[float] = []
    evals: list[dict[str, Any]] = []
    micro = config.optim.grad_accum
    start_step = state.step
    end_step = config.optim.steps if stop_after is None else min(config.optim.steps, start_step + stop_after)
    bar: Any = None
    if progress and ddp.main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.optim.steps, initial=start_step, unit="step", dynamic_ncols=True)

    def loader_for(epoch: int, first_step: int) -> Iterator[dict[str, Any]]:
        """This rank's micro-batches from ``first_step`` to the end of ``epoch`` (or of this call)."""
        last = min(end_step, (epoch + 1) * steps_per_epoch)
        plan = [pos for _, _, pos in _batches(first_step, steps_per_epoch, per_step, micro,
                                              config.data.batch_size, ddp.rank, ddp.world, last)]
        ds = EpochDataset(data, data.epoch_order(epoch), epoch, augment, cache, cache_index)
        loader = DataLoader(ds, batch_sampler=plan, num_workers=config.data.workers,
                            collate_fn=collate(tokenize), prefetch_factor=4 if config.data.workers else None)
        return iter(loader)

    window_t, window_n = time.perf_counter(), 0
    step = start_step
    current_epoch = -1
    it: Iterator[dict[str, Any]] = iter(())
    while step < end_step:
        epoch = step // steps_per_epoch
        if epoch != current_epoch:
            it = loader_for(epoch, step)
            current_epoch = epoch
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for m in range(micro):
            batch = next(it)
            pixels = batch["pixels"].to(device, non_blocking=True)
            sync = m == micro - 1 or ddp.world == 1
            ctx = forward.no_sync() if (ddp.world > 1 and not sync) else _null()  # type: ignore[operator]
            with ctx:
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    if locked_text is not None:
                        img, _ = forward(pixels, None)
                        txt = locked_text(batch["captions"], batch["tokens"], device, dtype)
                    else:
                        img, txt = forward(pixels, batch["tokens"].to(device, non_blocking=True))
                    scale, bias = backbone.towers.logit_scale_bias()
                    if txt is None:
                        raise RuntimeError("the text tower returned nothing")
                    loss = loss_fn(img, txt, scale, bias)
                scaler.scale(loss / micro).backward()
            step_loss += float(loss.detach()) / micro
            window_n += len(pixels) * ddp.world
        if config.optim.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        with torch.no_grad():
            m_any: Any = model
            m_any.logit_scale.clamp_(0, math.log(100))
        step += 1
        state.step, state.samples = step, state.samples + per_step
        losses.append(step_loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}")
        if step % config.run.log_every == 0 or step == end_step:
            now = time.perf_counter()
            log.log(step, {"train/loss": step_loss, "train/lr": float(scheduler.get_last_lr()[0]),
                           "train/logit_scale": float(backbone.towers.logit_scale_bias()[0].detach().exp()),
                           "train/samples_per_s": window_n / max(now - window_t, 1e-9), "train/epoch": epoch})
            window_t, window_n = now, 0
        if config.eval.every_steps and step % config.eval.every_steps == 0 and step < config.optim.steps:
            if ddp.main:
                figures = _evaluate(backbone, config)
                set_modes()
                log.log(step, figures)
                evals.append({"step": step, **figures})
            if ddp.world > 1:
                dist.barrier()
        if step % config.run.save_every == 0 or step == end_step:
            _save(ckpt_dir, model, state, optimizer, scheduler, scaler, ddp, config)
    if bar is not None:
        bar.close()

    final: Path | None = None
    if step >= config.optim.steps:
        if ddp.main:
            figures = _evaluate(backbone, config) if (config.eval.retrieval or config.eval.zeroshot) else {}
            if figures:
                log.log(step, figures)
                evals.append({"step": step, **figures})
            final = _export(backbone, output / "final", config, state, figures)
        if ddp.world > 1:
            dist.barrier()
    return TrainResult(output=output, final=final if ddp.main else None, steps=step - start_step, losses=losses,
                       evals=evals)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _save(folder: Path, model: nn.Module, state: TrainingState, optimizer: torch.optim.Optimizer,
          scheduler: Any, scaler: Any, ddp: _Dist, config: TrainConfig) -> None:
    rng = _rng_state()
    if ddp.world > 1:
        gathered: list[Any] = [None] * ddp.world
        dist.all_gather_object(gathered, rng)
        rngs = gathered
    else:
        rngs = [rng]
    if ddp.main:
        extra = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "rng": rngs}
        save_checkpoint(folder, model, state, extra, keep=config.run.keep_checkpoints)
    if ddp.world > 1:
        dist.barrier()


def _export(backbone: Backbone, folder: Path, config: TrainConfig, state: TrainingState,
            figures: dict[str, float]) -> Path:
    from geovl.models.factory import save_backbone

    if not isinstance(backbone.towers, OpenClipTowers):
        return _export_transformers(backbone, folder, config, state, figures)
    external = None
    cfg = getattr(backbone.towers, "model_cfg", {}) or {}
    text_cfg = cfg.get("text_cfg", {})
    if config.model.lock_text and text_cfg.get("hf_model_name") and text_cfg.get("hf_model_pretrained"):
        from geovl.models.text_models import text_model_sha256

        external = {EXTERNAL_TEXT_PREFIX: {"source": text_cfg["hf_model_name"], "locked": True,
                                           "sha256": text_model_sha256(text_cfg["hf_model_name"])}}
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.run.save_dtype]
    meta = {"trained_by": "geovl train clip", "steps": state.step, "samples_seen": state.samples,
            "config": config_to_dict(config), "final_eval": figures}
    return save_backbone(backbone, folder, metadata=meta, dtype=dtype, external=external)


def _export_transformers(backbone: Backbone, folder: Path, config: TrainConfig, state: TrainingState,
                         figures: dict[str, float]) -> Path:
    """A transformers SigLIP model (Git-RSCLIP) is written as a ``save_pretrained`` folder (weights, config,
    tokenizer, preprocessor), which :func:`geovl.models.load_backbone` reads back; atomically, like every export."""
    import shutil
    import tempfile

    towers: Any = backbone.towers
    model: Any = backbone.model
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        model.save_pretrained(tmp)
        towers.tokenizer.save_pretrained(tmp)
        pre = backbone.preprocess
        (tmp / "preprocessor_config.json").write_text(json.dumps({
            "image_mean": list(pre.mean), "image_std": list(pre.std),
            "size": {"height": pre.image_size, "width": pre.image_size}}, indent=2) + "\n")
        (tmp / "geovl_training.json").write_text(json.dumps({
            "trained_by": "geovl train clip", "steps": state.step, "samples_seen": state.samples,
            "config": config_to_dict(config), "final_eval": figures}, indent=2) + "\n")
        tmp.chmod(0o755)
        swap_in_folder(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder
