"""GAIA split JSON files with the images downloaded into one folder, named by record id.

Layout::

    <root>/train_data.json, test_data.json, validation_data.json   (the split is read from the file name)
        [{"id", "image_src", "image_alt", "captions": [5 strings], "credits", "location", "lat", "lon",
          "tag", "resolution", "satellite", "sensor", "modalities"}, ...]
    <image_dir>/<id>.png|jpg|...

GAIA as img2dataset webdataset shards is read by :class:`geovl.data.WebDatasetReader` (format
``"gaia-wds"``), which takes the five captions from each sample's ``.json``
(``--save_additional_columns "['id','captions']"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geovl.data.common import (
    FolderListing,
    MissingPolicy,
    PathLike,
    SampleList,
    SplitArg,
    canonical_split,
    check_policy,
    check_splits_present,
    clean_caption,
    load_json,
    report_missing,
    split_set,
)
from geovl.data.samples import ImageTextSample

__all__ = ["GAIA_META_FIELDS", "GaiaReader", "split_from_filename"]

#: Record fields copied into ``meta`` (``None`` when a record lacks one).
GAIA_META_FIELDS = (
    "image_src",
    "image_alt",
    "credits",
    "location",
    "lat",
    "lon",
    "tag",
    "resolution",
    "satellite",
    "sensor",
    "modalities",
)


def split_from_filename(path: Path) -> str | None:
    """``train_data.json`` -> ``train``, ``validation_data.json`` -> ``val``, ``test.json`` -> ``test``."""
    stem = path.stem.lower()
    for token in ("train", "validation", "valid", "val", "test"):
        if token in stem:
            return canonical_split(token)
    return None


def _json_files(path: Path) -> list[Path]:
    if path.is_dir():
        rank = {"train": 0, "val": 1, "test": 2}
        files = sorted(
            (p for p in path.glob("*.json") if p.is_file()),
            key=lambda p: (rank.get(split_from_filename(p) or "", 3), p.name),
        )
        if not files:
            raise FileNotFoundError(f"{path}: no *.json split files (expected GAIA's train/test/validation JSONs)")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder (expected a GAIA split JSON or a folder of them)")
    return [path]


class GaiaReader(SampleList[ImageTextSample]):
    """Image-caption samples from GAIA split JSON files and a folder of downloaded images.

    Args:
        path: one split JSON, or a folder holding the split JSONs (``*.json``, read in the order train, val,
            test, others).
        image_dir: folder of images named ``<id>.<ext>``; default ``images/`` next to the JSON files.
        split: keep only this split (or splits); a file's split comes from its name (``train``, ``val`` for
            ``validation``, ``test``).
        require_images: check that ``<id>.<ext>`` exists (one folder listing). With ``False``, an image not
            found is given the path ``<image_dir>/<id>.png`` (img2dataset's encode format for GAIA).
        on_missing: with ``require_images``, raise (``"error"``) or drop and log (``"skip"``).

    ``image_id`` is the record ``id``; ``captions`` are its five synthetic captions; ``meta`` holds
    :data:`GAIA_META_FIELDS` (``lat`` / ``lon`` in degrees, ``resolution`` as given by the source) and the
    source file name.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        image_dir: PathLike | None = None,
        split: SplitArg = None,
        require_images: bool = True,
        on_missing: MissingPolicy = "error",
    ) -> None:
        check_policy(on_missing)
        source = Path(path)
        files = _json_files(source)
        folder = source if source.is_dir() else source.parent
        root = Path(image_dir) if image_dir is not None else folder / "images"
        wanted = split_set(split)
        check_splits_present(wanted, (split_from_filename(f) for f in files), str(source))

        listing = FolderListing()
        seen: dict[str, str] = {}
        samples: list[ImageTextSample] = []
        missing: list[tuple[str, Path]] = []
        for file in files:
            file_split = split_from_filename(file)
            if wanted is not None and file_split not in wanted:
                continue
            records = load_json(file, "a GAIA split JSON (a list of records)")
            if not isinstance(records, list):
                raise ValueError(f"{file.name}: expected a JSON list of GAIA records, got {type(records).__name__}")
            for i, rec in enumerate(records):
                where = f"{file.name}: record {i}"
                if not isinstance(rec, dict) or rec.get("id") in (None, ""):
                    raise ValueError(f"{where} has no 'id'")
                rid = str(rec["id"])
                caps = rec.get("captions")
                if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                    raise ValueError(f"{where} (id {rid}) has no 'captions' list of strings")
                if rid in seen:
                    raise ValueError(f"{where} repeats id {rid} (first seen in {seen[rid]})")
                seen[rid] = file.name
                found = listing.find_stem(root, rid)
                if found is None and require_images:
                    missing.append((rid, root / f"{rid}.<png|jpg|...>"))
                    continue
                meta: dict[str, Any] = {k: rec.get(k) for k in GAIA_META_FIELDS}
                meta.update({k: v for k, v in rec.items() if k not in meta and k not in ("id", "captions")})
                meta["source_file"] = file.name
                samples.append(
                    ImageTextSample(
                        image_id=rid,
                        image=str(found if found is not None else root / f"{rid}.png"),
                        captions=[clean_caption(c) for c in caps if c.strip()],
                        label=None,
                        split=file_split,
                        meta=meta,
                    )
                )
        report_missing(str(source), missing, len(samples) + len(missing), on_missing, f"as <id>.<ext> in {root}")
        super().__init__(samples, str(source))
        self.image_dir = root
        self.missing = [m[0] for m in missing]
