"""The word vocabulary of geovl's captioners, built from training captions.

Why words and not the text tower's WordPiece: remote-sensing caption sets use a small closed vocabulary (UCM-Captions
and RSICD together need about 3,000 words; a word seen twice covers nearly every test token), so a word softmax is
about ten times smaller than BERT's 30,522 pieces (the output layer dominates a small decoder's cost on a CPU),
captions are about a third shorter in tokens, and words are what the caption metrics count.

Rules: text is lower-cased and split into runs of letters and runs of digits (punctuation is dropped, as the PTB
tokenisation of the metrics drops it); ids 0-3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; words are ordered by
frequency, then alphabetically, so the same captions always give the same vocabulary.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "WordVocab", "caption_words", "format_caption"]

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
_WORD = re.compile(r"[a-z]+|[0-9]+")


def caption_words(text: str) -> list[str]:
    """The words of a caption as the vocabulary sees them."""
    return _WORD.findall(text.lower())


def format_caption(words: Sequence[str]) -> str:
    """Words as a sentence: capitalised, ending with a full stop (empty for no words)."""
    if not words:
        return ""
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


@dataclass(frozen=True)
class WordVocab:
    """Words by id (the first four are :data:`SPECIALS`)."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if tuple(self.words[:4]) != SPECIALS:
            raise ValueError(f"a caption vocabulary starts with {SPECIALS}, got {self.words[:4]}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("the caption vocabulary lists a word twice")

    @classmethod
    def build(cls, captions: Iterable[str], *, min_count: int = 2, max_size: int | None = None) -> WordVocab:
        """The words seen at least ``min_count`` times (the ``max_size - 4`` most frequent when given)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts = Counter(w for text in captions for w in caption_words(text))
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIALS))]
        if not ranked:
            raise ValueError(f"no word occurs {min_count} or more times in the training captions")
        return cls(SPECIALS + tuple(ranked))

    def __len__(self) -> int:
        return len(self.words)

    @cached_property
    def index(self) -> dict[str, int]:
        """Word -> id (built once)."""
        return {w: i for i, w in enumerate(self.words)}

    def encode(self, text: str, max_length: int) -> list[int]:
        """``<bos> w1 ... wn <eos>`` (unknown words as ``<unk>``), cut to ``max_length`` ids in all."""
        index = self.index
        ids = [index.get(w, UNK) for w in caption_words(text)][: max(0, max_length - 2)]
        return [BOS, *ids, EOS]

    def encode_batch(self, texts: Sequence[str], max_length: int) -> torch.Tensor:
        """(B, L) padded id tensor, L the longest encoded caption."""
        rows = [self.encode(t, max_length) for t in texts]
        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Generated ids (without start / end tokens) to a sentence; special ids are dropped."""
        return format_caption([self.words[i] for i in ids if i >= len(SPECIALS) and i < len(self.words)])
