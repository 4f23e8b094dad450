"""Renderings the demo shows: the hits' footprints on a lon/lat map, class scores, an upload's caption, and GeoTIFF
label maps drawn over their scene. Pure functions of data, so they are tested without a browser."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from geovl.demo.search import HitView, encode_upload
from geovl.serving.errors import InvalidImageError, InvalidRequestError
from geovl.serving.resources import ImageInput, Resources

__all__ = ["CaptionView", "SceneView", "caption_image", "class_scores", "footprint_map", "scene_label_map"]

#: A categorical palette (tab20) for label maps, as RGB bytes.
_PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194),
    (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120), (152, 223, 138),
    (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141),
    (158, 218, 229),
], np.uint8)


def footprint_map(hits: Sequence[HitView], selected: int | None = None) -> Any:
    """A matplotlib figure of the hits' lon/lat footprints (rank labels; the selected hit highlighted), or None when
    no hit is georeferenced."""
    rings = [(h.rank, h.footprint) for h in hits if h.footprint is not None]
    if not rings:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.add_subplot()
    for rank, ring in rings:
        xs, ys = zip(*ring, strict=True)
        chosen = rank == selected
        ax.fill(xs, ys, alpha=0.45 if chosen else 0.2, color="#d62728" if chosen else "#1f77b4")
        ax.plot(xs, ys, color="#d62728" if chosen else "#1f77b4", linewidth=1.5 if chosen else 0.8)
        ax.annotate(str(rank + 1), (float(np.mean(xs[:-1])), float(np.mean(ys[:-1]))), ha="center", va="center",
                    fontsize=8)
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, linewidth=0.3)
    ax.set_title(f"footprints of {len(rings)} hits")
    fig.tight_layout()
    return fig


def parse_labels(text: str) -> list[str] | None:
    """Class names typed in the page: separated by commas or new lines; None when empty."""
    labels = [part.strip() for line in (text or "").splitlines() for part in line.split(",")]
    labels = [lab for lab in labels if lab]
    return labels or None


def class_scores(resources: Resources, image: Any, label_set: str | None, labels_text: str, *, top_k: int = 10,
                 multi_label: bool = False, threshold: float = 0.5) -> dict[str, float]:
    """``{class: score}`` of one uploaded image: softmax probabilities of the top ``top_k`` classes, or with
    ``multi_label`` every class whose own score reaches ``threshold`` (an empty dict when none does)."""
    if image is None:
        raise InvalidRequestError("upload an image to classify")
    labels = parse_labels(labels_text)
    if label_set in (None, "", "custom") and labels is None:
        raise InvalidRequestError("pick a label set or type class names separated by commas")
    result = resources.classify([ImageInput(encode_upload(image), "upload")], labels=labels,
                                label_set=None if label_set in (None, "", "custom") else label_set,
                                top_k=max(1, int(top_k)), threshold=threshold if multi_label else None)
    (prediction,) = result.predictions
    return dict(zip(prediction.labels, prediction.scores, strict=True))


@dataclass
class CaptionView:
    """An upload's caption, the captioner's name and the decoding settings used."""

    caption: str
    model: str
    decoding: dict[str, Any]

    @property
    def summary(self) -> str:
        """One Markdown line: the model and how it decoded."""
        d = self.decoding
        how = f"{d.get('method')} decoding"
        if d.get("method") == "beam":
            how = f"beam search, {d.get('beam_size')} beams"
        elif d.get("method") == "nucleus":
            how = f"nucleus sampling, top-p {d.get('top_p')}, seed {d.get('seed')}"
        return f"model `{self.model}` · {how}"


def caption_image(resources: Resources, image: Any, *, method: str | None = None, beam_size: float | None = None,
                  top_p: float | None = None, seed: float | None = None) -> CaptionView:
    """The caption of one uploaded image (:meth:`Resources.caption`); ``None`` settings keep the default.

    Raises:
        InvalidRequestError: no image, or a bad decoding setting.
        InvalidImageError: the upload is not a readable image.
        NotFoundError / ModelUnavailableError: no captioner on this server, or it cannot be loaded.
    """
    if image is None:
        raise InvalidRequestError("upload an image to caption")
    decoding = resources.decoding({"method": method, "beam_size": beam_size, "top_p": top_p, "seed": seed})
    (item,) = resources.caption([ImageInput(encode_upload(image), "upload")], decoding)
    if item.error is not None or item.caption is None:
        raise InvalidImageError(f"the upload cannot be read: {item.error}")
    return CaptionView(caption=item.caption, model=resources.captioner().name, decoding=decoding.to_dict())


@dataclass
class SceneView:
    """A GeoTIFF scene's per-chip label map drawn over the scene, its legend and the files written."""

    overlay: Image.Image
    legend: list[tuple[str, int, str]]  # (class, chips, hex colour)
    files: list[str]
    summary: str


