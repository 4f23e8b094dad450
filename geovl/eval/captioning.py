"""Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, S*m) for captioning and change captioning.

The numbers are those of the coco-caption code (``pycocoevalcap``, a geovl dependency), which every remote-sensing
captioning paper reports: the same scorers are called on the same tokenised text, so the corpus figures equal what
``pycocoevalcap.eval.COCOEvalCap`` prints for the same references and candidates.

What the scorers compute (read from pycocoevalcap 1.2's source):

* **BLEU-n** (``Bleu(4)``): corpus BLEU with clipped n-gram counts (a candidate n-gram counts at most as often as
  in the reference where it is most frequent) and a corpus-level brevity penalty ``exp(1 - r/c)`` when ``c < r``,
  where ``c`` is the total candidate length and ``r`` the sum over images of the reference length *closest* to
  the candidate's. The per-image BLEU is the same formula on one image. Range 0..1.
* **METEOR** (``Meteor()``): METEOR 1.5 (``-l en -norm``), run as a Java subprocess. The corpus figure is the
  jar's aggregate over all images (not the mean of the per-image scores). Range 0..1.
* **ROUGE-L** (``Rouge()``): per image, the LCS-based F-measure with beta = 1.2 using the best precision and the
  best recall over the references; the corpus figure is the mean over images. Range 0..1.
* **CIDEr-D** (``Cider()``): pycocoevalcap's ``Cider`` *is* CIDEr-D, although it is named "CIDEr": it
  clips the candidate's tf-idf n-gram weights to the reference's (``min(vec_hyp, vec_ref)``, which equals
  clipping the counts since both share the idf), multiplies each n-gram similarity by the Gaussian length penalty
  ``exp(-(l_c - l_r)^2 / (2 * 6^2))`` (sigma = 6), averages n = 1..4 and the references, and multiplies by 10.
  The document frequencies come from the references of the evaluated set itself, so a subset has its own idf and
  a one-image corpus always scores 0 (every idf is log(1/1)); there is no stemming. Lengths are counted in bigrams
  (the same differences as word counts; an empty sentence scores 0 either way). The corpus figure is the mean over
  images. Range 0..10 (typically 0.5-1.5).
* **S*m** = (BLEU-4 + METEOR + ROUGE-L + CIDEr-D) / 4, the summary figure of the change-captioning papers.

Scales and result types: :mod:`geovl.eval.caption_scores`.

Tokenisation: coco-caption lower-cases and splits text with Stanford's PTBTokenizer (a Java jar) and then drops a
fixed list of punctuation tokens (:mod:`geovl.eval.ptb_tokenizer`). With the default ``tokenizer="auto"`` the jar
itself tokenises whenever METEOR runs (METEOR is requested and Java is on ``PATH``, so the JVM is needed anyway);
otherwise the Python port of the jar does (no Java needed), and it also stands in when the jar fails. The backend
used is recorded in :attr:`CaptionScores.tokenizer`. ``tokenizer="python"`` or ``"java"`` forces one.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from geovl._optional import require
from geovl.data import is_no_change_sentence
from geovl.eval.caption_scores import (
    METRIC_NAMES,
    CaptionScores,
    ChangeCaptionScores,
    ImageCaptionScores,
    NoChangeDetection,
)
from geovl.eval.ptb_tokenizer import (
    JAVA_INSTALL_HINT,
    PTB_PUNCTUATIONS,
    TokenizerBackend,
    java_available,
    ptb_tokenize,
)

__all__ = [
    "METRIC_NAMES",
    "PTB_PUNCTUATIONS",
    "CaptionScores",
    "ChangeCaptionScores",
    "ImageCaptionScores",
    "NoChangeDetection",
    "TokenizerChoice",
    "caption_metrics",
    "change_caption_metrics",
    "java_available",
    "load_predictions",
    "ptb_tokenize",
]

logger = logging.getLogger(__name__)

TokenizerChoice = Literal["auto", "python", "java"]
"""``"auto"``: the Java jar when METEOR runs (so Java is there anyway), else the Python port; or force one."""


# --------------------------------------------------------------------------------------------------- validation


def _show(ids: Sequence[str], limit: int = 5) -> str:
    more = f" (and {len(ids) - limit} more)" if len(ids) > limit else ""
    return ", ".join(repr(i) for i in ids[:limit]) + more


def _string_keys(mapping: Mapping[Any, Any], what: str) -> dict[str, Any]:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{what} must be a mapping from id to caption(s), got {type(mapping).__name__}")
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise ValueError(f"{what} ids must be strings or integers, got {key!r} ({type(key).__name__})")
        sid = str(key)
        if sid in out:
            raise ValueError(f"{what} has two ids that read the same as text: {sid!r}")
        out[sid] = value
    return out


def _validated(
    references: Mapping[Any, Sequence[str]], candidates: Mapping[Any, str]
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """String ids, list-of-string references and string candidates, with the same ids on both sides."""
    refs_in = _string_keys(references, "references")
    cands_in = _string_keys(candidates, "candidates")
    if not cands_in:
        raise ValueError("no candidates given")
    missing_refs = sorted(set(cands_in) - set(refs_in))
    missing_cands = sorted(set(refs_in) - set(cands_in))
    if missing_refs or missing_cands:
        parts = []
        if missing_refs:
            parts.append(f"{len(missing_refs)} candidate id(s) have no references: {_show(missing_refs)}")
        if missing_cands:
            parts.append(f"{len(missing_cands)} reference id(s) have no candidate: {_show(missing_cands)}")
        raise ValueError("references and candidates must cover the same ids; " + "; ".join(parts))
    refs: dict[str, list[str]] = {}
    cands: dict[str, str] = {}
    for sid in sorted(cands_in):
        r, c = refs_in[sid], cands_in[sid]
        if isinstance(r, str) or not isinstance(r, Sequence):
            raise ValueError(f"references for id {sid!r} must be a list of strings, got {type(r).__name__}")
        if len(r) == 0:
            raise ValueError(f"id {sid!r} has an empty reference list")
        if not all(isinstance(x, str) for x in r):
            raise ValueError(f"references for id {sid!r} must all be strings")
        if not isinstance(c, str):
            raise ValueError(f"the candidate for id {sid!r} must be one string, got {type(c).__name__}")
        refs[sid] = list(r)
        cands[sid] = c
    return refs, cands


# ------------------------------------------------------------------------------------------------------ scoring


@contextmanager
def _meteor_session(enabled: bool) -> Iterator[tuple[Any, str | None]]:
    """A running pycocoevalcap ``Meteor`` (Java subprocess) or ``None`` with the reason, closed on exit."""
    if not enabled:
        yield None, None
        return
    if not java_available():
        note = f"METEOR (and S*m) not computed: no 'java' on PATH. {JAVA_INSTALL_HINT}."
        logger.warning(note)
        warnings.warn(note, RuntimeWarning, stacklevel=4)
        yield None, note
        return
    meteor_mod = require("pycocoevalcap.meteor.meteor", None, "METEOR")
    scorer = meteor_mod.Meteor()
    try:
        yield scorer, None
    finally:
        proc = scorer.meteor_p
        with scorer.lock:
            if proc.stdin:
                proc.stdin.close()
            proc.kill()
            proc.wait(timeout=30)


def _run_meteor(scorer: Any, gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[Any, str | None]:
    try:
        return scorer.compute_score(gts, res), None
    except (ValueError, OSError) as exc:  # the jar died (bad JRE, out of memory): keep the other metrics
        err = b""
        if scorer.meteor_p.poll() is not None and scorer.meteor_p.stderr:
            err = scorer.meteor_p.stderr.read()[-1000:]
        note = f"METEOR failed and was skipped: {exc!r} {err.decode(errors='replace')}".strip()
        logger.warning(note)
        warnings.warn(note, RuntimeWarning, stacklevel=4)
        return None, note


def _score_corpus(
    ids: Sequence[str],
    refs: Mapping[str, list[str]],
    cands: Mapping[str, str],
    tok: _Tokenized,
    meteor_scorer: Any,
    notes: Sequence[str],
) -> CaptionScores:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: list(tok.refs[i]) for i in ids}
    res = {i: [tok.cands[i]] for i in ids}
    bleu, bleu_img = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_img = Rouge().compute_score(gts, res)
    if any(r.split() for i in ids for r in gts[i]):
        cider, cider_img = Cider().compute_score(gts, res)
    else:  # no reference n-gram at all: pycocoevalcap would fail on an empty document-frequency table
        cider, cider_img = 0.0, [0.0] * len(ids)
    notes = [*tok.notes, *notes]
    meteor: float | None = None
    meteor_img: list[float | None] = [None] * len(ids)
    if meteor_scorer is not None:
        out, note = _run_meteor(meteor_scorer, gts, res)
        if out is not None:
            meteor, meteor_img = float(out[0]), [float(x) for x in out[1]]
        if note:
            notes.append(note)
    per_image = tuple(
        ImageCaptionScores(
            image_id=i,
            candidate=cands[i],
            references=tuple(refs[i]),
            bleu1=float(bleu_img[0][n]),
            bleu2=float(bleu_img[1][n]),
            bleu3=float(bleu_img[2][n]),
            bleu4=float(bleu_img[3][n]),
            meteor=meteor_img[n],
            rouge_l=float(rouge_img[n]),
            cider_d=float(cider_img[n]),
        )
        for n, i in enumerate(ids)
    )
    return CaptionScores(
        bleu1=float(bleu[0]),
        bleu2=float(bleu[1]),
        bleu3=float(bleu[2]),
        bleu4=float(bleu[3]),
        meteor=meteor,
        rouge_l=float(rouge),
        cider_d=float(cider),
        n_images=len(ids),
        tokenizer=tok.backend,
        per_image=per_image,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class _Tokenized:
    """The PTB-tokenised references and candidates, the backend that tokenised them and why, if not as asked."""

    refs: dict[str, list[str]]
    cands: dict[str, str]
    backend: TokenizerBackend
    notes: tuple[str, ...] = ()


def _backend(tokenizer: TokenizerChoice, meteor: bool) -> TokenizerBackend:
    if tokenizer == "auto":
        return "java" if meteor and java_available() else "python"
    if tokenizer in ("python", "java"):
        return tokenizer
    raise ValueError(f"unknown tokenizer {tokenizer!r}; use 'auto', 'python' or 'java'")


def _tokenized(
    refs: Mapping[str, list[str]], cands: Mapping[str, str], tokenizer: TokenizerChoice, meteor: bool
) -> _Tokenized:
    """Tokenise every caption in one call (one JVM start for the jar); ``"auto"`` falls back to the Python port
    when the jar fails, with a warning and a note."""
    ids = list(cands)
    flat = [c for i in ids for c in refs[i]] + [cands[i] for i in ids]
    backend = _backend(tokenizer, meteor)
    notes: tuple[str, ...] = ()
    try:
        tok = ptb_tokenize(flat, backend=backend)
    except (RuntimeError, OSError) as exc:
        if tokenizer != "auto" or backend != "java":
            raise
        note = f"the Java PTBTokenizer failed, so the Python port tokenised the captions: {exc}"
        logger.warning(note)
        warnings.warn(note, RuntimeWarning, stacklevel=3)
        backend, notes = "python", (note,)
        tok = ptb_tokenize(flat, backend=backend)
    refs_tok: dict[str, list[str]] = {}
    pos = 0
    for i in ids:
        refs_tok[i] = tok[pos : pos + len(refs[i])]
        pos += len(refs[i])
    cands_tok = dict(zip(ids, tok[pos:], strict=True))
    return _Tokenized(refs_tok, cands_tok, backend, notes)


def caption_metrics(
    references: Mapping[Any, Sequence[str]],
    candidates: Mapping[Any, str],
    *,
    meteor: bool = True,
    tokenizer: TokenizerChoice = "auto",
) -> CaptionScores:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and S*m of ``candidates`` against ``references`` (coco-caption).

    Args:
        references: id -> reference captions (raw text, at least one per id). Ids may be strings or integers;
            they are compared as text, so ``{1: ...}`` and ``{"1": ...}`` name the same image.
        candidates: id -> the generated caption (raw text; may be empty). Must have exactly the ids of
            ``references``.
        meteor: compute METEOR (starts a Java process, about 2-4 s). Without ``java`` on ``PATH`` METEOR and S*m
            are ``None`` and a warning says what to install; nothing fails.
        tokenizer: how captions are PTB-tokenised (:func:`ptb_tokenize`): ``"auto"`` (default) uses
            pycocoevalcap's own Java PTBTokenizer when METEOR runs (``meteor=True`` and Java on ``PATH``) and the
            Python port otherwise, or when the jar fails (with a warning and a note); ``"python"`` or ``"java"``
            forces one (``"java"`` without Java raises ``RuntimeError``).

    Returns:
        :class:`CaptionScores` with fractions (CIDEr-D on its 0-10 scale) and per-image scores; the corpus
        figures equal ``COCOEvalCap``'s for the same inputs and tokenisation.

    Raises:
        ValueError: ids missing on either side (a few are listed), non-string captions, empty reference lists.
        geovl._optional.MissingDependencyError: pycocoevalcap is not installed (a broken geovl installation).
    """
    require("pycocoevalcap", None, "caption metrics")
    refs, cands = _validated(references, candidates)
    tok = _tokenized(refs, cands, tokenizer, meteor)
    with _meteor_session(meteor) as (scorer, note):
        return _score_corpus(list(cands), refs, cands, tok, scorer, [note] if note else [])


