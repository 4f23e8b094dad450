"""The demo's search: text, image and "more like this" queries over a gallery, as plain data the UI renders.

Queries are embedded through the shared :class:`~geovl.serving.resources.Resources` (text under its lock, images
through the decode mapper and the micro-batcher), then searched with the gallery's
:class:`~geovl.index.search.Searcher`. Every method raises :class:`~geovl.serving.errors.ServiceError` subclasses
for bad input, which the UI shows as a message.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from geovl.demo.gallery import Gallery, load_vectors
from geovl.serving.errors import InvalidRequestError, NotFoundError
from geovl.serving.resources import ImageInput, Resources

__all__ = ["COLUMN_LABELS", "SHOWN_COLUMNS", "DemoSearch", "HitView", "SearchView", "encode_upload", "hit_image"]

#: Metadata columns shown under a hit, in this order, when present. ``generated_caption`` is where
#: ``geovl caption --attach-to`` puts a caption when the row already had one in ``caption``.
SHOWN_COLUMNS = ("label", "caption", "generated_caption", "split", "acquired", "sensor", "gsd")
#: How a column is named in the page, where not by its own name.
COLUMN_LABELS = {"generated_caption": "generated caption"}


@dataclass
class HitView:
    """One hit as the page shows it."""

    id: int
    score: float
    rank: int
    path: str | None
    label: str | None
    caption: str | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """The gallery caption: the label (or caption) first, where a glance finds it, then score and file name."""
        name = Path(self.path).name if self.path else f"#{self.id}"
        what = self.label or self.caption or ""
        return (f"{what} · " if what else "") + f"{self.score:.3f} · {name}"

    @property
    def footprint(self) -> list[tuple[float, float]] | None:
        """The lon/lat ring of the hit's bounds, when the collection is georeferenced."""
        m = self.metadata
        if all(m.get(k) is not None for k in ("lon_min", "lat_min", "lon_max", "lat_max")):
            w, s, e, n = (float(m[k]) for k in ("lon_min", "lat_min", "lon_max", "lat_max"))
            return [(w, s), (e, s), (e, n), (w, n), (w, s)]
        return None


@dataclass
class SearchView:
    """What one search returns: the hits, the query embedding (for heat maps) and how long it took."""

    hits: list[HitView]
    query: np.ndarray
    latency_ms: float
    kind: str  # "text", "image" or "similar"
    text: str | None = None

    @property
    def latency_text(self) -> str:
        return f"{len(self.hits)} hits in {self.latency_ms:.0f} ms ({self.kind} query)"


def _hit_view(hit: Any) -> HitView:
    meta = {k: v for k, v in hit.metadata.items() if k != "geometry"}
    label = meta.get("label")
    caption = meta.get("caption")
    return HitView(id=int(hit.id), score=float(hit.score), rank=int(hit.rank), path=meta.get("path"),
                   label=str(label) if label is not None else None,
                   caption=str(caption) if caption is not None else None, metadata=meta)


_CHIP_ID = re.compile(r"_r(\d+)_c(\d+)$")


def hit_image(hit: HitView, max_side: int = 512) -> Image.Image:
    """The hit's pixels as an RGB image: the file, or the chip's window of a GeoTIFF scene.

    Raises:
        NotFoundError: the image file is gone.
    """
    from geovl.io.loading import load_image

    if hit.path is None or not Path(hit.path).exists():
        raise NotFoundError(f"the image of hit {hit.id} ({hit.path}) is no longer on disk")
    chip = _CHIP_ID.search(str(hit.metadata.get("chip_id") or ""))
    if chip is not None and hit.metadata.get("width"):
        from geovl.io.chips import ChipReader

        size = int(hit.metadata["width"])
        read = ChipReader(hit.path, size=size, min_valid_fraction=0.0).read(int(chip[1]), int(chip[2]))
        image = Image.fromarray(read.image[:, :, :3]) if read is not None else load_image(hit.path)
    else:
        image = load_image(hit.path)
    image.thumbnail((max_side, max_side))
    return image


