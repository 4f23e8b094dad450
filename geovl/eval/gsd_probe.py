"""A GSD probe: how many metres per pixel an image looks like, read off a backbone's image embeddings.

Rules:

* **Views.** A probe image is one tile (``tile`` x ``tile`` px). A real image of native ground sample distance
  ``g0`` becomes a view at GSD ``g >= g0`` by resizing it by ``g0 / g`` (Lanczos, as geovl's generator training
  does) and cutting the centred tile (:func:`resample_to_gsd`). A view is never enlarged: one whose GSD would be
  finer than the image's own, or whose resized short side is below a tile, is not made (an enlarged image has the
  pixel size of one GSD and the detail of another).
* **Probe.** Ridge regression (closed form, unpenalised intercept) from the backbone's L2-normalised image
  embeddings to ``log2(GSD)``. Its penalty is chosen from :data:`ALPHAS` by the squared error on a seeded quarter of
  the training scenes (grouped), then the probe is fitted on all training scenes.
* **Held-out quality.** The views are split by scene (``group``: every view of one real image falls on the same
  side), seeded: ``test_fraction`` of the scenes (at least one) are held out. The probe is fitted on the rest and
  measured on them: R^2 of ``log2(GSD)`` and the mean absolute error in log2 units (1.0 = off by a factor 2).
  The probe that is returned is that one (not refitted), so its quality is the quality of the probe used.
* **Order accuracy** (:func:`order_accuracy`): the share of (coarse, fine) pairs whose coarse image is predicted
  coarser; a tie counts one half, so chance is 50 %. Paired: pair ``i`` is ``(coarse[i], fine[i])``; unpaired:
  every coarse image against every fine one (the Mann-Whitney AUC).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from geovl.io.images import ImageSource
from geovl.io.loading import load_image
from geovl.models.backbone import Backbone

__all__ = [
    "ALPHAS",
    "GsdProbe",
    "GsdSource",
    "GsdView",
    "ProbeQuality",
    "fit_gsd_probe",
    "fit_gsd_probe_embeddings",
    "order_accuracy",
    "probe_views",
    "resample_to_gsd",
    "views_at_gsd",
]

#: Ridge penalties the probe chooses from.
ALPHAS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class GsdSource:
    """A real image of known native GSD (metres per pixel); ``group`` names the scene (e.g. its image id)."""

    image: ImageSource
    gsd: float
    group: str


@dataclass(frozen=True)
class GsdView:
    """A tile-sized uint8 ``(tile, tile, 3)`` image at ``gsd`` metres per pixel, cut from scene ``group``."""

    image: np.ndarray
    gsd: float
    group: str


@dataclass(frozen=True)
class ProbeQuality:
    """How well the probe predicts ``log2(GSD)`` on held-out scenes.

    Attributes:
        r2: coefficient of determination (``None`` when the held-out views share one GSD).
        mae_log2: mean absolute error in log2 units.
        alpha: the ridge penalty chosen.
        train_views, test_views, test_scenes: counts.
        views_per_gsd: number of views (train and test) at each GSD, keyed by ``f"{gsd:g}"``.
        test_mean_log2: mean predicted ``log2(GSD)`` of the held-out views at each GSD.
    """

    r2: float | None
    mae_log2: float
    alpha: float
    train_views: int
    test_views: int
    test_scenes: int
    views_per_gsd: dict[str, int]
    test_mean_log2: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class GsdProbe:
    """A fitted linear probe ``log2(GSD) = embedding @ weights + bias``."""

    weights: np.ndarray
    bias: float
    quality: ProbeQuality

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Predicted ``log2(GSD)`` of (N, D) embeddings."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.weights.shape[0]:
            raise ValueError(f"embeddings must be (N, {self.weights.shape[0]}), got shape {x.shape}")
        return np.asarray(x @ self.weights + self.bias)

    def predict_images(self, backbone: Backbone, images: Sequence[ImageSource], *, batch_size: int = 64) -> np.ndarray:
        """Predicted ``log2(GSD)`` of images (embedded with ``backbone``, the one the probe was fitted on)."""
        return self.predict(backbone.encode_images(list(images), batch_size=batch_size))


# ------------------------------------------------------------------------------------------- views


def _check_gsd(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of metres per pixel, got {value!r}")
    return float(value)


def _view(image: Image.Image, factor: float, tile: int) -> np.ndarray | None:
    """The centred tile of ``image`` shrunk by ``factor`` (>= 1), or None when that is smaller than a tile."""
    if factor < 1 - 1e-9:
        return None
    w, h = round(image.width / factor), round(image.height / factor)
    if min(w, h) < tile:
        return None
    if (w, h) != image.size:
        image = image.resize((w, h), Image.Resampling.LANCZOS)
    left, top = (w - tile) // 2, (h - tile) // 2
    return np.asarray(image.crop((left, top, left + tile, top + tile)), dtype=np.uint8)


def resample_to_gsd(image: ImageSource, native_gsd: float, gsd: float, tile: int) -> np.ndarray | None:
    """The centred ``tile`` px view of ``image`` (native GSD ``native_gsd``) at ``gsd`` metres per pixel, or None
    when it cannot be made without enlarging (see the module rules)."""
    native, target = _check_gsd(native_gsd, "native_gsd"), _check_gsd(gsd, "gsd")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile!r}")
    return _view(load_image(image).convert("RGB"), target / native, tile)


def probe_views(sources: Sequence[GsdSource], factors: Sequence[float], tile: int) -> list[GsdView]:
    """Views of every source at its native GSD times each factor (factors whose view cannot be made are skipped
    for that source). Each image is decoded once."""
    if not factors or any(isinstance(f, bool) or not isinstance(f, (int, float)) or f < 1 for f in factors):
        raise ValueError(f"factors must be numbers >= 1 (downsampling only), got {list(factors)!r}")
    views = []
    for source in sources:
        image = load_image(source.image).convert("RGB")
        for factor in factors:
            tile_image = _view(image, float(factor), tile)
            if tile_image is not None:
                views.append(GsdView(tile_image, source.gsd * float(factor), source.group))
    return views


def views_at_gsd(sources: Sequence[GsdSource], gsd: float, tile: int) -> list[GsdView]:
    """Views at exactly ``gsd`` of the sources that can give one (native GSD at most ``gsd``, large enough)."""
    target = _check_gsd(gsd, "gsd")
    views = []
    for source in sources:
        if source.gsd <= target * (1 + 1e-9):
            tile_image = resample_to_gsd(source.image, source.gsd, target, tile)
            if tile_image is not None:
                views.append(GsdView(tile_image, target, source.group))
    return views


# ------------------------------------------------------------------------------------------- probe


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Closed-form ridge with an unpenalised intercept."""
    mx, my = x.mean(axis=0), float(y.mean())
    xc = x - mx
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - my))
    return w, my - float(mx @ w)