def _no_change_detection(unchanged: Mapping[str, bool], cands: Mapping[str, str]) -> NoChangeDetection:
    ids = list(cands)
    pred = {i: is_no_change_sentence(cands[i]) for i in ids}
    correct = sum(pred[i] == unchanged[i] for i in ids)
    tp = sum(pred[i] and unchanged[i] for i in ids)
    n_pred = sum(pred.values())
    n_true = sum(unchanged[i] for i in ids)
    precision = tp / n_pred if n_pred else None
    recall = tp / n_true if n_true else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return NoChangeDetection(
        accuracy=correct / len(ids),
        precision=precision,
        recall=recall,
        f1=f1,
        n_pairs=len(ids),
        n_unchanged=n_true,
        n_predicted_unchanged=n_pred,
        n_correct_unchanged=tp,
    )


def change_caption_metrics(
    references: Mapping[Any, Sequence[str]],
    candidates: Mapping[Any, str],
    *,
    changed: Mapping[Any, bool] | None = None,
    meteor: bool = True,
    tokenizer: TokenizerChoice = "auto",
) -> ChangeCaptionScores:
    """Change-captioning metrics (LEVIR-CC protocol): all pairs, changed / unchanged subsets, no-change detection.

    Args:
        references, candidates, meteor, tokenizer: as in :func:`caption_metrics` (ids are image-pair ids).
        changed: pair id -> whether the pair changed (e.g. LEVIR-CC's ``changeflag``). By default a pair is
            unchanged when every reference is a no-change sentence
            (:func:`geovl.data.is_no_change_sentence`, e.g. "there is no difference").

    Returns:
        :class:`ChangeCaptionScores`. A candidate "says no change" when it is a no-change sentence; the detection
        accuracy is the fraction of pairs where that agrees with the pair being unchanged. One METEOR process serves
        the three corpora.
    """
    require("pycocoevalcap", None, "caption metrics")
    refs, cands = _validated(references, candidates)
    if changed is None:
        unchanged = {i: all(is_no_change_sentence(r) for r in refs[i]) for i in cands}
    else:
        flags = _string_keys(changed, "changed")
        missing = sorted(set(cands) - set(flags))
        if missing:
            raise ValueError(f"'changed' has no flag for {len(missing)} pair id(s): {_show(missing)}")
        unchanged = {i: not bool(flags[i]) for i in cands}
    tok = _tokenized(refs, cands, tokenizer, meteor)
    ids_all = list(cands)
    ids_changed = [i for i in ids_all if not unchanged[i]]
    ids_unchanged = [i for i in ids_all if unchanged[i]]
    with _meteor_session(meteor) as (scorer, note):
        notes = [note] if note else []

        def score(ids: list[str]) -> CaptionScores | None:
            if not ids:
                return None
            return _score_corpus(ids, refs, cands, tok, scorer, notes)

        overall = score(ids_all)
        if overall is None:  # validation guarantees at least one id; this guards the type, not user input
            raise RuntimeError("no pairs to score")
        return ChangeCaptionScores(
            overall=overall,
            changed=score(ids_changed),
            unchanged=score(ids_unchanged),
            no_change=_no_change_detection(unchanged, cands),
        )


