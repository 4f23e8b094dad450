"""Training a captioner's decoder on a frozen backbone (``geovl train captioner``), single process or DDP.

Rules:

* the backbone is frozen: its packed image features (patches + pooled embedding,
  :class:`geovl.models.captioner.PackedImageFeatures`) are computed once for ``data.cached_views`` views of every
  training image (:mod:`geovl.training.feature_cache`; view 0 plain, the others seeded ``data.augment`` draws) and
  only the decoder trains;
* the word vocabulary is built from the training captions (``model.vocab_min_count``), so the same data always
  gives the same vocabulary and a resumed run the same model;
* step ``s`` reads the same samples, captions and views whatever happened before
  (:class:`geovl.training.data.BatchPlan` and a generator seeded by ``(seed, epoch, position)``), so a resumed run
  repeats exactly what an uninterrupted one does;
* ``eval.datasets`` are captioned (``eval.method``) and scored with BLEU-1..4, ROUGE-L and CIDEr-D every
  ``eval.every_steps`` and at the end; the finished captioner is written to ``<output>/final`` with its figures, and
  with ``eval.select_by`` the best one by that figure to ``<output>/best`` (select on a hold-out of the training
  splits, never on the sets you report).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geovl.models.backbone import Backbone
from geovl.models.caption_decoder import CaptionDecoder, DecoderConfig
from geovl.models.caption_vocab import PAD, WordVocab
from geovl.models.captioner import CAPTIONER_CONFIG, BackboneCaptioner, PackedImageFeatures, save_captioner
from geovl.models.decoding import DecodingConfig
from geovl.models.device import resolve_precision
from geovl.models.factory import load_backbone
from geovl.training.captioner_config import CaptionerTrainConfig
from geovl.training.checkpoint import keep_best
from geovl.training.clip_model import lr_lambda
from geovl.training.config import config_to_dict
from geovl.training.data import BatchPlan, TrainingSet, mix_seed
from geovl.training.feature_cache import CACHE_FOLDER, FeatureCache, load_or_build_feature_cache
from geovl.training.runtime import RunSpec, Runtime, Stateful, TrainResult

__all__ = ["evaluate_captioner_figures", "train_captioner"]

logger = logging.getLogger(__name__)

TRAINED_BY = "geovl train captioner"
BEST = "best"


def train_captioner(config: CaptionerTrainConfig, *, resume: str = "auto", progress: bool = True,
                    stop_after: int | None = None) -> TrainResult:
    """Run (or resume) captioner training as configured.

    Args:
        config: the run (:class:`geovl.training.captioner_config.CaptionerTrainConfig`).
        resume: ``"auto"`` continues from ``<output>/checkpoints/latest``; ``"no"`` refuses a folder that holds
            checkpoints; or a checkpoint folder.
        progress: show progress bars (rank 0).
        stop_after: stop (without exporting) after this many optimizer steps of this call, as a crash would.

    Returns:
        The run folder, the exported captioner (``<output>/final``), the losses of this call and the evaluations.
    """
    config.validate()
    spec = RunSpec.for_config(config)
    losses: list[float] = []
    with Runtime(spec, resume=resume, progress=progress, stop_after=stop_after) as rt:
        job = _CaptionerJob(config, rt)
        rt.resume_state(job.decoder, job.stateful)
        job.prepare(progress)
        for index in rt.steps():
            loss = job.train_step(index)
            losses.append(loss)
            rt.advance(job.plan.per_step, loss=f"{loss:.3f}")
            if rt.should_log(rt.step):
                rt.log(rt.step, {"train/loss": loss, "train/lr": float(job.scheduler.get_last_lr()[0]),
                                 "train/samples_per_s": rt.samples_per_s(), "train/epoch": job.plan.epoch_of(index)})
            rt.maybe_eval(rt.step, job.evaluate)
            if rt.should_save(rt.step):
                rt.save(job.decoder, job.stateful)
        final = rt.on_main(job.finish) if rt.completed else None
    return TrainResult(output=spec.output, final=final, steps=rt.steps_done, losses=losses, evals=rt.evals)


class _CaptionerJob:
    """The decoder, its data and optimizer for one run."""

    def __init__(self, config: CaptionerTrainConfig, rt: Runtime) -> None:
        self.config, self.rt = config, rt
        self.dtype = resolve_precision("auto" if config.optim.precision == "auto" else config.optim.precision,
                                       rt.device)
        self.backbone: Backbone = load_backbone(config.model.backbone, device=rt.device, precision="fp32",
                                                optimize=False)
        self.data = TrainingSet(config.data, seed=config.run.seed)
        self.captions = {(s, i): self.data.captions_for(self.data.sample(s, i), s)
                         for s, src in enumerate(self.data.sources) for i in range(len(src.indices))}
        m = config.model
        self.vocab = WordVocab.build((c for caps in self.captions.values() for c in caps),
                                     min_count=m.vocab_min_count, max_size=m.vocab_max_size)
        self.extractor = PackedImageFeatures(self.backbone)
        probe = self._probe_features()
        self.decoder = CaptionDecoder(DecoderConfig(
            vocab_size=len(self.vocab), feature_dim=probe.shape[2], embed_dim=self.backbone.embed_dim,
            patches=probe.shape[1] - 1, width=m.width, layers=m.layers, heads=m.heads, mlp_ratio=m.mlp_ratio,
            dropout=m.dropout, max_length=m.max_length)).to(rt.device)
        self.forward: nn.Module = self.decoder
        self.plan = BatchPlan(self.data.epoch_size, config.data.batch_size, config.optim.grad_accum, rt.rank,
                              rt.world)
        o = config.optim
        decay = [p for n, p in self.decoder.named_parameters() if p.ndim >= 2 and "pos" not in n]
        rest = [p for n, p in self.decoder.named_parameters() if not (p.ndim >= 2 and "pos" not in n)]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                            {"params": rest, "weight_decay": 0.0}], lr=o.lr, betas=o.betas, eps=o.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config.optim))
        self.stateful: dict[str, Stateful] = {"optimizer": self.optimizer, "scheduler": self.scheduler}
        self.features: FeatureCache | None = None
        self._orders: dict[int, Any] = {}

    def _probe_features(self) -> torch.Tensor:
        size = self.backbone.image_size
        with torch.no_grad():
            return self.extractor(torch.zeros(1, 3, size, size, device=self.rt.device))

    def prepare(self, progress: bool) -> None:
        """Announce the run, wrap the decoder for DDP, build (or reuse) the image feature cache."""
        rt, config = self.rt, self.config
        if rt.main:
            logger.info("training a captioner on %s: %d decoder parameters, %d words; %s; %d steps per epoch",
                        config.model.backbone, sum(p.numel() for p in self.decoder.parameters()), len(self.vocab),
                        self.data.describe(), self.plan.steps_per_epoch)
        if rt.world > 1:
            device = rt.device
            self.forward = nn.parallel.DistributedDataParallel(
                self.decoder, device_ids=[device.index] if device.type == "cuda" else None)
        self.features = load_or_build_feature_cache(
            rt.spec.output / CACHE_FOLDER, self.data, self.extractor, views=config.data.cached_views,
            augment=config.data.augment, preprocess=self.backbone.preprocess, device=rt.device, dtype=self.dtype,
            workers=config.data.workers, progress=progress and rt.main, write=rt.main)
        self.decoder.train()

    def _order(self, epoch: int) -> Any:
        if epoch not in self._orders:
            self._orders = {epoch: self.data.epoch_order(epoch)}
        return self._orders[epoch]

    def batch(self, positions: list[int], epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and token ids of the samples at ``positions`` of ``epoch`` (deterministic)."""
        if self.features is None:
            raise RuntimeError("prepare() builds the feature cache before training")
        order = self._order(epoch)
        rows, texts = [], []
        for position in positions:
            gen = torch.Generator().manual_seed(mix_seed(self.data.seed, epoch, position))
            source, item = (int(v) for v in order[position % len(order)])
            captions = self.captions[(source, item)]
            texts.append(captions[int(torch.randint(len(captions), (1,), generator=gen))])
            view = int(torch.randint(self.features.views, (1,), generator=gen))
            rows.append(self.features.row(source, item, view))
        return torch.stack(rows), self.vocab.encode_batch(texts, self.config.model.max_length)

    def train_step(self, index: int) -> float:
        """One optimizer step (``grad_accum`` micro-batches); returns its mean loss."""
        device, micro = self.rt.device, self.config.optim.grad_accum
        epoch = self.plan.epoch_of(index)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for positions in self.plan.positions(index, index + 1):
            features, tokens = self.batch(positions, epoch)
            features, tokens = features.to(device), tokens.to(device)
            with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                logits = self.forward(features, tokens[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=PAD,
                                   label_smoothing=self.config.loss.label_smoothing)
            (loss / micro).backward()
            total += float(loss.detach()) / micro
        if self.config.optim.grad_clip:
            nn.utils.clip_grad_norm_(self.decoder.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return total

    def captioner(self) -> BackboneCaptioner:
        return BackboneCaptioner(self.backbone, self.decoder, self.vocab, name="trained captioner",
                                 metadata={"trained_by": TRAINED_BY})

    def evaluate(self) -> dict[str, float]:
        try:
            figures = evaluate_captioner_figures(self.captioner(), self.config)
        finally:
            self.decoder.train()
        self._keep_best(figures)
        return figures

    def _keep_best(self, figures: dict[str, float]) -> None:
        """Write ``<output>/best`` when the ``eval.select_by`` figure beats the best one written so far."""
        key = self.config.eval.select_by
        if key is None or not self.rt.main:
            return
        folder = self.rt.spec.output / BEST

        def export(selection: dict[str, Any]) -> None:
            meta = {"trained_by": TRAINED_BY, "steps": self.rt.step, "config_hash": self.rt.spec.config_hash,
                    "training": config_to_dict(self.config), "eval": figures, "selection": selection}
            save_captioner(self.captioner(), folder, metadata=meta, dtype=self._save_dtype())

        if keep_best(folder, CAPTIONER_CONFIG, figures, key, self.rt.step, export):
            logger.info("step %d: %s = %.2f, the best so far: captioner written to %s", self.rt.step, key,
                        figures[key], folder)

    def _save_dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.config.run.save_dtype]

    def finish(self) -> Path:
        """The final evaluation (when configured) and the export to ``<output>/final`` (rank 0)."""
        rt = self.rt
        figures = self.evaluate() if self.config.eval.datasets else {}
        if figures:
            rt.record_eval(rt.step, figures)
        meta = {"trained_by": TRAINED_BY, "steps": rt.state.step, "config_hash": rt.spec.config_hash,
                "training": config_to_dict(self.config), "eval": figures}
        return save_captioner(self.captioner(), rt.spec.output / "final", metadata=meta, dtype=self._save_dtype())


def evaluate_captioner_figures(captioner: BackboneCaptioner, config: CaptionerTrainConfig) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D (percent) per evaluation dataset, keyed ``<dataset>/<metric>``."""
    from geovl.eval.caption_protocol import evaluate_captioner

    ev = config.eval
    decoding = DecodingConfig(method=ev.method, beam_size=ev.beam_size)
    figures: dict[str, float] = {}
    captioner.decoder.eval()
    for item in ev.datasets:
        result = evaluate_captioner(captioner, item.path, split=item.split, limit=item.limit, decoding=decoding,
                                    batch_size=ev.batch_size, holdout_fraction=item.holdout_fraction)
        path = Path(item.path)
        split = item.split if isinstance(item.split, str) else "+".join(item.split)
        name = item.name or f"{path.parent.name if path.suffix else path.name}-{split}"
        for metric, value in result.scores.as_percent().items():
            if value is not None and metric in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D"):
                figures[f"{name}/{metric}"] = float(value)
    return figures