def scene_label_map(resources: Resources, scene: str | Path, label_set: str | None, labels_text: str, *,
                    chip_size: int = 64, out_dir: Path | None = None) -> SceneView:
    """Cut an uploaded scene into chips, classify each (``geovl classify-scene``) and draw the map over the scene."""
    from geovl.io.images import ImageReadError
    from geovl.tasks.zeroshot.labelmap import classify_scene

    if scene is None:
        raise InvalidRequestError("upload a GeoTIFF scene")
    labels = parse_labels(labels_text)
    if label_set in (None, "", "custom") and labels is None:
        raise InvalidRequestError("pick a label set or type class names separated by commas")
    clf = resources.classifier(labels, None if label_set in (None, "", "custom") else label_set)
    out = Path(out_dir or tempfile.mkdtemp(prefix="geovl-demo-scene-")) / (Path(scene).stem + "_labels.tif")
    try:
        result = classify_scene(clf, scene, out, chip_size=int(chip_size))
        preview, scale = _scene_preview(scene)
    except (ImageReadError, ValueError, OSError) as exc:
        raise InvalidImageError(f"{Path(scene).name}: {exc}") from exc
    overlay = _draw(preview, np.asarray(Image.open(result.path)), int(chip_size) * scale)
    legend = [(name, result.counts[name], "#{:02x}{:02x}{:02x}".format(*_PALETTE[i % len(_PALETTE)]))
              for i, name in enumerate(result.classes) if result.counts[name]]
    summary = (f"{result.grid_shape[0]} x {result.grid_shape[1]} chips of {chip_size} px: {result.classified} "
               f"classified, {result.skipped} left as nodata")
    return SceneView(overlay=overlay, legend=legend, summary=summary,
                     files=[str(result.path), str(result.footprints), str(result.table_csv)])


def _scene_preview(scene: str | Path, max_side: int = 1024) -> tuple[Image.Image, float]:
    """The scene as RGB, at most ``max_side`` pixels a side, and its scale against the full scene."""
    from geovl.io.loading import load_image

    image = load_image(scene, max_pixels=None)
    width = image.width
    image.thumbnail((max_side, max_side))
    return image, image.width / width


def _draw(preview: Image.Image, labels: np.ndarray, cell: float, alpha: float = 0.45) -> Image.Image:
    """The class-index grid (255 = nodata; one cell per chip, ``cell`` preview pixels a side, padded past the scene
    edge) coloured and blended over the scene preview."""
    colours = _PALETTE[labels % len(_PALETTE)]
    colours[labels == 255] = 0
    size = (max(1, round(labels.shape[1] * cell)), max(1, round(labels.shape[0] * cell)))
    grid = Image.fromarray(colours).resize(size, Image.Resampling.NEAREST)
    mask = Image.fromarray(np.where(labels == 255, 0, int(255 * alpha)).astype(np.uint8)).resize(
        size, Image.Resampling.NEAREST)
    out = preview.convert("RGB").copy()
    out.paste(grid, (0, 0), mask)
    return out