# ---------------------------------------------------------------------------------------------------- loading


def _prediction_pairs(data: Any, where: str) -> list[tuple[Any, Any]]:
    if isinstance(data, Mapping):
        return list(data.items())
    if isinstance(data, list):
        pairs = []
        for n, item in enumerate(data):
            if not isinstance(item, Mapping) or "image_id" not in item or "caption" not in item:
                raise ValueError(
                    f"{where}: entry {n} must be an object with 'image_id' and 'caption' (COCO results format), "
                    f"got {str(item)[:80]!r}"
                )
            pairs.append((item["image_id"], item["caption"]))
        return pairs
    raise ValueError(
        f"{where}: expected a JSON list of {{'image_id', 'caption'}} objects or an {{id: caption}} object, "
        f"got {type(data).__name__}"
    )


def load_predictions(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read generated captions: id (as text) -> caption.

    Accepted layouts:

    * COCO results JSON: ``[{"image_id": 42, "caption": "..."}, ...]`` (other keys are ignored);
    * a JSON object ``{"42": "...", ...}``;
    * JSON Lines, one ``{"image_id": ..., "caption": ...}`` object per line (any file name);
    * a ``geovl caption`` run folder (ids are the inputs' paths, or chip ids);
    * a ``geovl change-caption --pairs`` run folder (ids are the pair ids, ``<split>/<file name>`` for LEVIR-CC's
      ``images/<split>/A|B`` layout, as :class:`geovl.data.LevirCCReader` names them).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON / JSON Lines, a wrong layout, a non-string caption or an id given twice.
    """
    p = Path(path)
    if p.is_dir():
        return _run_predictions(p)
    if not p.is_file():
        raise FileNotFoundError(f"predictions file {p} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        pairs = _prediction_pairs(json.loads(text), str(p))
    except json.JSONDecodeError as exc:
        lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        if len(lines) < 2 and p.suffix != ".jsonl":
            raise ValueError(f"{p} is not valid JSON: {exc}") from exc
        items = []
        for n, ln in lines:
            try:
                items.append(json.loads(ln))
            except json.JSONDecodeError as line_exc:
                raise ValueError(f"{p}:{n} is neither JSON nor JSON Lines: {line_exc}") from line_exc
        pairs = _prediction_pairs(items, str(p))
    out: dict[str, str] = {}
    for key, caption in pairs:
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise ValueError(f"{p}: image ids must be strings or integers, got {key!r}")
        if not isinstance(caption, str):
            raise ValueError(f"{p}: the caption for id {key!r} must be a string, got {type(caption).__name__}")
        sid = str(key)
        if sid in out:
            raise ValueError(f"{p}: id {sid!r} appears more than once")
        out[sid] = caption
    if not out:
        raise ValueError(f"{p} holds no predictions")
    return out


def _run_predictions(folder: Path) -> dict[str, str]:
    from geovl.tasks.captioning.batch import read_captions
    from geovl.tasks.change_captioning.batch import is_change_caption_run, read_change_captions

    if is_change_caption_run(folder):
        out = {str(r["pair_id"]): str(r["caption"]) for r in read_change_captions(folder, ["pair_id", "caption"])}
    else:
        rows = read_captions(folder)
        out = {str(r.get("path") or r.get("chip_id") or r["id"]): str(r["caption"]) for r in rows}
    if not out:
        raise ValueError(f"{folder} holds no captions")
    return out
