"""COCO-style caption annotations, with captions grouped per image.

Layout::

    captions.json   {"images": [{"id", "file_name", optional "split", "width", "height"}],
                     "annotations": [{"image_id", "caption"}, ...]}
    <image_root>/<file_name>
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
    check_policy,
    check_splits_present,
    clean_caption,
    load_json,
    report_missing,
    split_set,
)
from geovl.data.samples import ImageTextSample

__all__ = ["CocoReader"]


class CocoReader(SampleList[ImageTextSample]):
    """Image-caption samples from a COCO caption JSON, one sample per image with all its captions.

    Args:
        path: the annotation JSON.
        image_root: folder ``file_name`` is relative to; default ``images/`` next to the JSON when that folder
            exists, else the JSON's own folder.
        split: when image entries carry a ``split`` field, keep only that split (or splits). When none do, the
            file is taken to be one split and every sample is tagged with ``split`` (COCO ships one file per
            split).
        require_images, on_missing: as for :class:`geovl.data.KarpathyReader`.

    Samples keep the file's image order; images without any caption are kept with ``captions == []``.
    ``meta`` has ``coco_id`` and, when present, ``width`` / ``height``.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        image_root: PathLike | None = None,
        split: SplitArg = None,
        require_images: bool = True,
        on_missing: MissingPolicy = "error",
    ) -> None:
        check_policy(on_missing)
        json_path = Path(path)
        name = json_path.name
        images, captions = _parse_coco(json_path)
        wanted = split_set(split)
        has_split_field, tag = _split_tag(images, wanted, name)
        root = Path(image_root) if image_root is not None else _default_image_root(json_path)
        listing = FolderListing()
        samples: list[ImageTextSample] = []
        missing: list[tuple[str, Path]] = []
        for img in images:
            img_split = img.get("split") if has_split_field else tag
            if has_split_field and wanted is not None and img_split not in wanted:
                continue
            rel = img["file_name"]
            image = root / rel
            if require_images and not listing.exists(image):
                missing.append((rel, image))
                continue
            meta: dict[str, Any] = {"coco_id": img["id"]}
            meta.update({k: img[k] for k in ("width", "height") if k in img})
            samples.append(
                ImageTextSample(
                    image_id=rel,
                    image=str(image),
                    captions=captions[img["id"]],
                    label=None,
                    split=img_split,
                    meta=meta,
                )
            )
        report_missing(name, missing, len(samples) + len(missing), on_missing, f"under {root}")
        super().__init__(samples, str(json_path))
        self.image_root = root
        self.missing = [m[0] for m in missing]


def _parse_coco(json_path: Path) -> tuple[list[dict[str, Any]], dict[Any, list[str]]]:
    """The image entries of a COCO caption JSON and the cleaned captions of each image id."""
    name = json_path.name
    data = load_json(json_path, "a COCO caption JSON with 'images' and 'annotations'")
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected an object with 'images' and 'annotations', got {type(data).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{name}: no '{key}' list (keys found: {', '.join(sorted(data)) or 'none'})")
    images, captions = _parse_images(data["images"], name)
    _add_captions(data["annotations"], captions, name)
    return images, captions


def _parse_images(entries: list[Any], name: str) -> tuple[list[dict[str, Any]], dict[Any, list[str]]]:
    """Checked image entries, and an empty caption list per image id."""
    images: list[dict[str, Any]] = []
    captions: dict[Any, list[str]] = {}
    for i, img in enumerate(entries):
        if not isinstance(img, dict) or "id" not in img:
            raise ValueError(f"{name}: image {i} has no 'id'")
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            raise ValueError(f"{name}: image {i} (id {img['id']!r}) has no 'file_name'")
        if img["id"] in captions:
            raise ValueError(f"{name}: image {i} repeats id {img['id']!r}")
        captions[img["id"]] = []
        images.append(img)
    return images, captions


def _add_captions(annotations: list[Any], captions: dict[Any, list[str]], name: str) -> None:
    """Append each annotation's cleaned, non-blank caption to its image's list."""
    for j, ann in enumerate(annotations):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise ValueError(f"{name}: annotation {j} has no 'image_id'")
        text = ann.get("caption")
        if not isinstance(text, str):
            raise ValueError(f"{name}: annotation {j} has no 'caption' string")
        if ann["image_id"] not in captions:
            raise ValueError(
                f"{name}: annotation {j} refers to image_id {ann['image_id']!r}, which is not in 'images'"
            )
        if text.strip():
            captions[ann["image_id"]].append(clean_caption(text))


def _split_tag(images: list[dict[str, Any]], wanted: frozenset[str] | None, name: str) -> tuple[bool, str | None]:
    """Whether the images carry ``split`` fields, and else the one split name to tag every sample with."""
    has_split_field = any("split" in img for img in images)
    if has_split_field:
        check_splits_present(wanted, (img.get("split") for img in images), name)
    elif wanted is not None and len(wanted) != 1:
        raise ValueError(f"{name}: the file has no 'split' fields, so split= must be one name to tag it with")
    tag = next(iter(wanted)) if wanted is not None and not has_split_field else None
    return has_split_field, tag


def _default_image_root(json_path: Path) -> Path:
    """``images/`` next to the JSON when that folder exists, else the JSON's own folder."""
    return json_path.parent / "images" if (json_path.parent / "images").is_dir() else json_path.parent
