"""The change-captioning protocol: held-out synthetic pairs (captions + verdicts, against two baselines) and real
pairs with change masks (verdicts and heat maps).

Rules:

* **Held-out synthetic pairs** are pairs ``0..n-1`` of the synthetic change dataset :data:`HELDOUT_SEED` (9001).
  Training uses small dataset seeds (0 and the few after it); the seed keys every pair's random stream
  (:func:`geovl.data.synthetic.config.tile_rng`), so a test pair is never a training pair. A pair is changed
  when its change type is not ``"none"``; its references are its generated captions. The scenes should be drawn
  like the model's training scenes (change types, gsd, unchanged share, size): :func:`training_scene` reads them
  from a model trained by geovl.
* **Captions** are scored with :func:`geovl.eval.captioning.change_caption_metrics` (BLEU-1..4, METEOR, ROUGE-L,
  CIDEr-D, S*m) on all, changed and unchanged pairs, the subsets given by the pairs' own change flags.
* **Verdicts** are the change head's (:attr:`ChangeResult.changed <geovl.models.change_captioner.ChangeResult>`),
  never read from the caption text: accuracy, balanced accuracy, precision / recall / F1 of "changed" and the
  confusion counts (:mod:`geovl.eval.change_scores`).
* **Baselines**, scored in the same run on the same pairs: "always no-change" (every caption
  ``NO_CHANGE_CAPTION``, every verdict unchanged) and "most frequent change caption" (the most frequent
  normalised caption among the changed pairs of a *training* set, given to every pair, every verdict changed).
  The training captions are the caller's, or those of training dataset :data:`TRAINING_SEED`; never the test
  pairs'. Verdict-only sets also get "always changed".
* **Real pairs with masks** (LEVIR-CD layout: ``A/`` before, ``B/`` after, ``label/`` masks, matched by file
  stem): a label pixel is changed when it is > 0 in 8-bit grey; a pair is changed when its changed fraction is
  above ``min_fraction``. **Windows** are cut identically from A, B and the label on a ``stride`` grid (the last
  row / column of windows is aligned to the far edge): no changed pixel -> unchanged, a changed fraction
  >= ``min_changed`` -> changed, anything in between is dropped as ambiguous. The model's transform resizes
  every window to its own input size.
* **Heat-map agreement** is the AUROC of the heat map's per-cell probability against "the cell holds a changed
  pixel", pooled over every cell of every masked pair (:func:`geovl.eval.change_scores.heat_agreement`: the
  mask is cut to the centred square the model's transform keeps, then split into the heat map's grid). The
  AUROC of the pairs' P(changed) against their truth is reported too.
* Verdict-only runs decode one greedy token per changed pair (captions are not scored there).
* A pair that cannot be read is an error: a benchmark set must be complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from geovl.data.change_sentences import is_no_change_sentence, normalise_sentence
from geovl.data.sources import list_images
from geovl.data.synthetic.change import generate_change_pair, plan_change_pair
from geovl.data.synthetic.config import SceneConfig
from geovl.eval.caption_baselines import most_frequent_caption
from geovl.eval.caption_scores import ChangeCaptionScores
from geovl.eval.captioning import TokenizerChoice, change_caption_metrics
from geovl.eval.change_scores import VerdictScores, auroc, heat_agreement, verdict_scores
from geovl.io.images import ImageSource
from geovl.io.jsonable import to_jsonable
from geovl.io.loading import load_image
from geovl.models.change_captioner import NO_CHANGE_CAPTION, ChangeCaptionModel, ChangeResult
from geovl.models.decoding import DecodingConfig
from geovl.tasks.change_captioning import ChangeCaptioningPipeline

__all__ = [
    "HELDOUT_SEED",
    "TRAINING_SEED",
    "VERDICT_DECODING",
    "ChangeCaptionReport",
    "ChangePair",
    "MethodScores",
    "VerdictReport",
    "evaluate_change_captioner",
    "evaluate_change_verdicts",
    "mask_pairs",
    "mask_windows",
    "most_frequent_change_caption",
    "synthetic_change_set",
    "training_change_captions",
    "training_scene",
]

#: Dataset seed of the held-out synthetic change pairs (training uses 0 and the few seeds after it).
HELDOUT_SEED = 9001
#: Dataset seed whose captions the "most frequent change caption" baseline is drawn from by default.
TRAINING_SEED = 0
#: What verdict-only runs decode for a changed pair: one greedy token (captions are not scored there).
VERDICT_DECODING = DecodingConfig(method="greedy", max_length=1, min_length=0)
#: Below this many pairs the synthetic set is generated in this process.
_PARALLEL_MIN = 32

R = TypeVar("R")


@dataclass
class ChangePair:
    """One evaluation pair.

    Attributes:
        id: unique within its set.
        before, after: the two dates (a path or a uint8 ``(H, W, 3)`` array).
        changed: the ground truth.
        references: reference captions (synthetic pairs; empty for mask pairs).
        mask: bool ``(H, W)`` changed pixels over the after image, when known.
        change_type: the synthetic change type (``""`` for real pairs).
    """

    id: str
    before: ImageSource
    after: ImageSource
    changed: bool
    references: tuple[str, ...] = ()
    mask: np.ndarray | None = field(default=None, repr=False)
    change_type: str = ""


# ------------------------------------------------------------------------------------------- synthetic pairs


def _parallel_map(fn: Callable[..., R], args: Sequence[tuple[Any, ...]], workers: int) -> list[R]:
    """``[fn(*a) for a in args]``, in ``workers`` processes (the platform's default start method, as for torch's
    DataLoader) when ``workers > 1``."""
    if workers <= 1:
        return [fn(*a) for a in args]
    columns = list(zip(*args, strict=True))
    chunk = max(1, len(args) // (4 * workers))
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(fn, *columns, chunksize=chunk))


def _workers(n: int, workers: int | None) -> int:
    if workers is not None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        return workers
    return 0 if n < _PARALLEL_MIN else min(os.cpu_count() or 1, 8)


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _scene_config(size: int | None, config: SceneConfig | None) -> SceneConfig:
    if config is not None and size is not None:
        raise ValueError("pass either size or config (whose size is used), not both")
    return config if config is not None else SceneConfig(size=256 if size is None else size)


def training_scene(metadata: Mapping[str, Any]) -> tuple[SceneConfig, int] | None:
    """The scene config and dataset seed of the rendered pairs a change captioner was trained on, read from its
    folder's metadata (``training.data.rendered`` and ``training.model.image_size``, as ``geovl train
    change-captioner`` writes them); ``None`` when the metadata holds no such section or no rendered pairs.

    Raises:
        ValueError: a section that does not describe a scene config.
    """
    training = metadata.get("training")
    if not isinstance(training, Mapping):
        return None
    rendered = training.get("data", {}).get("rendered")
    if not isinstance(rendered, Mapping) or not rendered.get("count"):
        return None
    try:
        low, high = rendered["gsd"]
        config = SceneConfig(size=int(training.get("model", {}).get("image_size", 256)), gsd=(float(low), float(high)),
                             change_types=tuple(rendered["change_types"]),
                             no_change_fraction=rendered["no_change_fraction"])
        return config, int(rendered["seed"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"the model's training.data.rendered metadata is not a scene config: {exc!r}") from exc


def synthetic_change_set(seed: int = HELDOUT_SEED, n: int = 400, size: int | None = None, *,
                         config: SceneConfig | None = None, workers: int | None = None) -> list[ChangePair]:
    """Pairs ``0..n-1`` of synthetic change dataset ``seed`` (default the held-out :data:`HELDOUT_SEED`).

    Args:
        seed: dataset seed; keep it away from the training seeds.
        n: number of pairs (about half unchanged with the default config).
        size: tile side in pixels (default 256), or give ``config`` instead.
        config: the generator's :class:`~geovl.data.synthetic.config.SceneConfig`.
        workers: generator processes (default: this process below 32 pairs, else one per core up to 8).

    Returns:
        :class:`ChangePair` s with ids ``"s<seed>-<index>"``, uint8 arrays, the 5 captions as references,
        the change flag, mask and type.
    """
    _check_count("n", n)
    cfg = _scene_config(size, config)
    generated = _parallel_map(generate_change_pair, [(seed, i, cfg) for i in range(n)], _workers(n, workers))
    return [ChangePair(f"s{seed}-{i:05d}", p.image_a, p.image_b, p.change_type != "none", tuple(p.captions),
                       p.mask.astype(bool), p.change_type) for i, p in enumerate(generated)]


def _planned_captions(seed: int, index: int, config: SceneConfig) -> tuple[str, list[str]]:
    plan = plan_change_pair(seed, index, config)
    return plan.change_type, plan.captions


def training_change_captions(seed: int = TRAINING_SEED, n: int = 1000, size: int | None = None, *,
                             config: SceneConfig | None = None, workers: int | None = None) -> list[str]:
    """The captions of the changed pairs among pairs ``0..n-1`` of synthetic training dataset ``seed`` (planned,
    not rendered: a few ms a pair)."""
    _check_count("n", n)
    cfg = _scene_config(size, config)
    planned = _parallel_map(_planned_captions, [(seed, i, cfg) for i in range(n)], _workers(n // 4, workers))
    return [c for change, captions in planned if change != "none" for c in captions]


def most_frequent_change_caption(captions: Iterable[str]) -> str:
    """The most frequent normalised caption that is not a no-change sentence (ties: the first seen).

    Raises:
        ValueError: no change caption among ``captions``.
    """
    texts = [normalise_sentence(c) for c in captions]
    texts = [t for t in texts if t and not is_no_change_sentence(t)]
    if not texts:
        raise ValueError("no change captions among the training captions")
    return most_frequent_caption(texts)


# ------------------------------------------------------------------------------------------- running the model


def _describe(model: ChangeCaptionModel, pairs: Sequence[ChangePair], decoding: DecodingConfig | None,
              threshold: float | None, batch_size: int, workers: int | None) -> tuple[list[ChangeResult], float]:
    """The model's results for every pair, in order, and the pipeline's pairs per second."""
    if not pairs:
        raise ValueError("no pairs to evaluate")
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        raise ValueError("pair ids must be unique")
    pipeline = ChangeCaptioningPipeline(model, decoding=decoding, threshold=threshold, batch_size=batch_size,
                                        workers=workers)
    out = pipeline([p.before for p in pairs], [p.after for p in pairs])
    if out.failures:
        pos, why = out.failures[0]
        raise ValueError(f"{len(out.failures)} evaluation pair(s) could not be read, e.g. {ids[pos]}: {why}")
    return out.results, out.pairs_per_second


def _threshold(model: ChangeCaptionModel, threshold: float | None) -> float:
    return float(model.threshold if threshold is None else threshold)


def _heat(pairs: Sequence[ChangePair], results: Sequence[ChangeResult]) -> tuple[float | None, int, int]:
    """:func:`~geovl.eval.change_scores.heat_agreement` over the pairs that have a mask."""
    masked = [(r.heatmap, p.mask) for p, r in zip(pairs, results, strict=True) if p.mask is not None]
    return heat_agreement([h for h, _ in masked], [m for _, m in masked])


# ------------------------------------------------------------------------------------------- synthetic protocol


@dataclass
class MethodScores:
    """One method's figures on one pair set: caption metrics (``None`` for verdict-only sets) and verdicts."""

    name: str
    verdicts: VerdictScores
    captions: ChangeCaptionScores | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "verdicts": self.verdicts.to_dict(),
                "captions": None if self.captions is None else self.captions.to_dict()}


