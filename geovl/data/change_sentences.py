"""The one list of "no change" sentences, shared by the change-caption readers, metrics and synthetic generator.

Rules:

* :data:`NO_CHANGE_SENTENCES` holds normalised sentences (lower case, no punctuation, single spaces).
* A pair whose captions are all no-change sentences is unchanged (:mod:`geovl.data.levircc` without a
  ``changeflag``; the change-caption metrics of :mod:`geovl.eval.captioning`), and
  :func:`is_no_change_sentence` is the test for one sentence.
* The synthetic change-pair generator writes its unchanged-pair captions from this same list, so every caption
  it writes for an unchanged pair is recognised as one; the first sentence is its canonical (first) caption.
"""

from __future__ import annotations

import re

__all__ = ["NO_CHANGE_SENTENCES", "is_no_change_sentence", "normalise_sentence"]

#: Sentences LEVIR-CC-style annotators use for unchanged pairs. LEVIR-CC's no-change pairs carry exactly the
#: first five.
NO_CHANGE_SENTENCES: tuple[str, ...] = (
    "there is no difference",
    "the two scenes seem identical",
    "the scene is the same as before",
    "no change has occurred",
    "almost nothing has changed",
    "there is no change",
    "no change",
    "no changes",
    "nothing has changed",
    "there are no changes",
    "the two images are identical",
    "the two images are the same",
    "the scene has not changed",
    "the scene remains unchanged",
    "no buildings or roads are changed",
    "no difference",
)

_NO_CHANGE = frozenset(NO_CHANGE_SENTENCES)
_PUNCT = re.compile(r"[^\w\s]")


def normalise_sentence(sentence: str) -> str:
    """``sentence`` in lower case with punctuation replaced by spaces and runs of spaces collapsed."""
    return " ".join(_PUNCT.sub(" ", sentence.lower()).split())


def is_no_change_sentence(sentence: str) -> bool:
    """Whether ``sentence`` (any case / punctuation) is one of :data:`NO_CHANGE_SENTENCES`."""
    return normalise_sentence(sentence) in _NO_CHANGE
