"""Change-caption pairs: LEVIR-CC and SECOND-CC (Karpathy-style JSON + before/after image folders).

LEVIR-CC layout::

    <root>/LevirCCcaptions.json                  (or another Karpathy JSON, see ``captions_json``)
    <root>/images/<split>/A/<filename>           earlier image
    <root>/images/<split>/B/<filename>           later image

SECOND-CC layout::

    <root>/SECOND-CC-AUG.json
    <root>/<split>/rgb/A|B/<filename>
    <root>/<split>/sem/A|B/<filename>            optional semantic maps (paths go into ``meta``)

The folder for an entry is its ``filepath`` when the JSON gives one, else its ``split``. A pair is
"unchanged" (``changed=False``) when the entry has ``changeflag == 0``, or, without a ``changeflag``, when
every sentence is a no-change sentence (:func:`geovl.data.change_sentences.is_no_change_sentence`).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

from geovl.data.change_sentences import is_no_change_sentence
from geovl.data.common import (
    FolderListing,
    MissingPolicy,
    PathLike,
    SampleList,
    SplitArg,
    check_policy,
    check_splits_present,
    report_missing,
    split_set,
)
from geovl.data.karpathy import KarpathyEntry, parse_karpathy_json
from geovl.data.samples import ChangeCaptionSample

__all__ = ["LevirCCReader", "SecondCCReader"]


def _changed(entry: KarpathyEntry) -> bool | None:
    flag = entry.extra.get("changeflag")
    if flag is not None:
        return bool(int(flag))
    if not entry.captions:
        return None
    return not all(is_no_change_sentence(c) for c in entry.captions)


def _find_json(root: Path, candidates: list[Path], what: str) -> Path:
    for c in candidates:
        if c.is_file():
            return c
    for folder in (root, root / "captions"):
        found = sorted(folder.glob("*.json")) if folder.is_dir() else []
        found = [f for f in found if "vocab" not in f.name.lower()]
        if len(found) == 1:
            return found[0]
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"{root}: no {what} caption JSON found (looked for {looked}, or a single *.json in {root} or "
        f"{root / 'captions'}); pass captions_json="
    )


class _ChangeCaptionReader(SampleList[ChangeCaptionSample], abc.ABC):
    """Shared body of the LEVIR-CC and SECOND-CC readers; subclasses give the folder layout."""

    name = "change-caption"

    @abc.abstractmethod
    def _pair_folder(self, root: Path, folder: str) -> tuple[Path, Path]:
        """The A (before) and B (after) image folders of one split folder."""

    def _extra_paths(self, root: Path, folder: str, filename: str, listing: FolderListing) -> dict[str, Any]:
        return {}

    def _build(
        self,
        root: Path,
        json_path: Path,
        split: SplitArg,
        require_images: bool,
        on_missing: MissingPolicy,
    ) -> None:
        check_policy(on_missing)
        entries = parse_karpathy_json(json_path, f"a {self.name} caption JSON")
        wanted = split_set(split)
        check_splits_present(wanted, (e.split for e in entries), json_path.name)
        listing = FolderListing()
        samples: list[ChangeCaptionSample] = []
        missing: list[tuple[str, Path]] = []
        folders: dict[str, tuple[Path, Path]] = {}
        for e in entries:
            if wanted is not None and e.split not in wanted:
                continue
            folder = e.filepath or e.split
            if folder is None:
                raise ValueError(f"{json_path.name}: entry {e.filename} has neither 'filepath' nor 'split'")
            if folder not in folders:
                folders[folder] = self._pair_folder(root, folder)
            dir_a, dir_b = folders[folder]
            path_a, path_b = dir_a / e.filename, dir_b / e.filename
            has_images = listing.exists(path_a) and listing.exists(path_b)
            if require_images and not has_images:
                missing.append((e.filename, path_a if not listing.exists(path_a) else path_b))
                continue
            meta: dict[str, Any] = dict(e.extra)
            meta["tokens"] = e.tokens
            meta["has_images"] = has_images
            meta.update(self._extra_paths(root, folder, e.filename, listing))
            samples.append(
                ChangeCaptionSample(
                    image_id=f"{folder}/{e.filename}",
                    image_a=str(path_a),
                    image_b=str(path_b),
                    captions=e.captions,
                    changed=_changed(e),
                    split=e.split,
                    meta=meta,
                )
            )
        report_missing(
            json_path.name,
            missing,
            len(samples) + len(missing),
            on_missing,
            f"under {root}",
            unit="image pairs (A or B)",
        )
        super().__init__(samples, str(json_path))
        self.root = root
        self.missing = [m[0] for m in missing]


class LevirCCReader(_ChangeCaptionReader):
    """Before/after pairs with change captions in the LEVIR-CC layout.

    Args:
        root: dataset folder holding ``images/<split>/{A,B}``.
        captions_json: the Karpathy-style caption JSON; default ``LevirCCcaptions.json`` in ``root`` or
            ``root/captions``, else the only ``*.json`` (not a vocabulary) found there.
        split: keep only this split (or splits).
        require_images: skip or reject pairs whose A or B image is missing. With ``False`` every captioned
            pair is kept (for caption-only uses such as vocabularies or reference sets), with the paths where
            the images would be and ``meta["has_images"]`` telling whether both exist.
        on_missing: with ``require_images``, raise (``"error"``) or drop and log (``"skip"``) incomplete
            pairs.

    ``image_id`` is ``<folder>/<filename>``; ``meta`` has ``tokens``, ``has_images`` and ``changeflag`` /
    ``imgid`` / ``sentids`` when the JSON gives them.
    """

    name = "LEVIR-CC"

    def __init__(
        self,
        root: PathLike,
        *,
        captions_json: PathLike | None = None,
        split: SplitArg = None,
        require_images: bool = True,
        on_missing: MissingPolicy = "error",
    ) -> None:
        root_path = Path(root)
        json_path = (
            Path(captions_json)
            if captions_json is not None
            else _find_json(
                root_path,
                [root_path / "LevirCCcaptions.json", root_path / "captions" / "LevirCCcaptions.json"],
                self.name,
            )
        )
        self._build(root_path, json_path, split, require_images, on_missing)

    def _pair_folder(self, root: Path, folder: str) -> tuple[Path, Path]:
        return root / "images" / folder / "A", root / "images" / folder / "B"


class SecondCCReader(_ChangeCaptionReader):
    """Before/after pairs with change captions in the SECOND-CC layout (``<split>/rgb/{A,B}``).

    Arguments as for :class:`LevirCCReader`; the default JSON is ``SECOND-CC-AUG.json``. When the semantic
    maps ``<split>/sem/{A,B}/<filename>`` exist, their paths are in ``meta["sem_a"]`` / ``meta["sem_b"]``
    (else ``None``).
    """

    name = "SECOND-CC"

    def __init__(
        self,
        root: PathLike,
        *,
        captions_json: PathLike | None = None,
        split: SplitArg = None,
        require_images: bool = True,
        on_missing: MissingPolicy = "error",
    ) -> None:
        root_path = Path(root)
        json_path = (
            Path(captions_json)
            if captions_json is not None
            else _find_json(root_path, [root_path / "SECOND-CC-AUG.json"], self.name)
        )
        self._build(root_path, json_path, split, require_images, on_missing)

    def _pair_folder(self, root: Path, folder: str) -> tuple[Path, Path]:
        return root / folder / "rgb" / "A", root / folder / "rgb" / "B"

    def _extra_paths(self, root: Path, folder: str, filename: str, listing: FolderListing) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for side in ("A", "B"):
            sem = root / folder / "sem" / side / filename
            out[f"sem_{side.lower()}"] = str(sem) if listing.exists(sem) else None
        return out