@dataclass
class ChangeCaptionReport:
    """:func:`evaluate_change_captioner`'s result.

    Attributes:
        methods: the model (first), "always no-change" and "most frequent change caption".
        frequent_caption: the latter baseline's caption.
        predictions: per pair: ``id``, ``changed`` (truth), the model's ``caption``, ``verdict``, ``probability``.
        probability_auroc: AUROC of P(changed) against the truth (``None`` with one class only).
        heat_auroc: the heat maps' agreement with the pairs' masks (module docstring; ``None`` without masks).
        threshold: the verdict threshold used.
        pairs_per_second: the pipeline's throughput (decode + model + captions).
    """

    methods: list[MethodScores]
    frequent_caption: str
    predictions: list[dict[str, Any]]
    probability_auroc: float | None
    heat_auroc: float | None
    threshold: float
    pairs_per_second: float

    def method(self, name: str) -> MethodScores:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(f"no method {name!r}; have {[m.name for m in self.methods]}")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"methods": [m.to_dict() for m in self.methods], "frequent_caption": self.frequent_caption,
                            "probability_auroc": self.probability_auroc, "heat_auroc": self.heat_auroc,
                            "threshold": self.threshold, "pairs_per_second": self.pairs_per_second,
                            "predictions": self.predictions})


def _caption_scores(pairs: Sequence[ChangePair], captions: Mapping[str, str], meteor: bool,
                    tokenizer: TokenizerChoice) -> ChangeCaptionScores:
    return change_caption_metrics({p.id: list(p.references) for p in pairs}, captions,
                                  changed={p.id: p.changed for p in pairs}, meteor=meteor, tokenizer=tokenizer)


