"""Helpers shared by the dataset readers: split filters, missing-image checks, JSON loading, caption cleanup.

Nothing here decodes an image. Missing-image checks list each image folder once (``os.scandir``) instead of
calling ``stat`` per file, so opening a reader over tens of thousands of images stays well under a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from geovl.data.samples import ChangeCaptionSample, ImageTextSample

logger = logging.getLogger("geovl.data")

PathLike = str | os.PathLike[str]
SplitArg = str | Sequence[str] | None
"""A split name, several split names, or ``None`` for every split."""

MissingPolicy = Literal["error", "skip"]
"""What a reader does when a listed image is not on disk: raise ``FileNotFoundError`` or drop the sample."""

#: File suffixes treated as images when scanning folders (lower case, with the dot).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")

S = TypeVar("S", ImageTextSample, ChangeCaptionSample)


def clean_caption(text: str) -> str:
    """Strip a caption and collapse internal runs of whitespace to one space.

    Punctuation and case are kept as in the source (UCM's ``"... farmland ."`` stays as it is), so reference
    captions for caption metrics are not altered.
    """
    return " ".join(text.split())


def split_set(split: SplitArg) -> frozenset[str] | None:
    """Normalise a ``split=`` argument to a set of names (``None`` means no filtering)."""
    if split is None:
        return None
    names = [split] if isinstance(split, str) else list(split)
    if not names or not all(isinstance(s, str) and s for s in names):
        raise ValueError(f"split must be a split name or a list of names, got {split!r}")
    return frozenset(names)


def check_splits_present(wanted: frozenset[str] | None, present: Iterable[str | None], source: str) -> None:
    """Raise when a requested split does not occur in the source, naming the splits that do."""
    if wanted is None:
        return
    have = {s for s in present if s is not None}
    absent = sorted(wanted - have)
    if absent:
        listed = ", ".join(sorted(have)) or "none"
        raise ValueError(f"{source}: no samples in split {', '.join(map(repr, absent))} (splits present: {listed})")


def canonical_split(name: str) -> str:
    """Map the usual spellings of a split name to ``train`` / ``val`` / ``test`` (others returned as is)."""
    low = name.strip().lower()
    if low in ("validation", "valid", "dev"):
        return "val"
    return low


def load_json(path: Path, what: str) -> Any:
    """Read a JSON file; ``FileNotFoundError`` / ``ValueError`` name the file and ``what`` was expected."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected {what})")
    try:
        with path.open("r", encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); expected {what}") from exc


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder (expected {what})")
    return path


class FolderListing:
    """Answers "does this file exist?" by listing each folder once and caching the names."""

    def __init__(self) -> None:
        self._names: dict[Path, frozenset[str]] = {}

    def names(self, folder: Path) -> frozenset[str]:
        cached = self._names.get(folder)
        if cached is None:
            try:
                with os.scandir(folder) as it:
                    cached = frozenset(entry.name for entry in it)
            except (FileNotFoundError, NotADirectoryError):
                cached = frozenset()
            self._names[folder] = cached
        return cached

    def exists(self, path: Path) -> bool:
        return path.name in self.names(path.parent)

    def find_stem(self, folder: Path, stem: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> Path | None:
        """The first ``folder/<stem><ext>`` that exists, trying ``extensions`` in order (either case)."""
        names = self.names(folder)
        for ext in extensions:
            for candidate in (stem + ext, stem + ext.upper()):
                if candidate in names:
                    return folder / candidate
        return None


def check_policy(policy: str) -> None:
    if policy not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {policy!r}")


def report_missing(
    source: str,
    missing: list[tuple[str, Path]],
    total: int,
    policy: MissingPolicy,
    expected: str,
    unit: str = "images",
) -> None:
    """Raise or log after a reader found ``missing`` ``(image_id, path)`` pairs out of ``total`` samples."""
    check_policy(policy)
    if not missing:
        return
    example = ", ".join(str(p) for _, p in missing[:3])
    msg = f"{source}: {len(missing)} of {total} {unit} are missing (e.g. {example}); expected them {expected}"
    if policy == "error":
        raise FileNotFoundError(
            msg + ". Pass on_missing='skip' to drop those samples, or require_images=False to keep them unchecked"
        )
    logger.warning("%s; skipping those samples", msg)


def holdout_member(image_id: str, fraction: float) -> bool:
    """Whether ``image_id`` falls in a stable hold-out ``fraction`` of a dataset (a hash of the id, so the same
    images are held out whatever the order, the machine or the other images). Training (``holdout_fraction``)
    and evaluation (``--holdout``) use this one rule to keep the two sides apart."""
    if fraction <= 0:
        return False
    digest = hashlib.sha1(image_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def prettify_class_name(name: str) -> str:
    """Turn a class folder name into words for a prompt: ``AnnualCrop`` -> ``annual crop``,
    ``storage_tanks`` -> ``storage tanks``, ``golf-course`` -> ``golf course``."""
    spaced = _CAMEL.sub(" ", name.replace("_", " ").replace("-", " "))
    return " ".join(spaced.lower().split())


def copy_sample(sample: S) -> S:
    """A copy whose ``captions`` list and ``meta`` dict can be changed without touching the reader's copy."""
    out = dict(sample)
    out["captions"] = list(sample["captions"])
    out["meta"] = dict(sample["meta"])
    return out  # type: ignore[return-value]


class SampleList(Sequence[S]):
    """A read-only list of samples built once at construction (cheap: paths and captions, no pixels).

    ``reader[i]`` returns a fresh copy, so callers may mutate a sample (e.g. attach a decoded image).
    """

    def __init__(self, samples: list[S], source: str) -> None:
        self._samples: list[S] = samples
        self.source = source

    def __len__(self) -> int:
        return len(self._samples)

    @overload
    def __getitem__(self, index: int) -> S: ...

    @overload
    def __getitem__(self, index: slice) -> list[S]: ...

    def __getitem__(self, index: int | slice) -> S | list[S]:
        if isinstance(index, slice):
            return [copy_sample(s) for s in self._samples[index]]
        return copy_sample(self._samples[index])

    def __iter__(self) -> Iterator[S]:
        for s in self._samples:
            yield copy_sample(s)

    @property
    def splits(self) -> list[str]:
        """The split names present, sorted."""
        return sorted({s["split"] for s in self._samples if s["split"] is not None})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, {len(self)} samples)"
