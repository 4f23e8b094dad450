"""Why an image matches a query: a map of the query's similarity over the image, and a heat-map overlay of it.

Two methods, chosen by :func:`similarity_map`:

* ``"patch"`` (used whenever the image tower supports it): the cosine similarity between the query and each patch
  embedding (:meth:`geovl.models.Backbone.patch_embeddings`), on the tower's patch grid.
* ``"occlusion"`` (any tower): the image is cut into a ``grid`` x ``grid`` grid of cells; each cell in turn is
  painted mid grey (RGB 128) in the model's input, all the occluded copies and the original are embedded in one
  forward pass, and a cell's score is the drop in cosine similarity to the query when it is hidden (positive: the
  cell supports the match). It costs ``grid**2 + 1`` image embeddings.

Both maps cover the part of the image the model sees (its centre square for ``resize_mode="shortest"``);
:attr:`SimilarityMap.box` says where that is, and :func:`overlay` draws the map there only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from geovl.io.images import ImageSource
from geovl.io.loading import load_image
from geovl.models.backbone import Backbone
from geovl.models.registry import Preprocess

__all__ = ["METHODS", "OCCLUSION_GREY", "SimilarityMap", "model_view_box", "occlusion_scores", "overlay",
           "similarity_map"]

METHODS = ("auto", "patch", "occlusion")
#: uint8 value occluded cells are painted with.
OCCLUSION_GREY = 128

Box = tuple[float, float, float, float]
#: A map whose range is below this fraction of its magnitude is drawn as flat.
_FLAT = 1e-6


@dataclass
class SimilarityMap:
    """A query's similarity over an image.

    Attributes:
        scores: (h, w) float32. ``"patch"``: cosine similarity of each patch to the query, in [-1, 1].
            ``"occlusion"``: drop in cosine similarity when the cell is hidden.
        method: ``"patch"`` or ``"occlusion"``.
        box: (left, top, right, bottom) in pixels of the original image: the region the grid covers (the model's
            view; it may reach past the image edges for ``resize_mode="longest"``).
    """

    scores: np.ndarray
    method: str
    box: Box


def model_view_box(size: tuple[int, int], preprocess: Preprocess) -> Box:
    """(left, top, right, bottom) of the region of a ``size`` = (width, height) image that the model's input shows,
    to within a pixel: the centre square for ``"shortest"``, the whole image for ``"squash"``, the image padded to a
    square for ``"longest"``."""
    width, height = size
    if preprocess.resize_mode == "squash":
        return (0.0, 0.0, float(width), float(height))
    if preprocess.resize_mode not in ("shortest", "longest"):
        raise ValueError(f"unknown resize_mode {preprocess.resize_mode!r}")
    side = min(width, height) if preprocess.resize_mode == "shortest" else max(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def _query_vector(query: Any, dim: int) -> torch.Tensor:
    if isinstance(query, torch.Tensor):
        query = query.detach().float().cpu().numpy()
    q = np.asarray(query, dtype=np.float32)
    if q.ndim == 2 and q.shape[0] == 1:
        q = q[0]
    if q.shape != (dim,):
        raise ValueError(f"query_embedding must be a vector of this backbone's dimension {dim}, got shape {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError("query_embedding holds NaN or infinite values")
    norm = float(np.linalg.norm(q))
    if norm == 0.0:
        raise ValueError("query_embedding is the zero vector: it has no direction to compare with")
    return torch.from_numpy(q / norm)


def _patch_scores(backbone: Backbone, pixels: torch.Tensor, query: torch.Tensor) -> np.ndarray:
    patches = backbone.patch_embeddings(pixels, normalize=True)[0]
    return (patches @ query.to(patches.device)).cpu().numpy()


def occlusion_scores(backbone: Backbone, pixels: torch.Tensor, query: torch.Tensor, grid: int = 8) -> np.ndarray:
    """(grid, grid) drop in cosine similarity to the unit vector ``query`` when each cell of the (1, 3, S, S) uint8
    input ``pixels`` is painted :data:`OCCLUSION_GREY`; cell edges are the rounded multiples of S / grid."""
    height, width = pixels.shape[-2:]
    if not 1 <= grid <= min(height, width):
        raise ValueError(f"grid must be between 1 and the input size {min(height, width)}, got {grid}")
    rows = np.linspace(0, height, grid + 1).round().astype(int)
    cols = np.linspace(0, width, grid + 1).round().astype(int)
    batch = pixels.repeat(grid * grid + 1, 1, 1, 1)
    for k in range(grid * grid):
        i, j = divmod(k, grid)
        batch[k + 1, :, rows[i] : rows[i + 1], cols[j] : cols[j + 1]] = OCCLUSION_GREY
    sims = backbone.embed_pixels(batch) @ query.to(backbone.device)
    return (sims[0] - sims[1:]).reshape(grid, grid).cpu().numpy()


def similarity_map(
    backbone: Backbone,
    image: ImageSource,
    query_embedding: Any,
    *,
    method: Literal["auto", "patch", "occlusion"] = "auto",
    grid: int = 8,
) -> SimilarityMap:
    """Map the similarity of ``query_embedding`` (a (D,) text or image embedding, any scale) over ``image``.

    Args:
        backbone: the backbone that made the query embedding.
        image: anything :func:`geovl.io.loading.load_image` accepts (path, bytes, PIL image, array).
        method: ``"auto"`` (patch embeddings when the tower supports them, else occlusion), ``"patch"`` or
            ``"occlusion"`` (see the module docstring).
        grid: cells per side for occlusion.

    Raises:
        ValueError: a query of the wrong dimension, zero or not finite; an unknown method; ``"patch"`` for a tower
            without patch embeddings; a bad grid.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    query = _query_vector(query_embedding, backbone.embed_dim)
    picture = load_image(image)
    pixels = backbone.uint8_transform(picture).unsqueeze(0)
    use_patch = method == "patch" or (method == "auto" and backbone.supports_patch_embeddings)
    scores = _patch_scores(backbone, pixels, query) if use_patch else occlusion_scores(backbone, pixels, query, grid)
    box = model_view_box(picture.size, backbone.preprocess)
    return SimilarityMap(scores.astype(np.float32), "patch" if use_patch else "occlusion", box)