class DemoSearch:
    """Searches over one gallery with one set of resources.

    Args:
        resources: the loaded model and micro-batcher (started by the caller).
        gallery: an embedded, indexed gallery (:func:`~geovl.demo.gallery.open_gallery`).
    """

    def __init__(self, resources: Resources, gallery: Gallery) -> None:
        from geovl.index.search import Searcher

        self.resources = resources
        self.gallery = gallery
        self.searcher = Searcher(gallery.index_dir, backbone=resources.backbone)
        self._ids, self._vectors = load_vectors(gallery)
        self.columns = [c for c in self.searcher.metadata.columns if c not in ("id", "geometry")]

    def __len__(self) -> int:
        return len(self.searcher)

    @property
    def georeferenced(self) -> bool:
        return "lon_min" in self.columns

    @property
    def timed(self) -> bool:
        return "acquired" in self.columns

    def filters(self, bbox: str | None = "", start: str | None = "", end: str | None = "",
                where: str | None = "") -> Any:
        """Filters from the page's text fields (empty fields are ignored; ``where`` holds conditions separated by
        ``;``, e.g. ``label = Forest; split = test``)."""
        conditions = [c.strip() for c in (where or "").split(";") if c.strip()]
        # a hidden field (no georeferenced / dated images) sends None
        return self.resources.parse_filters(bbox=(bbox or "").strip() or None, start=(start or "").strip() or None,
                                            end=(end or "").strip() or None, where=conditions or None)

    def _run(self, query: np.ndarray, k: int, filters: Any, kind: str, started: float, text: str | None = None,
             exclude: list[int] | None = None) -> SearchView:
        self.resources.check_top_k(int(k), "k")
        try:
            hits = self.searcher.search(query, int(k), None if filters.is_empty else filters, exclude_ids=exclude)
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequestError(str(exc)) from exc
        views = [_hit_view(h) for h in hits]
        return SearchView(hits=views, query=query, latency_ms=(time.perf_counter() - started) * 1000, kind=kind,
                          text=text)

    def text(self, query: str, k: int = 12, filters: Any = None) -> SearchView:
        """Images matching a plain-language description."""
        started = time.perf_counter()
        text = (query or "").strip()
        if not text:
            raise InvalidRequestError("type what to look for, e.g. 'a river crossing farmland'")
        self.resources.check_text(text, "query")
        vector = self.resources.embed_texts([text])[0]
        return self._run(vector, k, filters or self.filters(), "text", started, text=text)

    def image(self, image: Any, k: int = 12, filters: Any = None) -> SearchView:
        """Images that look like an uploaded one (path, bytes, PIL image or array)."""
        started = time.perf_counter()
        if image is None:
            raise InvalidRequestError("upload an image to search with")
        data = encode_upload(image)
        self.resources.check_image_size(len(data), 0, "upload")
        decoded = self.resources.decode([ImageInput(data, "upload")])
        (result,) = [f.result() for f in self.resources.submit(decoded.pixels)]
        return self._run(result.embedding, k, filters or self.filters(), "image", started)

    def similar(self, hit_id: int, k: int = 12, filters: Any = None) -> SearchView:
        """More like this: the stored embedding of a hit as the query, the hit itself excluded."""
        started = time.perf_counter()
        pos = int(np.searchsorted(self._ids, hit_id))
        if pos >= len(self._ids) or self._ids[pos] != hit_id:
            raise NotFoundError(f"image {hit_id} is not in the gallery")
        return self._run(self._vectors[pos], k, filters or self.filters(), "similar", started,
                         exclude=[int(hit_id)])


def encode_upload(image: Any) -> bytes:
    """Encoded bytes of an upload: a path is read, an array or PIL image is PNG-encoded."""
    import io

    if isinstance(image, bytes):
        return image
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()
