"""Write synthetic datasets to disk in the layouts geovl's readers expect.

* captions: ``images/<id>.png`` + Karpathy ``dataset.json`` + ``classes.csv`` (UCM / RSICD style),
* classification: ImageFolder ``<class>/<class>_<i>.jpg``,
* change captioning: LEVIR-CC ``images/<split>/{A,B,label}/<split>_<i>.png`` + ``LevirCCcaptions.json``.

Every file is written with :mod:`geovl.io.fs` (to a temporary name in its folder, renamed into place), so a
crash never leaves a half-written image; the JSON index is written last. Rerunning into the same folder
skips images that already exist: generation is deterministic, so the result is identical. A small hidden
``.generator.json`` records the seed and config, and a rerun with different ones is refused (hidden so that
readers scanning an ImageFolder for class folders do not trip over it).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from geovl.data.synthetic.captions import tokenize
from geovl.data.synthetic.change import plan_change_pair
from geovl.data.synthetic.config import SceneConfig
from geovl.data.synthetic.scene import plan_scene
from geovl.io.fs import atomic_path, atomic_write_json, atomic_write_text
from geovl.io.jsonable import to_jsonable

logger = logging.getLogger(__name__)

T = TypeVar("T")
SPLITS = ("train", "val", "test")
_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG"}


def _progress(items: Iterable[T], total: int, desc: str, enabled: bool) -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar when tqdm is installed and ``enabled``."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            yield from tqdm(items, total=total, desc=desc, unit="tile")
            return
    yield from items


def _save_image(array: np.ndarray, path: Path) -> None:
    fmt = _FORMATS[path.suffix.lstrip(".").lower()]
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {"quality": 95} if fmt == "JPEG" else {"compress_level": 1}
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    # No fsync per tile (it would cost about a quarter of the generation time); the rename still guarantees that a
    # killed run leaves whole images or none.
    with atomic_path(path, fsync=False) as tmp:
        tmp.write_bytes(buf.getvalue())


def _save_json(obj: Any, path: Path) -> None:
    atomic_write_json(path, obj, indent=1)


def split_names(n: int, splits: tuple[float, float, float]) -> list[str]:
    """Split of each of ``n`` items: the first ``round(n * train)`` are train, then val, then test."""
    if len(splits) != 3 or any(s < 0 for s in splits) or sum(splits) <= 0:
        raise ValueError(f"splits must be three non-negative fractions (train, val, test), got {splits!r}")
    total = float(sum(splits))
    n_train = round(n * splits[0] / total)
    n_val = min(n - n_train, round(n * splits[1] / total))
    return ["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val)


def _check_generator(out: Path, record: dict[str, Any]) -> None:
    """Refuse to resume into a folder written with other settings; record the settings otherwise."""
    path = out / ".generator.json"
    if path.exists():
        old = json.loads(path.read_text())
        if {k: v for k, v in old.items() if k != "n"} != {k: v for k, v in record.items() if k != "n"}:
            raise ValueError(
                f"{out} was generated with different settings ({path}: {old}); "
                "use a new output folder or delete the old one"
            )
    _save_json(record, path)


def _record(kind: str, seed: int, config: SceneConfig, **extra: Any) -> dict[str, Any]:
    """The settings of a run as plain JSON data (tuples as lists), comparable with a stored ``.generator.json``."""
    record: dict[str, Any] = to_jsonable({"generator": f"geovl.data.synthetic/{kind}", "seed": seed,
                                          "config": asdict(config), **extra})
    return record


def _image_ext(image_format: str) -> str:
    ext = image_format.lower().lstrip(".")
    if ext not in _FORMATS:
        raise ValueError(f"image_format must be one of {sorted(_FORMATS)}, got {image_format!r}")
    return ext


def _check_count(name: str, n: int) -> None:
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")


def write_caption_dataset(
    out_dir: str | os.PathLike[str], n: int, seed: int = 0, config: SceneConfig | None = None,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1), image_format: str = "png", progress: bool = True,
) -> Path:
    """Write ``n`` captioned tiles as a Karpathy-style caption dataset (UCM-captions / RSICD layout).

    Layout: ``images/<i:06d>.<ext>``, ``dataset.json`` (``{"images": [{"filename", "imgid", "split",
    "sentids", "sentences": [{"raw", "tokens", "imgid", "sentid"}], "label", "attributes"}], "dataset"}``)
    and ``classes.csv`` (``filename,class``).

    Returns:
        the path of ``dataset.json``.
    """
    _check_count("n", n)
    config = config or SceneConfig()
    ext = _image_ext(image_format)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    _check_generator(out, _record("captions", seed, config, n=n, image_format=ext))
    names = split_names(n, splits)
    entries: list[dict[str, Any]] = []
    rows: list[tuple[str, str]] = []
    written = 0
    per_image = config.captions_per_image
    for i in _progress(range(n), n, "synthetic captions", progress):
        plan = plan_scene(seed, i, config)
        filename = f"{i:06d}.{ext}"
        path = out / "images" / filename
        if not path.exists():
            _save_image(plan.render().image, path)
            written += 1
        sentids = list(range(i * per_image, (i + 1) * per_image))
        entries.append({
            "filename": filename, "imgid": i, "split": names[i], "sentids": sentids,
            "sentences": [{"raw": c, "tokens": tokenize(c), "imgid": i, "sentid": s}
                          for c, s in zip(plan.captions, sentids, strict=True)],
            "label": plan.layout.label, "attributes": plan.attributes,
        })
        rows.append((filename, plan.layout.label))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("filename", "class"))
    writer.writerows(rows)
    atomic_write_text(out / "classes.csv", buf.getvalue())
    index = out / "dataset.json"
    _save_json({"dataset": "geovl-synthetic", "images": entries}, index)
    logger.info("wrote %d of %d caption tiles to %s (%d already present)", written, n, out, n - written)
    return index


def write_classification_dataset(
    out_dir: str | os.PathLike[str], n_per_class: int, seed: int = 0, config: SceneConfig | None = None,
    image_format: str = "jpg", progress: bool = True,
) -> Path:
    """Write ``n_per_class`` tiles of every class of ``config`` in ImageFolder layout ``<class>/<class>_<i>.jpg``.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    _check_count("n_per_class", n_per_class)
    config = config or SceneConfig()
    ext = _image_ext(image_format)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_generator(out, _record("classification", seed, config, n=n_per_class, image_format=ext))
    jobs = [(c, i) for c in config.class_names for i in range(n_per_class)]
    written = 0
    for label, i in _progress(jobs, len(jobs), "synthetic classes", progress):
        folder = out / label
        folder.mkdir(exist_ok=True)
        path = folder / f"{label}_{i:04d}.{ext}"
        if path.exists():
            continue
        _save_image(plan_scene(seed, i, config, label=label).render().image, path)
        written += 1
    logger.info("wrote %d of %d classification tiles to %s", written, len(jobs), out)
    return out