def evaluate_change_captioner(model: ChangeCaptionModel, pairs: Sequence[ChangePair],
                              decoding: DecodingConfig | None = None, threshold: float | None = None, *,
                              batch_size: int = 16, training_captions: Iterable[str] | None = None,
                              meteor: bool = True, tokenizer: TokenizerChoice = "auto",
                              workers: int | None = None) -> ChangeCaptionReport:
    """Describe ``pairs`` with ``model`` and score captions and verdicts next to the two baselines.

    Args:
        model: a change captioner.
        pairs: pairs with references (:func:`synthetic_change_set`).
        decoding: the decoding of the captions (default :class:`~geovl.models.decoding.DecodingConfig`).
        threshold: the verdict threshold (default the model's).
        batch_size, workers: as for :class:`~geovl.tasks.change_captioning.ChangeCaptioningPipeline`.
        training_captions: captions of training pairs for the "most frequent change caption" baseline (default
            :func:`training_change_captions`); never the test pairs'.
        meteor, tokenizer: as for :func:`~geovl.eval.captioning.change_caption_metrics`.

    Raises:
        ValueError: a pair without references, duplicate ids, an unreadable pair, no change caption in training.
    """
    missing = [p.id for p in pairs if not p.references]
    if missing:
        raise ValueError(f"{len(missing)} pair(s) have no reference captions, e.g. {missing[0]}")
    frequent = most_frequent_change_caption(training_change_captions() if training_captions is None
                                            else training_captions)
    results, speed = _describe(model, pairs, decoding, threshold, batch_size, workers)
    truth = [p.changed for p in pairs]
    ids = [p.id for p in pairs]
    methods = [
        MethodScores("model", verdict_scores(truth, [r.changed for r in results]),
                     _caption_scores(pairs, {i: r.caption for i, r in zip(ids, results, strict=True)}, meteor,
                                     tokenizer)),
        MethodScores("always no-change", verdict_scores(truth, [False] * len(pairs)),
                     _caption_scores(pairs, dict.fromkeys(ids, NO_CHANGE_CAPTION), meteor, tokenizer)),
        MethodScores("most frequent change caption", verdict_scores(truth, [True] * len(pairs)),
                     _caption_scores(pairs, dict.fromkeys(ids, frequent), meteor, tokenizer)),
    ]
    predictions = [{"id": p.id, "changed": p.changed, "caption": r.caption, "verdict": r.changed,
                    "probability": r.probability} for p, r in zip(pairs, results, strict=True)]
    return ChangeCaptionReport(methods, frequent, predictions, auroc([r.probability for r in results], truth),
                               _heat(pairs, results)[0], _threshold(model, threshold), speed)


