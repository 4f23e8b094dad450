"""Metrics for generated images (the Text2Earth protocol): Fréchet distances, CLIP score, zero-shot accuracy.

* **FID** is the Fréchet distance between Gaussians fitted to Inception-v3 pool3 features (2048-d) of real and
  generated images. It needs the FID Inception weights, which geovl never downloads: pass the local file
  ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's port of TensorFlow's ``inception-2015-12-05``, from
  https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth) to
  :class:`InceptionFeatures`, which builds the architecture with ``pytorch_fid.inception.InceptionV3`` (install
  ``pytorch-fid``). Only numbers computed that way should be called FID.
* **FD-CLIP** is the same distance on the geovl backbone's L2-normalised image embeddings
  (:class:`BackboneFeatures`, :func:`clip_fd`). It is always available and is named ``"FD-CLIP (<model>)"`` so that
  it is never mistaken for FID: its values are on a different scale (embeddings on the unit sphere give values
  below 4) and are not comparable with published FIDs.
* **CLIP score** (:func:`clip_score`) is ``100 * max(cos(image, prompt), 0)`` averaged over image-prompt pairs,
  the definition of torchmetrics' ``CLIPScore`` that Text2Earth reports (w = 100; Hessel et al. use w = 2.5).
  Published numbers used OpenAI CLIP ViT-L/14; numbers from another backbone are comparable only among themselves.
* **Zero-shot accuracy** (:func:`zero_shot_accuracy`, Text2Earth's "Cls-OA") classifies the generated images with
  the backbone's prompt-ensemble zero-shot classifier and compares with the class each image was generated for.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from geovl._optional import require
from geovl.io.fs import sha256_file
from geovl.io.images import ImageSource
from geovl.io.loading import load_image
from geovl.models.backbone import Backbone
from geovl.tasks.zeroshot.prompts import RS_TEMPLATES, build_class_embeddings

__all__ = [
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
    "BackboneFeatures",
    "FeatureExtractor",
    "FrechetDistance",
    "InceptionFeatures",
    "ZeroShotAccuracy",
    "clip_fd",
    "clip_score",
    "clip_scores",
    "fid",
    "frechet_distance",
    "frechet_distance_from_stats",
    "gaussian_stats",
    "zero_shot_accuracy",
]

logger = logging.getLogger(__name__)

#: File name of pytorch-fid's FID Inception weights; its sha256 starts with the 8 hex digits in the name.
INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
#: Where that file is published (download it yourself; geovl does not fetch it).
INCEPTION_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
_INCEPTION_SHA256_PREFIX = "6726825d"
_INCEPTION_SIZE = 299


# ------------------------------------------------------------------------------------------- Fréchet distance


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), in float64, of an (N, D) feature array (N >= 2)."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"at least 2 feature vectors are needed for a covariance, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _trace_sqrt_product_eig(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr(sqrt(S1 S2)) = sum of sqrt(eigenvalues of S1^1/2 S2 S1^1/2), a symmetric PSD matrix (no complex parts)."""
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """Tr(sqrt(S1 S2)) with ``scipy.linalg.sqrtm`` as pytorch-fid does, else (or if that fails) by eigenvalues."""
    try:
        from scipy import linalg
    except ImportError:
        return _trace_sqrt_product_eig(sigma1, sigma2)

    def sqrtm(m: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            # Singular products (fewer samples than dimensions) warn; the trace still agrees with the eigenvalue
            # method to about 1e-8, and frechet_distance already logs the sample shortfall.
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            out = linalg.sqrtm(m)
        return np.asarray(out[0] if isinstance(out, tuple) else out)  # older SciPy may return (sqrtm, error)

    covmean = sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        # pytorch-fid's fallback for a product whose square root failed: add eps to the diagonals.
        logger.warning("sqrtm of the covariance product failed; adding %g to the diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            logger.warning("sqrtm returned a large imaginary part; using the eigenvalue method instead")
            return _trace_sqrt_product_eig(sigma1, sigma2)
        covmean = covmean.real
    if not np.isfinite(covmean).all():
        return _trace_sqrt_product_eig(sigma1, sigma2)
    return float(np.trace(covmean))


def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrt(S1 S2))``, in squared feature units. Tiny negative values from
    round-off are returned as 0.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"mismatched statistics: means {mu1.shape} and {mu2.shape}, covariances {s1.shape} and {s2.shape}"
        )
    diff = mu1 - mu2
    fd = float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt_product(s1, s2))
    return max(fd, 0.0)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (N may differ, D must not).

    Symmetric, >= 0, and 0 for identical sets. With fewer samples than dimensions the covariances are singular and
    the estimate is biased upwards; FID is normally computed on thousands of images.
    """
    a, b = np.asarray(feats_a), np.asarray(feats_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) arrays of the same D, got shapes {a.shape} and {b.shape}")
    for name, x in (("first", a), ("second", b)):
        if x.shape[0] < x.shape[1]:
            logger.warning(
                "the %s feature set has %d samples for %d dimensions; the Fréchet distance is biased upwards",
                name,
                x.shape[0],
                x.shape[1],
            )
    return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b))


# ------------------------------------------------------------------------------------------- feature extractors


class FeatureExtractor(Protocol):
    """Anything that maps images to an (N, D) float array, with a ``name`` that says which metric it gives."""

    @property
    def name(self) -> str: ...

    def __call__(self, images: Sequence[ImageSource]) -> np.ndarray: ...


@dataclass
class BackboneFeatures:
    """L2-normalised image embeddings of a geovl backbone (``Backbone.encode_images``), for FD-CLIP."""

    backbone: Backbone
    batch_size: int = 32
    progress: bool = False

    @property
    def name(self) -> str:
        return f"FD-CLIP ({self.backbone.info.name})"

    def __call__(self, images: Sequence[ImageSource]) -> np.ndarray:
        return self.backbone.encode_images(images, batch_size=self.batch_size, progress=self.progress)


class InceptionFeatures:
    """Inception-v3 pool3 features (2048-d) exactly as pytorch-fid computes them, from a LOCAL weights file.

    Images are decoded to RGB, scaled to [0, 1], resized to 299 x 299 (bilinear, ``align_corners=False``) and
    scaled to [-1, 1] inside ``pytorch_fid.inception.InceptionV3``, the architecture of TensorFlow's FID Inception.

    Args:
        weights: path to ``pt_inception-2015-12-05-6726825d.pth`` (see :data:`INCEPTION_WEIGHTS_URL`).
        device: torch device for the network.
        batch_size: images per forward pass.
        check_hash: refuse a file whose sha256 does not start with ``6726825d`` (any other weights would not give
            FID).

    Raises:
        geovl._optional.MissingDependencyError: ``pytorch-fid`` is not installed.
        FileNotFoundError: ``weights`` does not exist.
        ValueError: the file's checksum is not that of the FID weights.
    """

    name = "FID (Inception-v3 pool3, pytorch-fid weights)"

    def __init__(
        self,
        weights: str | Path,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 50,
        check_hash: bool = True,
    ) -> None:
        inception = require("pytorch_fid.inception", "fid", "Inception-v3 FID")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"FID Inception weights not found at {path}. Download {INCEPTION_WEIGHTS_FILE} from "
                f"{INCEPTION_WEIGHTS_URL} on a machine with network access and pass its local path."
            )
        if check_hash:
            digest = sha256_file(path)
            if not digest.startswith(_INCEPTION_SHA256_PREFIX):
                raise ValueError(
                    f"{path} has sha256 {digest[:16]}..., not that of {INCEPTION_WEIGHTS_FILE} "
                    f"({_INCEPTION_SHA256_PREFIX}...): these are not the FID Inception weights"
                )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        state = torch.load(path, map_location="cpu", weights_only=True)

        def local_weights(*_args: Any, **_kwargs: Any) -> Any:
            return state

        # pytorch-fid builds the network and fetches its weights from a URL in one call; hand it the local file.
        with mock.patch.object(inception, "load_state_dict_from_url", local_weights):
            model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size

    def _pixels(self, image: ImageSource) -> torch.Tensor:
        arr = np.asarray(load_image(image), dtype=np.float32) / 255.0
        x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)
        # The same resize InceptionV3 applies to a batch, done per image so that sizes may differ.
        return F.interpolate(x, size=(_INCEPTION_SIZE, _INCEPTION_SIZE), mode="bilinear", align_corners=False)[0]

    @torch.inference_mode()
    def __call__(self, images: Sequence[ImageSource]) -> np.ndarray:
        items = list(images)
        if not items:
            raise ValueError("no images given")
        out = []
        for i in range(0, len(items), self.batch_size):
            batch = torch.stack([self._pixels(img) for img in items[i : i + self.batch_size]]).to(self.device)
            feats = self.model(batch)[0]
            out.append(feats.reshape(feats.shape[0], -1).float().cpu())
        return torch.cat(out).numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FrechetDistance:
    """A Fréchet distance and what it was computed on.

    Attributes:
        value: the distance (squared feature units; FID for Inception features).
        metric: ``"FID (Inception-v3 pool3, ...)"`` or ``"FD-CLIP (<model>)"``: say this name when you report it.
        n_a, n_b: number of images in each set.
        dim: feature dimension.
    """

    value: float
    metric: str
    n_a: int
    n_b: int
    dim: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class ZeroShotAccuracy:
    """Zero-shot classification of generated images (Text2Earth's Cls-OA = ``100 * accuracy``).

    Attributes:
        accuracy: fraction of images classified as the class they were generated for.
        per_class: class name -> fraction correct among that class's images (classes with images only).
        predictions: predicted class index per image.
        class_names: the classes, in index order.
        model: the backbone's name.
    """

    accuracy: float
    per_class: dict[str, float]
    predictions: tuple[int, ...] = field(repr=False)
    class_names: tuple[str, ...] = field(repr=False)
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (predictions as a list)."""
        return {
            "accuracy": self.accuracy,
            "per_class": dict(self.per_class),
            "predictions": list(self.predictions),
            "class_names": list(self.class_names),
            "model": self.model,
        }


# ---------------------------------------------------------------------------------------------------- metrics


def fid(
    images_a: Sequence[ImageSource], images_b: Sequence[ImageSource], extractor: FeatureExtractor
) -> FrechetDistance:
    """Fréchet distance between two image sets in the feature space of ``extractor``.

    With :class:`InceptionFeatures` this is the standard FID; with :class:`BackboneFeatures` it is FD-CLIP. The
    result's ``metric`` names which.
    """
    a, b = extractor(list(images_a)), extractor(list(images_b))
    return FrechetDistance(
        value=frechet_distance(a, b), metric=extractor.name, n_a=len(a), n_b=len(b), dim=int(np.shape(a)[1])
    )


def clip_fd(
    backbone: Backbone,
    images_a: Sequence[ImageSource],
    images_b: Sequence[ImageSource],
    *,
    batch_size: int = 32,
    progress: bool = False,
) -> FrechetDistance:
    """FD-CLIP: the Fréchet distance on ``backbone``'s L2-normalised image embeddings (not FID; see module doc)."""
    return fid(images_a, images_b, BackboneFeatures(backbone, batch_size=batch_size, progress=progress))


def clip_scores(
    backbone: Backbone, images: Sequence[ImageSource], prompts: Sequence[str], *, batch_size: int = 32
) -> np.ndarray:
    """Per-pair CLIP scores ``100 * max(cos(image_i, prompt_i), 0)``, shape (N,), values in [0, 100]."""
    if isinstance(prompts, str):
        raise ValueError("pass a list of prompts, not a single string")
    items = list(images)
    if len(items) != len(prompts):
        raise ValueError(f"need one prompt per image, got {len(items)} images and {len(prompts)} prompts")
    if not items:
        raise ValueError("no images given")
    img = backbone.encode_images(items, batch_size=batch_size).astype(np.float64)
    txt = backbone.encode_texts(list(prompts)).astype(np.float64)
    cos = (img * txt).sum(axis=1) / (np.linalg.norm(img, axis=1) * np.linalg.norm(txt, axis=1))
    return np.asarray(100.0 * np.clip(cos, 0.0, None))


def clip_score(
    backbone: Backbone, images: Sequence[ImageSource], prompts: Sequence[str], *, batch_size: int = 32
) -> float:
    """CLIP score (torchmetrics / Text2Earth definition): mean over pairs of ``100 * max(cos(image, prompt), 0)``.

    Args:
        backbone: the scoring model (Text2Earth used OpenAI CLIP ViT-L/14).
        images: generated images (paths, PIL images, uint8 HxWx3 arrays, ...).
        prompts: the prompt each image was generated from, same length and order.

    Returns:
        A value in [0, 100]. :func:`clip_scores` gives the per-pair values.
    """
    return float(clip_scores(backbone, images, prompts, batch_size=batch_size).mean())


def zero_shot_accuracy(
    backbone: Backbone,
    images: Sequence[ImageSource],
    labels: Sequence[int | str],
    class_names: Sequence[str],
    *,
    templates: Sequence[str] = RS_TEMPLATES,
    batch_size: int = 32,
) -> ZeroShotAccuracy:
    """Classify generated images zero-shot with ``backbone`` and score against the intended classes (Cls-OA).

    Each class embedding is the normalised mean of the normalised embeddings of ``templates`` filled with the class
    name (:func:`geovl.tasks.zeroshot.prompts.build_class_embeddings`); an image's prediction is the class of highest
    cosine similarity.

    Args:
        labels: the class each image was generated for, as an index into ``class_names`` or as a class name.
        class_names: the candidate classes (their names go into the prompts).
        templates: prompt templates with one ``{}``.

    Raises:
        ValueError: length mismatch, unknown label or bad templates.
    """
    if isinstance(class_names, str) or not class_names:
        raise ValueError("class_names must be a non-empty list of strings")
    names = list(class_names)
    items = list(images)
    if len(items) != len(labels):
        raise ValueError(f"need one label per image, got {len(items)} images and {len(labels)} labels")
    if not items:
        raise ValueError("no images given")
    index = {c: i for i, c in enumerate(names)}
    y = np.empty(len(labels), dtype=np.int64)
    for n, lab in enumerate(labels):
        if isinstance(lab, str):
            if lab not in index:
                raise ValueError(f"label {lab!r} (image {n}) is not one of the class names")
            y[n] = index[lab]
        elif isinstance(lab, (int, np.integer)) and not isinstance(lab, bool) and 0 <= int(lab) < len(names):
            y[n] = int(lab)
        else:
            raise ValueError(f"label {lab!r} (image {n}) is neither a class name nor an index below {len(names)}")
    classifier = build_class_embeddings(backbone, names, templates)
    emb = backbone.encode_images(items, batch_size=batch_size)
    pred = np.argmax(emb @ classifier.T, axis=1)
    correct = pred == y
    per_class = {names[c]: float(correct[y == c].mean()) for c in np.unique(y)}
    return ZeroShotAccuracy(
        accuracy=float(correct.mean()),
        per_class=per_class,
        predictions=tuple(int(p) for p in pred),
        class_names=tuple(names),
        model=backbone.info.name,
    )
