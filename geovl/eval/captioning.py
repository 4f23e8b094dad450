"""Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, S*m) for captioning and change captioning.

The numbers are those of the coco-caption code (``pycocoevalcap``, the ``caption`` extra), which every remote-sensing
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

Scales: :class:`CaptionScores` stores every figure as pycocoevalcap returns it (fractions, CIDEr-D on its native
0..10 scale). :meth:`CaptionScores.as_percent` multiplies *every* figure by 100, which is how RSICC papers print
them (CIDEr-D 1.3661 -> 136.61); S*m is the mean of the four stored figures, so its percent form equals the mean of
the four printed figures (e.g. RSCaMa's 79.24 on LEVIR-CC).

Tokenisation: coco-caption lower-cases and splits text with Stanford's PTBTokenizer (a Java jar) and then drops a
fixed list of punctuation tokens. :func:`ptb_tokenize` reimplements that in Python (the default, no Java start-up)
and can also run the jar (``backend="java"``); the two give identical strings on all 70,885 captions of
UCM-Captions, LEVIR-CC and the RSICD sample in the shared test data. Known differences are on text that captions
rarely contain; see :func:`ptb_tokenize`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from geovl._optional import require
from geovl.data import is_no_change_sentence

__all__ = [
    "METRIC_NAMES",
    "PTB_PUNCTUATIONS",
    "CaptionScores",
    "ChangeCaptionScores",
    "ImageCaptionScores",
    "NoChangeDetection",
    "caption_metrics",
    "change_caption_metrics",
    "java_available",
    "load_predictions",
    "ptb_tokenize",
]

logger = logging.getLogger(__name__)

TokenizerBackend = Literal["python", "java"]

#: Display names of the figures, in table order (the keys of :meth:`CaptionScores.as_percent`).
METRIC_NAMES: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "S*m")

#: Tokens that coco-caption removes after PTB tokenisation (``pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS``).
#: The bracket tokens are compared *after* lower-casing, so ``-lrb-`` / ``-rrb-`` (from parentheses) survive: that
#: is what coco-caption does, and this module reproduces it.
PTB_PUNCTUATIONS: frozenset[str] = frozenset(
    {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
)

_JAVA_INSTALL_HINT = (
    "METEOR needs a Java runtime ('java' on PATH), e.g. `apt-get install default-jre-headless` "
    "(Debian/Ubuntu) or any JRE >= 8"
)


def java_available() -> bool:
    """Whether a ``java`` executable is on ``PATH`` (needed for METEOR and the Java tokenizer)."""
    return shutil.which("java") is not None


# ------------------------------------------------------------------------------------------------ tokenisation


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Abbreviations after which Stanford PTBTokenizer 3.4.1 (the jar shipped with pycocoevalcap) keeps the period as part
# of the word, in any context. Found by running the jar on "the <w>. is", "the <w>. Is", "the <w>." and "<w>. is"
# for the abbreviation lists of PTBLexer.flex; the test suite re-checks a sample against the jar when Java exists.
_ABBREV_ALWAYS = _words(
    """jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri
    ala ariz calif colo conn ct dak fla ga ind kan kans ky md mich minn mo mont neb nev okla penn tenn va vt wis wisc
    wyo inc co cos corp pty ptys pte ltd plc rt bancorp bhd assn univ intl sys tel est ext sq jr sr bros esq etc al
    seq bldg mr mrs ms dr drs prof profs sen sens rep reps atty attys lt col gen messrs gov govs adm rev maj sgt cpl
    pvt capt st ste ave pres lieut hon brig cmdr comdr pfc spc supt supts det mt ft adj adv asst assoc ens insp mlle
    mme msgr sfc invt elec natl mfg mtg dept blvd rd v wm jos cie cf treas ph vs ph.d"""
)
# Abbreviations only when written with a capital first letter (state names that are also English words).
_ABBREV_CAPITALISED = _words("az ark del ill la mass miss ore pa tex wash")
# Abbreviations except when written in capitals.
_ABBREV_NOT_UPPER = _words("pty ptys pte mfg mtg")
# Abbreviations only before a number ("no. 5", "fig. 3").
_ABBREV_BEFORE_NUMBER = _words("ca fig figs prop no nos art pp op")
# Capitalised words after which the jar reads "<letter>." as a sentence end (found by probing it with the words of
# the UCM and RSICD captions and the common English function words).
_SENTENCE_OPENERS = _words(
    """a about after an as at but he her here if in it many more now once one other our she since so some such that
    the their then there these they this we what when while you"""
)
_ACRONYM = re.compile(r"^[^\W\d_](?:\.[^\W\d_])*$")  # "a", "u.s", "e.g", "a.m" (+ the final period)
_ASSIMILATIONS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
                  "wanna": ("wan", "na"), "lemme": ("lem", "me"), "gimme": ("gim", "me")}  # fmt: skip
_CLITIC = re.compile(r"^(.+?)('s|'ll|'ve|'re|'d|'m)$")
_OPEN_CLOSE = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}
# Line breaks that Java would treat as a new line; coco-caption only replaces "\n", which misaligns the output.
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_SCANNER = re.compile(
    r"""
    (?P<num>(?<!\w)-\d+(?:[.,]\d+)*|\d+(?:[.,]\d+)+)                    # 3.5  1,000  -5
    |(?P<word>\w+(?:(?:[-./&]|(?<=[^\W\d_])'(?=[^\W\d_]))\w+)*)       # t-shaped  u.s  and/or  road's
    |(?P<clitic>'t(?=(?:is|was)\b)|'(?:s|ll|ve|re|d|m)(?!\w)|'\d\ds(?!\w))  # 's (after a space)  'tis  '90s
    |(?P<tag>[#@][^\W\d_]\w*)                                           # #hashtag  @name
    |(?P<dots>\.+)
    |(?P<dashes>-+)
    |(?P<bang>[?!]+)
    |(?P<quote>["'`]+)
    |(?P<other>\S)
    """,
    re.VERBOSE,
)
_QUOTE_MAP = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"', "\u201d": '"',
                            "\u201e": '"', "\u201f": '"', "\u00ab": '"', "\u00bb": '"'})  # fmt: skip
_DASH_CHARS = re.compile(r"[\u2012\u2013\u2014\u2015]")
_ELLIPSIS = re.compile(r"[\u2026]")


def _keeps_period(word: str, dots: str, next_token: str | None, adjacent: bool) -> bool:
    """Whether PTBTokenizer 3.4.1 keeps the first of the periods ``dots`` written right after ``word`` (original case).

    ``next_token`` is the token after the periods and ``adjacent`` whether it follows them with no space.
    """
    if dots == "." and adjacent and next_token in (",", ";", ":"):
        return True  # "big.," -> "big." ","
    low = word.lower()
    if len(low) == 1 and not adjacent and next_token and next_token[0].isupper():
        # An initial is read as the end of a sentence when a usual sentence opener follows ("a. There ...").
        return next_token.lower() not in _SENTENCE_OPENERS
    if _ACRONYM.match(low) or low in _ABBREV_ALWAYS:
        return not (low in _ABBREV_NOT_UPPER and word.isupper())
    if low in _ABBREV_CAPITALISED:
        return word[:1].isupper()
    if low in _ABBREV_BEFORE_NUMBER:
        return next_token is not None and next_token[:1].isdigit()
    return False


def _split_word(word: str) -> list[str]:
    """Split clitics off a word, right to left: ``don't's`` -> ``do n't 's``, ``cannot`` -> ``can not``."""
    low = word.lower()
    if low in _ASSIMILATIONS:
        return [word[: len(_ASSIMILATIONS[low][0])], word[len(_ASSIMILATIONS[low][0]) :]]
    if len(low) > 3 and low.endswith("n't"):
        return [*_split_word(word[:-3]), word[-3:]]
    m = _CLITIC.match(low)
    if m:
        cut = len(m.group(1))
        return [*_split_word(word[:cut]), word[cut:]]
    return [word]


def _python_ptb_line(text: str) -> str:
    text = _ELLIPSIS.sub(" ... ", _DASH_CHARS.sub(" -- ", unicodedata.normalize("NFC", text).translate(_QUOTE_MAP)))
    matches = list(_SCANNER.finditer(text))
    tokens: list[str] = []
    period_taken = False
    for i, m in enumerate(matches):
        kind, tok = m.lastgroup, m.group()
        if kind == "word":
            parts = _split_word(tok)
            # A single period glued to a word is kept when the word is an abbreviation or an acronym.
            nxt = matches[i + 1] if i + 1 < len(matches) else None
            if len(parts) == 1 and nxt is not None and nxt.lastgroup == "dots" and nxt.start() == m.end():
                after = matches[i + 2] if i + 2 < len(matches) else None
                adjacent = after is not None and after.start() == nxt.end()
                if _keeps_period(tok, nxt.group(), after.group() if after else None, adjacent):
                    parts = [tok + "."]
                    period_taken = True
            tokens.extend(parts)
        elif kind == "dots":
            if period_taken:  # the first period went to the previous word by the abbreviation rule
                period_taken = False
                tok = tok[1:]
            if tok:
                tokens.append("." if len(tok) == 1 else "...")
        elif kind == "dashes":
            tokens.append("-" if len(tok) == 1 else "--")
        elif kind == "quote":
            tokens.append("''")
        elif kind == "other":
            tokens.append(_OPEN_CLOSE.get(tok, tok))
        else:  # num, clitic, tag, bang
            tokens.append(tok)
    return " ".join(t for t in (t.lower() for t in tokens) if t not in PTB_PUNCTUATIONS)


def _java_ptb_lines(lines: Sequence[str]) -> list[str]:
    """Run the Stanford PTBTokenizer jar that ships with pycocoevalcap, exactly as coco-caption does."""
    if not java_available():
        raise RuntimeError(f"the Java PTB tokenizer needs Java: {_JAVA_INSTALL_HINT}")
    ptb = require("pycocoevalcap.tokenizer.ptbtokenizer", "caption", "the Java PTB tokenizer")
    jar = Path(str(ptb.__file__)).resolve().parent / ptb.STANFORD_CORENLP_3_4_1_JAR
    with tempfile.TemporaryDirectory(prefix="geovl_ptb_") as tmp:
        src = Path(tmp) / "captions.txt"
        src.write_text("\n".join(lines), encoding="utf-8")
        cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase",
               "-encoding", "UTF-8", str(src)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"PTBTokenizer failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    out = proc.stdout.decode("utf-8").split("\n")
    if len(out) < len(lines) or any(o.strip() for o in out[len(lines) :]):
        raise RuntimeError(f"PTBTokenizer returned {len(out)} lines for {len(lines)} captions")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in ptb.PUNCTUATIONS) for line in out[: len(lines)]]


def ptb_tokenize(texts: Sequence[str], *, backend: TokenizerBackend = "python") -> list[str]:
    """coco-caption's tokenisation: PTB tokens, lower-cased, joined by single spaces, punctuation tokens removed.

    Args:
        texts: captions (any case and punctuation).
        backend: ``"python"`` (default; a reimplementation, no Java) or ``"java"`` (the Stanford CoreNLP 3.4.1
            jar shipped with pycocoevalcap, run as ``PTBTokenizer -preserveLines -lowerCase``, as coco-caption does).

    Returns:
        One string per text, e.g. ``"A road's end, with (some) houses."`` -> ``"a road 's end with -lrb- some -rrb-
        houses"``.

    The Python version follows the jar's behaviour on caption text: words keep internal hyphens, periods, slashes and
    apostrophes (``t-shaped``, ``u.s.``, ``and/or``, ``o'clock``); clitics split off (``road 's``, ``do n't``,
    ``ca n't``, ``can not``, ``gon na``); decimal numbers split from a following unit (``2.5 m``); a period glued to a
    word is removed unless the word is a single letter, a dotted acronym or one of the jar's abbreviations
    (``etc.``, ``st.``, ``mr.``, and ``no.`` / ``fig.`` before a number); quotes, ``, ; : . ? ! - -- ...`` and
    unicode dashes and ellipses are dropped; brackets become ``-lrb-`` / ``-rrb-`` / ``-lsb-`` ... (and are *kept*,
    as in coco-caption); ``?!``-runs, ``%``, ``$``, ``#``, ``*``, ``+``, ``=``, ``&`` and other symbols become
    tokens of their own. Both backends give identical strings on every caption of UCM-Captions, RSICD (sample) and
    LEVIR-CC. Known differences, all on text unusual in captions: punctuation between letters with no space
    (``a?b``, ``it!s``, ``sq.m``, ``a,1``); ``y'all``, ``rock'n'roll`` and clitics stacked on non-words
    (``1990sn't``); e-mail addresses, URLs, SGML tags and emoticons (``:)``); and whether a period stays on a
    single-letter initial followed by another initial or a capitalised word, or on ``no.`` / ``fig.`` at the end
    of a line, where the jar looks further back than one word (on 20,000 synthetic captions full of
    abbreviations, 0.35% differed, all of this last kind). Every line break is read as a space (coco-caption only
    replaces ``"\\n"``, and any other line break in a caption shifts every later caption onto the wrong image).
    """
    if isinstance(texts, str):
        raise ValueError("pass a list of strings, not a single string")
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise ValueError(f"captions must be strings; got {', '.join(sorted(set(bad)))}")
    lines = [" ".join(_LINE_BREAKS.sub(" ", t).split()) for t in texts]
    if backend == "python":
        return [_python_ptb_line(t) for t in lines]
    if backend == "java":
        return _java_ptb_lines(lines) if lines else []
    raise ValueError(f"unknown tokenizer backend {backend!r}; use 'python' or 'java'")


# ------------------------------------------------------------------------------------------------------ results

_FIELDS: dict[str, str] = {
    "BLEU-1": "bleu1",
    "BLEU-2": "bleu2",
    "BLEU-3": "bleu3",
    "BLEU-4": "bleu4",
    "METEOR": "meteor",
    "ROUGE-L": "rouge_l",
    "CIDEr-D": "cider_d",
    "S*m": "s_m",
}


def _field(metric: str) -> str:
    if metric in _FIELDS:
        return _FIELDS[metric]
    if metric in _FIELDS.values():
        return metric
    raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRIC_NAMES)}")


def _s_m(bleu4: float, meteor: float | None, rouge_l: float, cider_d: float) -> float | None:
    return None if meteor is None else (bleu4 + meteor + rouge_l + cider_d) / 4.0


@dataclass(frozen=True)
class ImageCaptionScores:
    """The scores of one image's candidate against its references (same scales as :class:`CaptionScores`).

    Per-image BLEU uses the image's own brevity penalty, and per-image CIDEr-D uses the idf of the whole evaluated
    set, as in coco-caption's ``imgToEval``.
    """

    image_id: str
    candidate: str
    references: tuple[str, ...]
    bleu1: float
    bleu2: float
    bleu3: float
    bleu4: float
    meteor: float | None
    rouge_l: float
    cider_d: float

    @property
    def s_m(self) -> float | None:
        """(BLEU-4 + METEOR + ROUGE-L + CIDEr-D) / 4, or ``None`` without METEOR."""
        return _s_m(self.bleu4, self.meteor, self.rouge_l, self.cider_d)

    def score(self, metric: str) -> float | None:
        """One figure by display name (``"CIDEr-D"``) or field name (``"cider_d"``)."""
        value: float | None = getattr(self, _field(metric))
        return value

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: id, candidate, references and every figure (field names, stored scales)."""
        out: dict[str, Any] = {"image_id": self.image_id, "candidate": self.candidate,
                               "references": list(self.references)}  # fmt: skip
        out.update({f: getattr(self, f) for f in _FIELDS.values()})
        return out


@dataclass(frozen=True)
class CaptionScores:
    """Corpus-level caption metrics, as coco-caption computes them.

    Attributes:
        bleu1, bleu2, bleu3, bleu4: corpus BLEU-n, fractions in [0, 1].
        meteor: METEOR 1.5 in [0, 1], or ``None`` when it was skipped (``meteor=False`` or no Java; see ``notes``).
        rouge_l: mean per-image ROUGE-L F-measure (beta 1.2), in [0, 1].
        cider_d: mean per-image CIDEr-D on pycocoevalcap's scale (0-10; papers print it x100, e.g. 136.61).
        n_images: number of images (or image pairs) scored.
        tokenizer: ``"python"`` or ``"java"`` (see :func:`ptb_tokenize`).
        per_image: one :class:`ImageCaptionScores` per image, in sorted id order.
        notes: anything the reader should know (a metric that was skipped and why).
    """

    bleu1: float
    bleu2: float
    bleu3: float
    bleu4: float
    meteor: float | None
    rouge_l: float
    cider_d: float
    n_images: int
    tokenizer: str
    per_image: tuple[ImageCaptionScores, ...] = field(default=(), repr=False)
    notes: tuple[str, ...] = ()

    @property
    def s_m(self) -> float | None:
        """S*m = (BLEU-4 + METEOR + ROUGE-L + CIDEr-D) / 4 on the stored scales, ``None`` without METEOR.

        ``100 * s_m`` is the S*m of the change-captioning tables (mean of the four figures as printed there).
        """
        return _s_m(self.bleu4, self.meteor, self.rouge_l, self.cider_d)

    def score(self, metric: str) -> float | None:
        """One figure by display name (``"BLEU-4"``, ``"S*m"``) or field name (``"bleu4"``), on the stored scale."""
        value: float | None = getattr(self, _field(metric))
        return value

    def as_percent(self) -> dict[str, float | None]:
        """Every figure x100, keyed by :data:`METRIC_NAMES`, as RSICC papers print them (CIDEr-D 1.3661 -> 136.61)."""
        out: dict[str, float | None] = {}
        for name in METRIC_NAMES:
            v = self.score(name)
            out[name] = None if v is None else 100.0 * v
        return out

    def ranked(self, metric: str = "CIDEr-D", k: int = 5, *, worst: bool = True) -> list[ImageCaptionScores]:
        """The ``k`` worst (or best) images by ``metric`` (ties broken by id), for example tables in reports."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        name = _field(metric)
        rows = [r for r in self.per_image if getattr(r, name) is not None]
        rows.sort(key=lambda r: (getattr(r, name) if worst else -getattr(r, name), r.image_id))
        return rows[:k]

    def to_dict(self, *, per_image: bool = False) -> dict[str, Any]:
        """Plain JSON-able dict of the figures (stored scales, field names), ``s_m``, counts and notes.

        ``percent`` holds :meth:`as_percent`; ``per_image=True`` adds the per-image rows.
        """
        out: dict[str, Any] = {f: getattr(self, f) for f in _FIELDS.values()}
        out.update(
            n_images=self.n_images,
            tokenizer=self.tokenizer,
            notes=list(self.notes),
            percent=self.as_percent(),
            scale="fractions; cider_d on pycocoevalcap's 0-10 scale; 'percent' = x100 as printed in papers",
        )
        if per_image:
            out["per_image"] = [r.to_dict() for r in self.per_image]
        return out


@dataclass(frozen=True)
class NoChangeDetection:
    """How well the candidates say "no change" exactly for the unchanged pairs (positive class: unchanged).

    Attributes:
        accuracy: fraction of pairs where "the candidate is a no-change sentence" equals "the pair is unchanged".
        precision, recall, f1: for the unchanged class; ``None`` when undefined (no predicted / actual positives).
        n_pairs, n_unchanged, n_predicted_unchanged, n_correct_unchanged: the counts behind them.
    """

    accuracy: float
    precision: float | None
    recall: float | None
    f1: float | None
    n_pairs: int
    n_unchanged: int
    n_predicted_unchanged: int
    n_correct_unchanged: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class ChangeCaptionScores:
    """Change-captioning metrics (LEVIR-CC protocol): all pairs, the changed and unchanged subsets, no-change hits.

    Each subset is scored as a corpus of its own (its own BLEU brevity penalty and CIDEr-D idf), the way the
    RSICCformer-style papers report their changed / unchanged tables.

    Attributes:
        overall: metrics over every pair.
        changed: metrics over the changed pairs, ``None`` when there are none.
        unchanged: metrics over the unchanged pairs, ``None`` when there are none.
        no_change: :class:`NoChangeDetection` of the candidates.
    """

    overall: CaptionScores
    changed: CaptionScores | None
    unchanged: CaptionScores | None
    no_change: NoChangeDetection

    def as_percent(self) -> dict[str, dict[str, float | None] | None]:
        """``{"all" | "changed" | "unchanged": CaptionScores.as_percent()}``."""
        return {
            "all": self.overall.as_percent(),
            "changed": self.changed.as_percent() if self.changed else None,
            "unchanged": self.unchanged.as_percent() if self.unchanged else None,
        }

    def to_dict(self, *, per_image: bool = False) -> dict[str, Any]:
        """Plain JSON-able dict with the three :meth:`CaptionScores.to_dict` and the no-change detection."""
        return {
            "all": self.overall.to_dict(per_image=per_image),
            "changed": self.changed.to_dict(per_image=per_image) if self.changed else None,
            "unchanged": self.unchanged.to_dict(per_image=per_image) if self.unchanged else None,
            "no_change_detection": self.no_change.to_dict(),
        }


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
        note = f"METEOR (and S*m) not computed: no 'java' on PATH. {_JAVA_INSTALL_HINT}."
        logger.warning(note)
        warnings.warn(note, RuntimeWarning, stacklevel=4)
        yield None, note
        return
    meteor_mod = require("pycocoevalcap.meteor.meteor", "caption", "METEOR")
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
    refs_tok: Mapping[str, list[str]],
    cands_tok: Mapping[str, str],
    meteor_scorer: Any,
    tokenizer: str,
    notes: Sequence[str],
) -> CaptionScores:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: list(refs_tok[i]) for i in ids}
    res = {i: [cands_tok[i]] for i in ids}
    bleu, bleu_img = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_img = Rouge().compute_score(gts, res)
    if any(r.split() for i in ids for r in gts[i]):
        cider, cider_img = Cider().compute_score(gts, res)
    else:  # no reference n-gram at all: pycocoevalcap would fail on an empty document-frequency table
        cider, cider_img = 0.0, [0.0] * len(ids)
    notes = list(notes)
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
        tokenizer=tokenizer,
        per_image=per_image,
        notes=tuple(notes),
    )


def _tokenized(
    refs: Mapping[str, list[str]], cands: Mapping[str, str], backend: TokenizerBackend
) -> tuple[dict[str, list[str]], dict[str, str]]:
    ids = list(cands)
    flat = [c for i in ids for c in refs[i]] + [cands[i] for i in ids]
    tok = ptb_tokenize(flat, backend=backend)
    refs_tok: dict[str, list[str]] = {}
    pos = 0
    for i in ids:
        refs_tok[i] = tok[pos : pos + len(refs[i])]
        pos += len(refs[i])
    cands_tok = dict(zip(ids, tok[pos:], strict=True))
    return refs_tok, cands_tok


def caption_metrics(
    references: Mapping[Any, Sequence[str]],
    candidates: Mapping[Any, str],
    *,
    meteor: bool = True,
    tokenizer: TokenizerBackend = "python",
) -> CaptionScores:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and S*m of ``candidates`` against ``references`` (coco-caption).

    Args:
        references: id -> reference captions (raw text, at least one per id). Ids may be strings or integers;
            they are compared as text, so ``{1: ...}`` and ``{"1": ...}`` name the same image.
        candidates: id -> the generated caption (raw text; may be empty). Must have exactly the ids of
            ``references``.
        meteor: compute METEOR (starts a Java process, about 2-4 s). Without ``java`` on ``PATH`` METEOR and S*m
            are ``None`` and a warning says what to install; nothing fails.
        tokenizer: ``"python"`` (default) or ``"java"``: how captions are PTB-tokenised (:func:`ptb_tokenize`).

    Returns:
        :class:`CaptionScores` with fractions (CIDEr-D on its 0-10 scale) and per-image scores; the corpus
        figures equal ``COCOEvalCap``'s for the same inputs and tokenisation.

    Raises:
        ValueError: ids missing on either side (a few are listed), non-string captions, empty reference lists.
        geovl._optional.MissingDependencyError: pycocoevalcap is not installed (``pip install 'geovl[caption]'``).
    """
    require("pycocoevalcap", "caption", "caption metrics")
    refs, cands = _validated(references, candidates)
    refs_tok, cands_tok = _tokenized(refs, cands, tokenizer)
    with _meteor_session(meteor) as (scorer, note):
        return _score_corpus(list(cands), refs, cands, refs_tok, cands_tok, scorer, tokenizer, [note] if note else [])


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
    tokenizer: TokenizerBackend = "python",
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
    require("pycocoevalcap", "caption", "caption metrics")
    refs, cands = _validated(references, candidates)
    if changed is None:
        unchanged = {i: all(is_no_change_sentence(r) for r in refs[i]) for i in cands}
    else:
        flags = _string_keys(changed, "changed")
        missing = sorted(set(cands) - set(flags))
        if missing:
            raise ValueError(f"'changed' has no flag for {len(missing)} pair id(s): {_show(missing)}")
        unchanged = {i: not bool(flags[i]) for i in cands}
    refs_tok, cands_tok = _tokenized(refs, cands, tokenizer)
    ids_all = list(cands)
    ids_changed = [i for i in ids_all if not unchanged[i]]
    ids_unchanged = [i for i in ids_all if unchanged[i]]
    with _meteor_session(meteor) as (scorer, note):
        notes = [note] if note else []

        def score(ids: list[str]) -> CaptionScores | None:
            if not ids:
                return None
            return _score_corpus(ids, refs, cands, refs_tok, cands_tok, scorer, tokenizer, notes)

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
    * JSON Lines, one ``{"image_id": ..., "caption": ...}`` object per line (any file name).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON / JSON Lines, a wrong layout, a non-string caption or an id given twice.
    """
    p = Path(path)
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