# ------------------------------------------------------------------------------------------- pairs with masks


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 0


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.height, im.width


def _mask_files(folder: str | os.PathLike[str]) -> list[tuple[str, Path, Path, Path]]:
    """``(stem, A path, B path, label path)`` for every pair of a LEVIR-CD-style folder, in name order."""
    root = Path(folder)
    dirs = {d: root / d for d in ("A", "B", "label")}
    absent = [d for d, p in dirs.items() if not p.is_dir()]
    if absent:
        raise ValueError(f"{root}: not a LEVIR-CD-style folder (no {', '.join(absent)}/ beside A/, B/, label/)")
    found = {d: {p.stem: p for p in list_images([p])} for d, p in dirs.items()}
    if not found["A"]:
        raise ValueError(f"{root}/A holds no images")
    for d in ("B", "label"):
        missing = sorted(set(found["A"]) - set(found[d]))
        if missing:
            raise ValueError(f"{root}: {len(missing)} pair(s) have no {d}/ file, e.g. {missing[0]}")
    return [(s, found["A"][s], found["B"][s], found["label"][s]) for s in sorted(found["A"])]


def mask_pairs(folder: str | os.PathLike[str], min_fraction: float = 0.0) -> list[ChangePair]:
    """The pairs of a LEVIR-CD-style folder, changed when their mask's changed fraction is above ``min_fraction``.

    Raises:
        ValueError: not such a folder, a pair without B/ or label/ file, a label of another size than its image,
            ``min_fraction`` outside [0, 1).
    """
    if not 0.0 <= min_fraction < 1.0:
        raise ValueError(f"min_fraction must be in [0, 1), got {min_fraction}")
    pairs = []
    for stem, a, b, label in _mask_files(folder):
        mask = _read_mask(label)
        size = _image_size(b)
        if size != mask.shape:
            raise ValueError(f"{label}: a mask of {mask.shape[1]}x{mask.shape[0]} for an image of {size[1]}x{size[0]}")
        pairs.append(ChangePair(stem, str(a), str(b), float(mask.mean()) > min_fraction, mask=mask))
    return pairs


