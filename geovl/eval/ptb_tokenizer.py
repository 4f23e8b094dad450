"""coco-caption's tokenisation: Stanford PTBTokenizer, lower-cased, with coco-caption's punctuation tokens removed.

coco-caption (``pycocoevalcap``) tokenises every caption with the Stanford CoreNLP 3.4.1 PTBTokenizer jar it ships
(``-preserveLines -lowerCase``) and then drops the tokens in :data:`PTB_PUNCTUATIONS`. :func:`ptb_tokenize` offers
both that jar (``backend="java"``) and a Python port of it (``backend="python"``, no Java start-up) for runs without
a Java runtime. The two give identical strings on every caption of UCM-Captions, LEVIR-CC and the RSICD sample in
the shared test data (a test checks this when Java and the data are there); the known differences, on text that
captions rarely contain, are listed in :func:`ptb_tokenize`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from geovl._optional import require

__all__ = [
    "JAVA_INSTALL_HINT",
    "PTB_PUNCTUATIONS",
    "TokenizerBackend",
    "java_available",
    "ptb_tokenize",
]

TokenizerBackend = Literal["python", "java"]

#: Tokens that coco-caption removes after PTB tokenisation (``pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS``).
#: The bracket tokens are compared *after* lower-casing, so ``-lrb-`` / ``-rrb-`` (from parentheses) survive: that
#: is what coco-caption does, and this module reproduces it.
PTB_PUNCTUATIONS: frozenset[str] = frozenset(
    {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
)

#: What to install for METEOR and the Java tokenizer, for error messages and warnings.
JAVA_INSTALL_HINT = (
    "METEOR needs a Java runtime ('java' on PATH), e.g. `apt-get install default-jre-headless` "
    "(Debian/Ubuntu) or any JRE >= 8"
)


def java_available() -> bool:
    """Whether a ``java`` executable is on ``PATH`` (needed for METEOR and the Java tokenizer)."""
    return shutil.which("java") is not None


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
    """The Python port on one caption whose line breaks and runs of white space are already single spaces."""
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
        raise RuntimeError(f"the Java PTB tokenizer needs Java: {JAVA_INSTALL_HINT}")
    ptb = require("pycocoevalcap.tokenizer.ptbtokenizer", None, "the Java PTB tokenizer")
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