def write_change_dataset(
    out_dir: str | os.PathLike[str], n: int, seed: int = 0, config: SceneConfig | None = None,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1), progress: bool = True,
) -> Path:
    """Write ``n`` change pairs in LEVIR-CC layout.

    Layout: ``images/<split>/A/<split>_<j:06d>.png`` (earlier), ``.../B/...`` (later), ``.../label/...``
    (change mask, 0 = unchanged, 255 = changed), with ``j`` numbering pairs within their split, and
    ``LevirCCcaptions.json``: ``{"images": [{"filepath": split, "filename", "imgid", "split", "sentids",
    "sentences": [{"raw", "tokens", "imgid", "sentid"}], "changeflag", "change_type", "attributes"}]}``.

    Returns:
        the path of ``LevirCCcaptions.json``.
    """
    _check_count("n", n)
    config = config or SceneConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_generator(out, _record("change", seed, config, n=n))
    names = split_names(n, splits)
    for split in SPLITS:
        for sub in ("A", "B", "label"):
            (out / "images" / split / sub).mkdir(parents=True, exist_ok=True)
    counters = dict.fromkeys(SPLITS, 0)
    entries: list[dict[str, Any]] = []
    per_image = config.captions_per_image
    written = 0
    for i in _progress(range(n), n, "synthetic changes", progress):
        split = names[i]
        filename = f"{split}_{counters[split]:06d}.png"
        counters[split] += 1
        plan = plan_change_pair(seed, i, config)
        paths = [out / "images" / split / sub / filename for sub in ("A", "B", "label")]
        if not all(p.exists() for p in paths):
            pair = plan.render()
            _save_image(pair.image_a, paths[0])
            _save_image(pair.image_b, paths[1])
            _save_image(pair.mask * np.uint8(255), paths[2])
            written += 1
        sentids = list(range(i * per_image, (i + 1) * per_image))
        entries.append({
            "filepath": split, "filename": filename, "imgid": i, "split": split, "sentids": sentids,
            "sentences": [{"raw": c, "tokens": tokenize(c), "imgid": i, "sentid": s}
                          for c, s in zip(plan.captions, sentids, strict=True)],
            "changeflag": int(plan.change_type != "none"), "change_type": plan.change_type,
            "attributes": plan.attributes,
        })
    index = out / "LevirCCcaptions.json"
    _save_json({"dataset": "geovl-synthetic-change", "images": entries}, index)
    logger.info("wrote %d of %d change pairs to %s (%d already present)", written, n, out, n - written)
    return index

