"""Training a change captioner on a frozen backbone (``geovl train change-captioner``).

Rules:

* the backbone is frozen: both dates' packed features are cached once per pair (A) and per later-date view (B)
  (:mod:`geovl.training.change_data`); only the :class:`~geovl.models.change_net.ChangeNet` trains;
* the loss is caption cross-entropy (the decoder sees the *true* verdict token, so at inference the head's verdict
  decides between a change sentence and the no-change sentence) + ``change_weight`` x change / no-change BCE +
  ``mask_weight`` x per-cell mask BCE + ``corpus_weight`` x a text-only language-model loss on the caption corpus
  (LEVIR-CC's sentences: the decoder learns their style and words without their images);
* the word vocabulary is built from the training pairs' captions and the corpus, so the same config always gives
  the same vocabulary;
* step ``s`` draws its pairs, views, captions and corpus sentences from a generator seeded by ``(seed, s)``, so a
  resumed run repeats exactly what an uninterrupted one does;
* held-out pairs (other seeds; pasted pairs from another split) are scored every ``eval.every_steps`` and at the end:
  verdict accuracy / balanced accuracy and BLEU-4 / CIDEr-D of the captions; ``eval.threshold: calibrate`` sets the
  exported model's threshold to the one that maximises balanced accuracy on them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geovl.data.karpathy import parse_karpathy_json
from geovl.models.backbone import Backbone
from geovl.models.caption_decoder import DecoderConfig
from geovl.models.caption_vocab import PAD, WordVocab
from geovl.models.captioner import PackedImageFeatures
from geovl.models.change_captioner import CHANGE_CAPTIONER_CONFIG, ChangeCaptioner, save_change_captioner
from geovl.models.change_net import ChangeNet, ChangeNetConfig
from geovl.models.decoding import DecodingConfig
from geovl.models.device import resolve_precision
from geovl.models.factory import load_backbone
from geovl.models.record import model_record
from geovl.training.change_captioner_config import ChangeTrainConfig
from geovl.training.change_data import PairCache, build_pair_cache, cache_key, plan_pairs
from geovl.training.checkpoint import keep_best
from geovl.training.clip_model import lr_lambda
from geovl.training.config import config_to_dict
from geovl.training.data import mix_seed
from geovl.training.runtime import RunSpec, Runtime, Stateful, TrainResult

__all__ = ["best_threshold", "train_change_captioner"]

logger = logging.getLogger(__name__)

TRAINED_BY = "geovl train change-captioner"
BEST = "best"


def train_change_captioner(config: ChangeTrainConfig, *, resume: str = "auto", progress: bool = True,
                           stop_after: int | None = None) -> TrainResult:
    """Run (or resume) change-captioner training as configured (arguments as
    :func:`geovl.training.captioner.train_captioner`)."""
    config.validate()
    spec = RunSpec.for_config(config)
    losses: list[float] = []
    with Runtime(spec, resume=resume, progress=progress, stop_after=stop_after) as rt:
        if rt.world > 1:
            raise ValueError("change-captioner training runs in one process (the network is small and its inputs "
                             "are cached); start it without torchrun")
        job = _ChangeJob(config, rt)
        job.prepare(progress)  # the vocabulary (and so the network's shape) comes from the cached pairs
        rt.resume_state(job.net, job.stateful)
        job.net.train()
        for index in rt.steps():
            loss, parts = job.train_step(index)
            losses.append(loss)
            rt.advance(config.data.batch_size, loss=f"{loss:.3f}")
            if rt.should_log(rt.step):
                rt.log(rt.step, {"train/loss": loss, **parts, "train/lr": float(job.scheduler.get_last_lr()[0]),
                                 "train/samples_per_s": rt.samples_per_s()})
            rt.maybe_eval(rt.step, job.evaluate)
            if rt.should_save(rt.step):
                rt.save(job.net, job.stateful)
        final = rt.on_main(job.finish) if rt.completed else None
    return TrainResult(output=spec.output, final=final, steps=rt.steps_done, losses=losses, evals=rt.evals)


def best_threshold(probabilities: np.ndarray, changed: np.ndarray) -> float:
    """The threshold (midpoint between neighbouring probabilities) that maximises balanced accuracy."""
    p = np.sort(np.unique(np.concatenate([probabilities, [0.0, 1.0]])))
    candidates = np.concatenate([[0.5], (p[1:] + p[:-1]) / 2])
    best, best_score = 0.5, -1.0
    for t in candidates:
        pred = probabilities >= t
        tpr = float(pred[changed].mean()) if changed.any() else 1.0
        tnr = float((~pred[~changed]).mean()) if (~changed).any() else 1.0
        score = (tpr + tnr) / 2
        if score > best_score + 1e-9:
            best, best_score = float(t), score
    return best


class _ChangeJob:
    """The network, its cached pairs and optimizer for one run."""

    def __init__(self, config: ChangeTrainConfig, rt: Runtime) -> None:
        self.config, self.rt = config, rt
        self.dtype = resolve_precision(config.optim.precision, rt.device)
        m, d = config.model, config.data
        self.backbone: Backbone = load_backbone(m.backbone, device=rt.device, precision="fp32", optimize=False)
        self.extractor = PackedImageFeatures(self.backbone)
        with torch.no_grad():
            probe = self.backbone.towers.image_features(torch.zeros(1, 3, m.image_size, m.image_size,
                                                                    device=rt.device))
        grid = probe.grid
        self.specs = plan_pairs(d, rendered=d.rendered.count, pasted=d.pasted.count)
        ev = config.eval
        self.val_specs = plan_pairs(d, rendered=ev.rendered, pasted=ev.pasted, seed_offset=ev.seed * 1000,
                                    pasted_split=ev.pasted_split)
        self.corpus = self._corpus()
        self.grid = (int(grid[0]), int(grid[1]))
        self.shape = (grid[0] * grid[1] + 1, int(probe.patches.shape[-1]))
        self.train_cache: PairCache | None = None
        self.val_cache: PairCache | None = None
        self.vocab: WordVocab | None = None
        self.stateful: dict[str, Stateful] = {}

    def _corpus(self) -> list[str]:
        d = self.config.data
        if not d.corpus:
            return []
        path = Path(d.corpus)
        entries = parse_karpathy_json(path / "dataset.json" if path.is_dir() else path, "a caption corpus")
        return [c for e in entries if e.split == d.corpus_split for c in e.captions]

    def _network(self, vocab: WordVocab) -> ChangeNet:
        m = self.config.model
        decoder = DecoderConfig(vocab_size=len(vocab), feature_dim=self.shape[1], embed_dim=self.backbone.embed_dim,
                                patches=self.shape[0] - 1, width=m.width, layers=m.layers, heads=m.heads,
                                mlp_ratio=m.mlp_ratio, dropout=m.dropout, max_length=m.max_length, gated=m.gated)
        cfg = ChangeNetConfig(decoder=decoder, grid=self.grid, image_size=m.image_size,
                              difference_attention=m.difference_attention, fusion_layers=m.fusion_layers,
                              semantic_classes=m.semantic_classes, verdict_token=m.verdict_token)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.run.seed)
            return ChangeNet(cfg).to(self.rt.device)

    def _cache(self, name: str, specs: list[Any], views: int, progress: bool) -> PairCache:
        m, d = self.config.model, self.config.data
        sha = model_record(self.backbone).get("checkpoint_sha256")
        root = Path(d.cache_dir) if d.cache_dir else self.rt.spec.output / "pair-cache"
        return build_pair_cache(root / name, specs, d, extractor=self.extractor,
                                normalize=self.backbone.normalize_uint8, size=m.image_size, views=views,
                                shape=self.shape, grid=self.grid, key=cache_key(specs, d, m.image_size, views, sha),
                                device=self.rt.device, dtype=self.dtype, workers=d.workers, progress=progress)

    def prepare(self, progress: bool) -> None:
        """Cache both pair sets, build the vocabulary, the network and its optimizer."""
        rt, config = self.rt, self.config
        self.train_cache = self._cache("train", self.specs, config.data.views, progress)
        if self.val_specs:
            self.val_cache = self._cache("val", self.val_specs, 1, progress)
        captions = [c for caps in self.train_cache.captions for c in caps] + self.corpus
        self.vocab = WordVocab.build(captions, min_count=config.model.vocab_min_count)
        self.net = self._network(self.vocab)
        o = config.optim
        decay = [p for n, p in self.net.named_parameters() if p.ndim >= 2 and "pos" not in n]
        rest = [p for n, p in self.net.named_parameters() if not (p.ndim >= 2 and "pos" not in n)]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                            {"params": rest, "weight_decay": 0.0}], lr=o.lr, betas=o.betas, eps=o.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(o))
        self.stateful.update({"optimizer": self.optimizer, "scheduler": self.scheduler})
        if rt.main:
            counts = np.bincount(self.train_cache.changed.astype(int), minlength=2)
            logger.info("training a change captioner on %s: %d parameters, %d words, %d pairs (%d changed, %d "
                        "unchanged) x %d views, %d corpus sentences", config.model.backbone,
                        sum(p.numel() for p in self.net.parameters()), len(self.vocab), len(self.train_cache),
                        counts[1], counts[0], self.train_cache.views, len(self.corpus))

    def train_step(self, index: int) -> tuple[float, dict[str, float]]:
        """One optimizer step; returns its loss and the loss parts."""
        cache, vocab = self.train_cache, self.vocab
        if cache is None or vocab is None:
            raise RuntimeError("prepare() builds the caches before training")
        cfg, device = self.config, self.rt.device
        gen = np.random.default_rng(mix_seed(cfg.run.seed, index, 0))
        rows = np.sort(gen.choice(len(cache), size=min(cfg.data.batch_size, len(cache)), replace=False))
        views = gen.integers(cache.views, size=len(rows))
        fa = torch.from_numpy(np.asarray(cache.a[rows], np.float32)).to(device)
        fb = torch.from_numpy(np.asarray(cache.b[rows, views], np.float32)).to(device)
        cells = torch.from_numpy(np.asarray(cache.cells[rows], np.float32)).to(device)
        changed = torch.from_numpy(cache.changed[rows]).to(device)
        texts = [cache.captions[r][int(gen.integers(len(cache.captions[r])))] for r in rows]
        tokens = vocab.encode_batch(texts, cfg.model.max_length).to(device)
        self.optimizer.zero_grad(set_to_none=True)
        loss_cfg = cfg.loss
        with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.net(fa, fb)
            logits = self.net.decoder.decode(self.net.with_verdict(out.memory, changed), tokens[:, :-1])
            corpus_logits = None
            if self.corpus and loss_cfg.corpus_weight > 0:
                sentences = [self.corpus[int(i)] for i in gen.integers(len(self.corpus), size=len(rows))]
                corpus_tokens = vocab.encode_batch(sentences, cfg.model.max_length).to(device)
                corpus_logits = self.net.decoder.decode(None, corpus_tokens[:, :-1])
        parts = {
            "caption": F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=PAD,
                                       label_smoothing=loss_cfg.label_smoothing),
            "change": F.binary_cross_entropy_with_logits(out.change_logit.float(), changed.float()),
            "mask": F.binary_cross_entropy_with_logits(out.mask_logits.float(),
                                                       (cells >= loss_cfg.mask_cell_fraction).float()),
        }
        loss = parts["caption"] + loss_cfg.change_weight * parts["change"] + loss_cfg.mask_weight * parts["mask"]
        if corpus_logits is not None:
            parts["corpus"] = F.cross_entropy(corpus_logits.float().flatten(0, 1), corpus_tokens[:, 1:].flatten(),
                                              ignore_index=PAD, label_smoothing=loss_cfg.label_smoothing)
            loss = loss + loss_cfg.corpus_weight * parts["corpus"]
        loss.backward()
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(self.net.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach()), {f"train/{k}_loss": float(v.detach()) for k, v in parts.items()}

    def model(self, threshold: float = 0.5) -> ChangeCaptioner:
        if self.vocab is None:
            raise RuntimeError("prepare() builds the vocabulary first")
        return ChangeCaptioner(self.backbone, self.net, self.vocab, threshold=threshold,
                               name="trained change captioner", metadata={"trained_by": TRAINED_BY})

    def evaluate(self) -> dict[str, float]:
        try:
            figures, _ = self._validation()
        finally:
            self.net.train()
        self._keep_best(figures)
        return figures

    def _validation(self) -> tuple[dict[str, float], float]:
        """Figures on the held-out pairs, and the threshold to export."""
        from geovl.eval.captioning import change_caption_metrics

        cache = self.val_cache
        ev = self.config.eval
        if cache is None or not len(cache):
            return {}, float(ev.threshold) if ev.threshold != "calibrate" else 0.5
        self.net.eval()
        device = self.rt.device
        probs: list[np.ndarray] = []
        for start in range(0, len(cache), ev.batch_size):
            fa = torch.from_numpy(np.asarray(cache.a[start: start + ev.batch_size], np.float32)).to(device)
            fb = torch.from_numpy(np.asarray(cache.b[start: start + ev.batch_size, 0], np.float32)).to(device)
            with torch.no_grad():
                probs.append(torch.sigmoid(self.net(fa, fb).change_logit.float()).cpu().numpy())
        prob = np.concatenate(probs)
        threshold = best_threshold(prob, cache.changed) if ev.threshold == "calibrate" else float(ev.threshold)
        model = self.model(threshold)
        decoding = DecodingConfig(method=ev.method, beam_size=ev.beam_size)
        candidates: dict[str, str] = {}
        for start in range(0, len(cache), ev.batch_size):
            fa = torch.from_numpy(np.asarray(cache.a[start: start + ev.batch_size], np.float32))
            fb = torch.from_numpy(np.asarray(cache.b[start: start + ev.batch_size, 0], np.float32))
            for i, result in enumerate(model.describe_features(fa, fb, decoding)):
                candidates[str(start + i)] = result.caption
        references = {str(i): caps for i, caps in enumerate(cache.captions)}
        flags = {str(i): bool(f) for i, f in enumerate(cache.changed)}
        scores = change_caption_metrics(references, candidates, changed=flags, meteor=False)
        pred = prob >= threshold
        changed = cache.changed
        figures = {
            "val/accuracy": 100.0 * float((pred == changed).mean()),
            "val/balanced_accuracy": 50.0 * (float(pred[changed].mean()) + float((~pred[~changed]).mean())),
            "val/threshold": threshold,
        }
        for metric, value in scores.overall.as_percent().items():
            if value is not None and metric in ("BLEU-4", "CIDEr-D", "ROUGE-L"):
                figures[f"val/{metric}"] = float(value)
        return figures, threshold

    def _keep_best(self, figures: dict[str, float]) -> None:
        key = self.config.eval.select_by
        if key is None or not self.rt.main:
            return
        folder = self.rt.spec.output / BEST
        if keep_best(folder, CHANGE_CAPTIONER_CONFIG, figures, key, self.rt.step,
                     lambda selection: self._export(folder, figures, selection)):
            logger.info("step %d: %s = %.2f, the best so far: written to %s", self.rt.step, key, figures[key], folder)

    def _export(self, folder: Path, figures: dict[str, float], selection: dict[str, Any] | None = None) -> Path:
        threshold = figures.get("val/threshold", 0.5 if self.config.eval.threshold == "calibrate"
                                else float(self.config.eval.threshold))
        meta: dict[str, Any] = {"trained_by": TRAINED_BY, "steps": self.rt.step,
                                "config_hash": self.rt.spec.config_hash, "training": config_to_dict(self.config),
                                "eval": figures}
        if selection:
            meta["selection"] = selection
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.config.run.save_dtype]
        return save_change_captioner(self.model(threshold), folder, metadata=meta, dtype=dtype)

    def finish(self) -> Path:
        """The final evaluation and the export to ``<output>/final``."""
        figures = self.evaluate() if self.val_cache is not None else {}
        if figures:
            self.rt.record_eval(self.rt.step, figures)
        return self._export(self.rt.spec.output / "final", figures)