def _paste(scores: np.ndarray, box: Box, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``scores`` upsampled (bilinear) onto ``box`` of a ``size`` = (width, height) canvas: (values, covered mask)."""
    width, height = size
    left, top = round(box[0]), round(box[1])
    box_w, box_h = max(1, round(box[2]) - left), max(1, round(box[3]) - top)
    grid = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))[None, None]
    up = F.interpolate(grid, size=(box_h, box_w), mode="bilinear", align_corners=False)[0, 0].numpy()
    values, mask = np.zeros((height, width), np.float32), np.zeros((height, width), bool)
    x0, x1, y0, y1 = max(left, 0), min(left + box_w, width), max(top, 0), min(top + box_h, height)
    if x0 < x1 and y0 < y1:
        values[y0:y1, x0:x1] = up[y0 - top : y1 - top, x0 - left : x1 - left]
        mask[y0:y1, x0:x1] = True
    return values, mask


def overlay(
    image: ImageSource, scores: np.ndarray | SimilarityMap, alpha: float = 0.5, *, cmap: str = "inferno"
) -> Image.Image:
    """Draw ``scores`` over ``image`` as a heat map: upsampled (bilinear) to the image, scaled to [0, 1] between
    its lowest and highest value in the image (a constant map draws as the colormap's low end), coloured with
    ``cmap`` (a matplotlib colormap name) and blended with weight ``alpha``.

    A :class:`SimilarityMap` is drawn over its :attr:`~SimilarityMap.box` only; a bare (h, w) array over the whole
    image. Returns an RGB image of the input's size.
    """
    from matplotlib import colormaps

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if cmap not in colormaps:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}")
    picture = load_image(image)
    values = scores.scores if isinstance(scores, SimilarityMap) else np.asarray(scores, dtype=np.float32)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"scores must be a non-empty (h, w) array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("scores hold NaN or infinite values")
    whole: Box = (0.0, 0.0, float(picture.width), float(picture.height))
    box = scores.box if isinstance(scores, SimilarityMap) else whole
    heat, mask = _paste(values, box, picture.size)
    low, high = (float(heat[mask].min()), float(heat[mask].max())) if mask.any() else (0.0, 0.0)
    flat = high - low <= _FLAT * max(abs(low), abs(high))  # only float rounding of the upsampling varies
    level = np.zeros_like(heat) if flat else np.clip((heat - low) / (high - low), 0.0, 1.0)
    colours = colormaps[cmap](level)[..., :3]
    rgb = np.asarray(picture, dtype=np.float64) / 255.0
    blended = np.where(mask[..., None], (1.0 - alpha) * rgb + alpha * colours, rgb)
    return Image.fromarray(np.round(blended * 255.0).astype(np.uint8))