def _offsets(length: int, window: int, stride: int) -> list[int]:
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def mask_windows(folder: str | os.PathLike[str], window: int = 128, stride: int = 64,
                 min_changed: float = 0.02) -> list[ChangePair]:
    """``window`` x ``window`` sub-pairs of every pair of a LEVIR-CD-style folder (see the module docstring), ids
    ``"<stem>@<row>,<col>"``, uint8 arrays.

    Raises:
        ValueError: as :func:`mask_pairs`; a window larger than an image; ``stride < 1``; ``min_changed`` outside
            (0, 1].
    """
    _check_count("window", window)
    _check_count("stride", stride)
    if not 0.0 < min_changed <= 1.0:
        raise ValueError(f"min_changed must be in (0, 1], got {min_changed}")
    out = []
    for stem, a, b, label in _mask_files(folder):
        before, after = np.asarray(load_image(a)), np.asarray(load_image(b))
        mask = _read_mask(label)
        if not before.shape[:2] == after.shape[:2] == mask.shape:
            raise ValueError(f"{stem}: A, B and label sizes differ ({before.shape[:2]}, {after.shape[:2]}, "
                             f"{mask.shape})")
        if window > min(mask.shape):
            raise ValueError(f"{stem}: window {window} is larger than the image ({mask.shape[1]}x{mask.shape[0]})")
        for y in _offsets(mask.shape[0], window, stride):
            for x in _offsets(mask.shape[1], window, stride):
                cut = (slice(y, y + window), slice(x, x + window))
                fraction = float(mask[cut].mean())
                if 0.0 < fraction < min_changed:
                    continue
                out.append(ChangePair(f"{stem}@{y},{x}", np.ascontiguousarray(before[cut]),
                                      np.ascontiguousarray(after[cut]), fraction > 0.0, mask=mask[cut].copy()))
    return out


