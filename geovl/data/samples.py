"""Sample dictionaries shared by every dataset reader.

Every reader yields plain dicts with a fixed set of keys, so training, evaluation and indexing can consume any
source the same way. Keys that a source does not provide are present with value ``None`` (or an empty list /
dict), never missing.
"""

from __future__ import annotations

from typing import Any, TypedDict

from geovl.io.images import ImageSource


class ImageTextSample(TypedDict):
    """One image with its captions and/or class label.

    Keys:
        image_id: stable identifier unique within the dataset (usually the file name relative to the root).
        image: what :func:`geovl.io.images.load_image` accepts: a path, raw encoded bytes, a PIL image or an
            HxWx3 uint8 array.
        captions: zero or more captions (Karpathy sets have 5 per image).
        label: class name for classification sets, else ``None``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` when the source has no split.
        meta: source-specific extras (lon/lat, resolution in m/px, acquisition time, sensor, tags, ...).
    """

    image_id: str
    image: ImageSource
    captions: list[str]
    label: str | None
    split: str | None
    meta: dict[str, Any]


class ChangeCaptionSample(TypedDict):
    """A bi-temporal image pair (``image_a`` earlier, ``image_b`` later) with change captions."""

    image_id: str
    image_a: ImageSource
    image_b: ImageSource
    captions: list[str]
    changed: bool | None
    split: str | None
    meta: dict[str, Any]