def _group_split(groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, test) masks holding out ``fraction`` of the distinct groups (at least one), seeded."""
    names = np.unique(groups)
    if names.size < 2:
        raise ValueError(f"the GSD probe needs views of at least 2 scenes, got {names.size}")
    order = np.random.default_rng(seed).permutation(names)
    n_test = min(names.size - 1, max(1, round(fraction * names.size)))
    test = np.isin(groups, order[:n_test])
    return ~test, test


def _choose_alpha(x: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas: Sequence[float], seed: int) -> float:
    if len(alphas) == 1 or np.unique(groups).size < 2:
        return float(alphas[0]) if len(alphas) == 1 else 1.0
    fit, val = _group_split(groups, 0.25, seed + 1)
    errors = []
    for alpha in alphas:
        w, b = _ridge(x[fit], y[fit], alpha)
        errors.append(float(np.mean((x[val] @ w + b - y[val]) ** 2)))
    return float(alphas[int(np.argmin(errors))])


def _quality(y: np.ndarray, pred: np.ndarray, gsds: np.ndarray, test: np.ndarray, alpha: float,
             groups: np.ndarray) -> ProbeQuality:
    yt, pt = y[test], pred[test]
    total = float(np.sum((yt - yt.mean()) ** 2))
    r2 = 1.0 - float(np.sum((yt - pt) ** 2)) / total if total > 1e-12 else None
    per_gsd = {f"{g:g}": int(np.sum(gsds == g)) for g in sorted(set(gsds.tolist()))}
    test_means = {f"{g:g}": float(pt[gsds[test] == g].mean()) for g in sorted(set(gsds[test].tolist()))}
    return ProbeQuality(r2=r2, mae_log2=float(np.mean(np.abs(yt - pt))), alpha=alpha, train_views=int((~test).sum()),
                        test_views=int(test.sum()), test_scenes=int(np.unique(groups[test]).size),
                        views_per_gsd=per_gsd, test_mean_log2=test_means)


def fit_gsd_probe_embeddings(embeddings: np.ndarray, gsds: Sequence[float], groups: Sequence[str], *,
                             test_fraction: float = 0.25, alphas: Sequence[float] = ALPHAS,
                             seed: int = 0) -> GsdProbe:
    """Fit the probe on (N, D) embeddings of views at ``gsds`` from scenes ``groups`` (see the module rules).

    Raises:
        ValueError: mismatched lengths, a non-positive GSD, fewer than 2 scenes or 2 distinct GSDs, a bad
            ``test_fraction`` or ``alphas``.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    g = np.asarray([_check_gsd(v, "each view's gsd") for v in gsds], dtype=np.float64)
    grp = np.asarray([str(v) for v in groups])
    if x.ndim != 2 or not len(x) == len(g) == len(grp):
        raise ValueError(f"need (N, D) embeddings with one gsd and one group each, got shape {x.shape}, "
                         f"{len(g)} gsds and {len(grp)} groups")
    if np.unique(g).size < 2:
        raise ValueError(f"the GSD probe needs views at 2 or more GSDs, got only {sorted(set(g.tolist()))}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if not alphas or any(a <= 0 for a in alphas):
        raise ValueError(f"alphas must be positive ridge penalties, got {list(alphas)!r}")
    y = np.log2(g)
    train, test = _group_split(grp, test_fraction, seed)
    alpha = _choose_alpha(x[train], y[train], grp[train], alphas, seed)
    w, b = _ridge(x[train], y[train], alpha)
    return GsdProbe(weights=w, bias=b, quality=_quality(y, x @ w + b, g, test, alpha, grp))


def fit_gsd_probe(backbone: Backbone, samples_with_gsd: Sequence[GsdView], *, test_fraction: float = 0.25,
                  alphas: Sequence[float] = ALPHAS, seed: int = 0, batch_size: int = 64,
                  progress: bool = False) -> GsdProbe:
    """Embed the views with ``backbone`` and fit the probe on them (see the module rules and
    :func:`fit_gsd_probe_embeddings`)."""
    views = list(samples_with_gsd)
    if not views:
        raise ValueError("no views to fit the GSD probe on")
    emb = backbone.encode_images([v.image for v in views], batch_size=batch_size, progress=progress)
    return fit_gsd_probe_embeddings(emb, [v.gsd for v in views], [v.group for v in views],
                                    test_fraction=test_fraction, alphas=alphas, seed=seed)


def order_accuracy(coarse: Sequence[float] | np.ndarray, fine: Sequence[float] | np.ndarray, *,
                   paired: bool = True) -> float:
    """Share (0..1) of (coarse, fine) pairs whose coarse prediction is the larger; ties count one half."""
    c, f = np.asarray(coarse, dtype=np.float64), np.asarray(fine, dtype=np.float64)
    if c.size == 0 or f.size == 0:
        raise ValueError("order_accuracy needs predictions for both conditions")
    if paired:
        if c.shape != f.shape:
            raise ValueError(f"paired predictions must have the same length, got {c.size} and {f.size}")
        return float(np.mean((c > f) + 0.5 * (c == f)))
    diff = c[:, None] - f[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))