@dataclass
class VerdictReport:
    """:func:`evaluate_change_verdicts`'s result.

    Attributes:
        methods: the model (first), "always no-change" and "always changed".
        probabilities: pair id -> the model's P(changed).
        probability_auroc: AUROC of P(changed) against the truth (``None`` with one class only).
        heat_auroc, heat_cells, heat_changed_cells: the heat maps' agreement with the masks (module docstring).
        threshold: the verdict threshold used.
        pairs_per_second: the pipeline's throughput (decode + model, one decoder step per changed pair).
    """

    methods: list[MethodScores]
    probabilities: dict[str, float]
    probability_auroc: float | None
    heat_auroc: float | None
    heat_cells: int
    heat_changed_cells: int
    threshold: float
    pairs_per_second: float

    @property
    def model(self) -> VerdictScores:
        return self.methods[0].verdicts

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"methods": [m.to_dict() for m in self.methods], "probability_auroc": self.probability_auroc,
                            "heat_auroc": self.heat_auroc, "heat_cells": self.heat_cells,
                            "heat_changed_cells": self.heat_changed_cells, "threshold": self.threshold,
                            "pairs_per_second": self.pairs_per_second, "probabilities": self.probabilities})


def evaluate_change_verdicts(model: ChangeCaptionModel, pairs: Sequence[ChangePair], threshold: float | None = None,
                             *, batch_size: int = 16, workers: int | None = None) -> VerdictReport:
    """The model's changed / unchanged verdicts on ``pairs`` (:func:`mask_pairs`, :func:`mask_windows`) against
    their truth, next to "always no-change" and "always changed", with the heat maps' agreement with the masks.

    Raises:
        ValueError: no pairs, duplicate ids, an unreadable pair.
    """
    results, speed = _describe(model, pairs, VERDICT_DECODING, threshold, batch_size, workers)
    truth = [p.changed for p in pairs]
    heat, cells, changed_cells = _heat(pairs, results)
    methods = [MethodScores("model", verdict_scores(truth, [r.changed for r in results])),
               MethodScores("always no-change", verdict_scores(truth, [False] * len(pairs))),
               MethodScores("always changed", verdict_scores(truth, [True] * len(pairs)))]
    return VerdictReport(methods, {p.id: r.probability for p, r in zip(pairs, results, strict=True)},
                         auroc([r.probability for r in results], truth), heat, cells, changed_cells,
                         _threshold(model, threshold), speed)


# ------------------------------------------------------------------------------------------- robustness

#: The acquisition differences :func:`robustness_pairs` applies one at a time (``"all"``: a random mix of them).
NUISANCES = ("illumination", "season", "shift", "blur", "resolution", "haze", "noise", "all")


def robustness_pairs(pairs: Sequence[ChangePair], nuisance_name: str, seed: int = 0) -> list[ChangePair]:
    """``pairs`` with their after image (a uint8 array) put through one acquisition nuisance at full strength
    (:mod:`geovl.data.synthetic.nuisance`), the truth unchanged: an unchanged pair must stay unchanged."""
    from dataclasses import replace as _replace

    from geovl.data.synthetic.nuisance import NuisanceConfig, nuisance

    if nuisance_name not in NUISANCES:
        raise ValueError(f"unknown nuisance {nuisance_name!r}; choose from {NUISANCES}")
    names = NUISANCES[:-1]
    config = NuisanceConfig() if nuisance_name == "all" else NuisanceConfig(
        **{n: (1.0 if n == nuisance_name else 0.0) for n in names})
    out = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair.after, np.ndarray):
            raise ValueError(f"pair {pair.id}: robustness_pairs needs uint8 arrays, not paths")
        rng = np.random.default_rng([seed, i, NUISANCES.index(nuisance_name)])
        out.append(_replace(pair, id=f"{pair.id}+{nuisance_name}", after=nuisance(pair.after, rng, config)))
    return out
