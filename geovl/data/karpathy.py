"""Karpathy-style caption JSON (UCM-Captions, RSICD, Sydney-Captions, NWPU-Captions).

Layout::

    <root>/dataset.json     {"images": [{"filename", "split", "sentences": [{"raw", "tokens"}, ...],
                                         optional "filepath", "imgid", "sentids"}, ...]}
    <root>/images/<filepath>/<filename>
    <root>/classes.csv      optional "filename,class" (UCM ships one): becomes the sample label
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geovl.data.common import (
    FolderListing,
    MissingPolicy,
    PathLike,
    SampleList,
    SplitArg,
    check_splits_present,
    clean_caption,
    load_json,
    report_missing,
    split_set,
)
from geovl.data.samples import ImageTextSample

__all__ = ["KarpathyEntry", "KarpathyReader", "parse_karpathy_json", "read_classes_csv"]


@dataclass(frozen=True)
class KarpathyEntry:
    """One validated entry of a Karpathy JSON (shared by the caption and change-caption readers)."""

    filename: str
    filepath: str | None
    split: str | None
    captions: list[str]
    tokens: list[list[str]]
    extra: dict[str, Any]

    @property
    def relpath(self) -> str:
        """``filepath/filename`` (or just ``filename``), with forward slashes."""
        return f"{self.filepath.strip('/')}/{self.filename}" if self.filepath else self.filename


def _sentence_text(sent: Any, where: str) -> tuple[str, list[str]]:
    if not isinstance(sent, dict):
        raise ValueError(f"{where} is not an object with 'raw' / 'tokens' (got {type(sent).__name__})")
    tokens = sent.get("tokens")
    if tokens is not None and not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
        raise ValueError(f"{where}: 'tokens' must be a list of strings")
    raw = sent.get("raw")
    if isinstance(raw, str) and raw.strip():
        return clean_caption(raw), list(tokens or [])
    if tokens:
        # Some conversions keep only tokens; fall back to joining them rather than losing the sentence.
        return " ".join(tokens), list(tokens)
    raise ValueError(f"{where} has neither a non-empty 'raw' string nor 'tokens'")


def parse_karpathy_json(path: Path, what: str = "a Karpathy caption JSON") -> list[KarpathyEntry]:
    """Read and validate ``{"images": [...]}``; every problem names the file and the entry index."""
    data = load_json(path, f"{what} with an 'images' list")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(
            f"{path.name}: expected an object with an 'images' list ({what}), got {type(data).__name__}"
            + (f" with keys {sorted(data)[:8]}" if isinstance(data, dict) else "")
        )
    entries: list[KarpathyEntry] = []
    for i, img in enumerate(data["images"]):
        where = f"{path.name}: image {i}"
        if not isinstance(img, dict):
            raise ValueError(f"{where} is not an object")
        filename = img.get("filename")
        if not isinstance(filename, str) or not filename:
            raise ValueError(f"{where} has no 'filename'")
        sentences = img.get("sentences")
        if not isinstance(sentences, list):
            raise ValueError(f"{where} ({filename}) has no 'sentences' list")
        captions: list[str] = []
        tokens: list[list[str]] = []
        for j, sent in enumerate(sentences):
            text, toks = _sentence_text(sent, f"{where} ({filename}) sentence {j}")
            captions.append(text)
            tokens.append(toks)
        split = img.get("split")
        if split is not None and not isinstance(split, str):
            raise ValueError(f"{where} ({filename}): 'split' must be a string, got {split!r}")
        filepath = img.get("filepath")
        if filepath is not None and not isinstance(filepath, str):
            raise ValueError(f"{where} ({filename}): 'filepath' must be a string, got {filepath!r}")
        extra = {k: img[k] for k in ("imgid", "sentids", "changeflag", "gsd", "resolution_m") if k in img}
        entries.append(KarpathyEntry(filename, filepath or None, split, captions, tokens, extra))
    return entries


def read_classes_csv(path: Path) -> dict[str, str]:
    """``filename,class`` rows -> ``{filename: class}``."""
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if "filename" not in fields or "class" not in fields:
            raise ValueError(f"{path.name}: expected columns 'filename,class', found {','.join(fields) or 'none'}")
        mapping: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            name, cls = (row.get("filename") or "").strip(), (row.get("class") or "").strip()
            if not name or not cls:
                raise ValueError(f"{path.name}: line {line} has an empty filename or class")
            mapping[name] = cls
    return mapping


class KarpathyReader(SampleList[ImageTextSample]):
    """Image-caption pairs from a Karpathy-style ``dataset.json``.

    Args:
        path: the JSON file, or the folder holding ``dataset.json``.
        image_root: folder the ``filename`` (or ``filepath/filename``) entries are relative to; default
            ``images/`` next to the JSON.
        split: keep only this split (or these splits); a split absent from the file raises ``ValueError``.
        classes_csv: ``filename,class`` table giving each image a label; default ``classes.csv`` next to the
            JSON when it exists.
        require_images: check that every image file exists (one folder listing, no decoding).
        on_missing: with ``require_images``, raise (``"error"``) or drop and log (``"skip"``) missing images.

    Samples: ``image_id`` is ``filepath/filename``; ``image`` is its path; ``captions`` are the ``raw``
    sentences stripped with whitespace collapsed (punctuation kept); ``label`` comes from ``classes_csv``;
    ``meta`` has ``imgid`` / ``sentids`` / ``gsd`` / ``resolution_m`` (metres per pixel) when present and
    ``tokens`` (one list per caption).
    """

    def __init__(
        self,
        path: PathLike,
        *,
        image_root: PathLike | None = None,
        split: SplitArg = None,
        classes_csv: PathLike | None = None,
        require_images: bool = True,
        on_missing: MissingPolicy = "error",
    ) -> None:
        json_path = Path(path)
        if json_path.is_dir():
            json_path = json_path / "dataset.json"
        entries = parse_karpathy_json(json_path)
        root = Path(image_root) if image_root is not None else json_path.parent / "images"
        if classes_csv is None and (json_path.parent / "classes.csv").is_file():
            classes_csv = json_path.parent / "classes.csv"
        labels = read_classes_csv(Path(classes_csv)) if classes_csv is not None else {}

        wanted = split_set(split)
        check_splits_present(wanted, (e.split for e in entries), json_path.name)
        listing = FolderListing()
        samples: list[ImageTextSample] = []
        missing: list[tuple[str, Path]] = []
        for e in entries:
            if wanted is not None and e.split not in wanted:
                continue
            image = root / e.relpath
            if require_images and not listing.exists(image):
                missing.append((e.relpath, image))
                continue
            meta: dict[str, Any] = dict(e.extra)
            meta["tokens"] = e.tokens
            samples.append(
                ImageTextSample(
                    image_id=e.relpath,
                    image=str(image),
                    captions=e.captions,
                    label=labels.get(e.filename),
                    split=e.split,
                    meta=meta,
                )
            )
        report_missing(json_path.name, missing, len(samples) + len(missing), on_missing, f"under {root}")
        super().__init__(samples, str(json_path))
        self.image_root = root
        self.missing = [m[0] for m in missing]
        self.classes: list[str] = sorted(set(labels.values()))
