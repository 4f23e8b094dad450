"""The real images of the generation protocol (:mod:`geovl.eval.generation_protocol`): labelled held-out images to
compare generated ones with, and images of known GSD for the GSD probe.

Rules:

* **Held out** means :func:`geovl.data.common.holdout_member` of the image id at ``holdout`` (0.2: the 20 % of
  EuroSAT that geovl's generator training keeps out with ``holdout_fraction: 0.2``); the other images are the
  *complement*.
* **Labelled real sets** (:func:`load_real_classes`): each class's held-out images are shuffled (seeded); the first
  ``per_class`` are the *real sample*, scored like the generated images; the next ``reference_per_class`` (all the
  rest with ``None``) are the *Fréchet reference*. The two never share an image. Every class needs at least
  ``per_class + 1`` held-out images.
* **Images of known GSD** (:func:`load_gsd_sources`): every image of a dataset is taken to have the one native GSD
  given; the complement fits the GSD probe and the held-out images are its real reference. Each side is a seeded
  sample of at most ``limit`` images.
* **Shared data** (:func:`shared_dataset`): ``$GEOVL_SHARED_DATA/<name>``, else ``../shared/data/<name>`` from the
  working folder, else from the source checkout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geovl.data import autodetect, open_dataset
from geovl.data.common import holdout_member
from geovl.data.labelsets import prompt_names
from geovl.eval.gsd_probe import GsdSource

__all__ = ["RealClasses", "load_gsd_sources", "load_real_classes", "shared_dataset"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class RealClasses:
    """The labelled real side of the protocol.

    Attributes:
        kind: the dataset format read.
        classes: class labels as the dataset names them (sorted).
        names: the prompt phrase of each class.
        sample: ``per_class`` held-out images per class (class-major order) and ``sample_labels`` their class index.
        reference: the Fréchet reference (held-out images of the same classes, none of them in ``sample``).
        held_out_per_class: how many held-out images each class has.
    """

    kind: str
    classes: list[str]
    names: list[str]
    sample: list[str]
    sample_labels: list[int]
    reference: list[str]
    held_out_per_class: dict[str, int]


def shared_dataset(name: str) -> Path | None:
    """``<shared data>/<name>`` when it exists (see the module rules), else None."""
    roots = [os.environ.get("GEOVL_SHARED_DATA"), Path.cwd().parent / "shared" / "data",
             Path(__file__).resolve().parents[3] / "shared" / "data"]
    for root in roots:
        if root and (Path(root) / name).exists():
            return Path(root) / name
    return None


def _samples(path: PathLike, format: str) -> tuple[str, list[Any]]:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such dataset")
    kind = autodetect(path) if format == "auto" else format
    return kind, list(open_dataset(kind, path))


def _check_fraction(holdout: float) -> None:
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout!r}")


def load_real_classes(path: PathLike, *, format: str = "auto", label_set: str | None = "eurosat",
                      holdout: float = 0.2, per_class: int = 16, reference_per_class: int | None = 100,
                      seed: int = 0) -> RealClasses:
    """The real sample and Fréchet reference of a labelled dataset (see the module rules).

    Raises:
        FileNotFoundError: no dataset at ``path``.
        ValueError: no labelled images, a class with too few held-out images, a bad ``holdout`` or count.
    """
    _check_fraction(holdout)
    if reference_per_class is not None and reference_per_class < 1:
        raise ValueError(f"reference_per_class must be >= 1 or None (all), got {reference_per_class!r}")
    kind, samples = _samples(path, format)
    by_class: dict[str, list[str]] = {}
    for s in samples:
        if s["label"] is not None and holdout_member(str(s["image_id"]), holdout):
            by_class.setdefault(str(s["label"]), []).append(str(s["image"]))
    if not by_class:
        raise ValueError(f"{path}: no labelled held-out images (holdout {holdout}); the protocol needs a labelled "
                         "dataset such as an ImageFolder")
    classes = sorted(by_class)
    short = {c: len(by_class[c]) for c in classes if len(by_class[c]) <= per_class}
    if short:
        raise ValueError(f"{path}: classes {short} have too few held-out images for per_class {per_class} (each "
                         f"needs per_class + 1: the real sample and at least one Fréchet reference image)")
    rng = np.random.default_rng(seed)
    sample: list[str] = []
    labels: list[int] = []
    reference: list[str] = []
    for index, name in enumerate(classes):
        images = [by_class[name][i] for i in rng.permutation(len(by_class[name]))]
        sample += images[:per_class]
        labels += [index] * per_class
        stop = None if reference_per_class is None else per_class + reference_per_class
        reference += images[per_class:stop]
    return RealClasses(kind=kind, classes=classes, names=prompt_names(classes, label_set), sample=sample,
                       sample_labels=labels, reference=reference,
                       held_out_per_class={c: len(by_class[c]) for c in classes})


def _pick(items: list[GsdSource], limit: int | None, rng: np.random.Generator) -> list[GsdSource]:
    if limit is None or len(items) <= limit:
        return items
    return [items[i] for i in np.sort(rng.choice(len(items), size=limit, replace=False))]


def load_gsd_sources(path: PathLike, gsd: float, *, format: str = "auto", holdout: float = 0.2,
                     limit: int | None = 200, seed: int = 0) -> tuple[list[GsdSource], list[GsdSource]]:
    """``(complement, held_out)`` images of a dataset whose images are all at native GSD ``gsd`` (see the module
    rules); each image's group is ``"<folder name>/<image id>"``.

    Raises:
        FileNotFoundError: no dataset at ``path``. ValueError: no images, a bad ``holdout`` or ``limit``.
    """
    _check_fraction(holdout)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of images or None, got {limit!r}")
    _, samples = _samples(path, format)
    name = Path(path).name
    fit: list[GsdSource] = []
    held: list[GsdSource] = []
    for s in samples:
        source = GsdSource(str(s["image"]), float(gsd), f"{name}/{s['image_id']}")
        (held if holdout_member(str(s["image_id"]), holdout) else fit).append(source)
    if not fit and not held:
        raise ValueError(f"{path}: no images")
    rng = np.random.default_rng(seed)
    return _pick(fit, limit, rng), _pick(held, limit, rng)
