"""Training pairs for change captioners, and the cache of their frozen-backbone features.

Rules:

* a pair set is a list of :class:`PairSpec` (what to make, from which seed and images), planned from the config
  alone, so the same config always gives the same pairs; :func:`make_pair` turns a spec into pixels, a change mask,
  captions and a changed flag, deterministically;
* the later date is cached in ``views`` versions: view ``v`` is the pair's B under the ``v``-th draw of the
  acquisition nuisances (:func:`geovl.data.synthetic.nuisance.nuisance`, seeded by the pair and the view); A is
  cached once;
* the backbone is frozen, so features are computed once into ``<folder>/``: ``a.npy`` (P, N + 1, C) and ``b.npy``
  (P, V, N + 1, C) float16 memory maps, ``cells.npy`` (P, N) per-cell changed fractions, ``pairs.json`` (captions,
  flags, change types, the cache key) and ``done.json`` (the finished chunks). A crashed build resumes at the first
  unfinished chunk; a different key (other pairs, backbone weights, size, views) rebuilds.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from geovl.data.karpathy import parse_karpathy_json
from geovl.data.synthetic.change import plan_change_pair
from geovl.data.synthetic.config import SceneConfig
from geovl.data.synthetic.nuisance import nuisance
from geovl.data.synthetic.paste_change import DONOR_CLASSES, GROUND_WORDS, paste_change_pair
from geovl.io.fs import atomic_write_json
from geovl.training.change_captioner_config import ChangeDataConfig

__all__ = ["PairCache", "PairSample", "PairSpec", "build_pair_cache", "make_pair", "plan_pairs"]

logger = logging.getLogger(__name__)

CHUNK = 256


@dataclass(frozen=True)
class PairSpec:
    """What one training pair is made of."""

    kind: str  # "rendered" or "pasted"
    seed: int
    index: int
    change: str | None = None
    target: str = ""
    donor: str = ""
    ground: str = ""


@dataclass
class PairSample:
    image_a: np.ndarray
    image_b: np.ndarray  # before the view's nuisances
    mask: np.ndarray
    captions: list[str]
    changed: bool
    change_type: str


def _image_class(filename: str, classes: dict[str, str]) -> str:
    if filename in classes:
        return classes[filename].lower()
    match = re.match(r"([a-zA-Z]+)", Path(filename).stem)
    return match.group(1).lower() if match else ""


def _pasted_images(sources: Sequence[str], split: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(open-land targets with their ground word, built-up donors) from Karpathy datasets' ``split``."""
    targets: list[tuple[str, str]] = []
    donors: list[str] = []
    for source in sources:
        root = Path(source)
        json_path = root / "dataset.json" if root.is_dir() else root
        root = json_path.parent
        classes: dict[str, str] = {}
        if (root / "classes.csv").is_file():
            with (root / "classes.csv").open() as f:
                classes = {row["filename"]: row["class"] for row in csv.DictReader(f)}
        for entry in parse_karpathy_json(json_path):
            if entry.split != split:
                continue
            path = str(root / "images" / (entry.filepath or "") / entry.filename)
            cls = _image_class(entry.filename, classes)
            if cls in GROUND_WORDS:
                targets.append((path, GROUND_WORDS[cls]))
            elif cls in DONOR_CLASSES:
                donors.append(path)
    return sorted(targets), sorted(donors)


def plan_pairs(data: ChangeDataConfig, *, rendered: int, pasted: int, seed_offset: int = 0,
               pasted_split: str | None = None) -> list[PairSpec]:
    """The pair specs of a set: ``rendered`` rendered pairs, then ``pasted`` pasted ones (seeds + ``seed_offset``)."""
    specs = [PairSpec("rendered", data.rendered.seed + seed_offset, i) for i in range(rendered)]
    if pasted:
        p = data.pasted
        targets, donors = _pasted_images(p.sources, pasted_split or p.split)
        if not targets or not donors:
            raise ValueError(f"data.pasted.sources: found {len(targets)} open-land and {len(donors)} built-up images "
                             f"in split {pasted_split or p.split!r}; both are needed (classes: "
                             f"{sorted(GROUND_WORDS)} and {sorted(DONOR_CLASSES)})")
        rng = np.random.default_rng([p.seed + seed_offset, 17])
        for i in range(pasted):
            target, ground = targets[int(rng.integers(len(targets)))]
            donor = donors[int(rng.integers(len(donors)))]
            u = rng.random()
            change = "none" if u < p.no_change_fraction else (
                "buildings_removed" if rng.random() < p.removed_fraction else "buildings_built")
            specs.append(PairSpec("pasted", p.seed + seed_offset, i, change, target, donor, ground))
    return specs


def _load_square(path: str, size: int) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))


def make_pair(spec: PairSpec, data: ChangeDataConfig, size: int) -> PairSample:
    """The pixels, mask, captions and flag of ``spec`` (B before the view nuisances; deterministic)."""
    if spec.kind == "rendered":
        r = data.rendered
        scene = SceneConfig(size=size, gsd=(float(r.gsd[0]), float(r.gsd[1])), change_types=tuple(r.change_types),
                            no_change_fraction=r.no_change_fraction)
        pair = plan_change_pair(spec.seed, spec.index, scene).render()
        return PairSample(pair.image_a, pair.image_b, pair.mask, pair.captions, pair.change_type != "none",
                          pair.change_type)
    rng = np.random.default_rng([spec.seed, spec.index, 29])
    target = _load_square(spec.target, size)
    donor = _load_square(spec.donor, size) if spec.change != "none" else None
    pasted = paste_change_pair(target, donor, rng, spec.change or "none", ground=spec.ground, nuisance_strength=0.0)
    return PairSample(pasted.image_a, pasted.image_b, pasted.mask, pasted.captions, pasted.change_type != "none",
                      pasted.change_type)


def view_of(sample: PairSample, spec: PairSpec, view: int, strength: float) -> np.ndarray:
    """View ``view`` of the pair's later date (its own nuisance draw)."""
    rng = np.random.default_rng([spec.seed, spec.index, 31, view, 0 if spec.kind == "rendered" else 1])
    return nuisance(sample.image_b, rng, strength=strength)


def cell_fractions(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Share of changed pixels in each cell of a (h, w) grid over ``mask``, row-major (h * w,)."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return torch.nn.functional.adaptive_avg_pool2d(t, grid).flatten().numpy()


class _PairPixels(Dataset):
    def __init__(self, specs: list[PairSpec], positions: list[int], data: ChangeDataConfig, size: int,
                 views: int, grid: tuple[int, int]) -> None:
        self.specs, self.positions, self.data = specs, positions, data
        self.size, self.views, self.grid = size, views, grid

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        position = self.positions[i]
        spec = self.specs[position]
        sample = make_pair(spec, self.data, self.size)
        views = [view_of(sample, spec, v, self.data.nuisance_strength) for v in range(self.views)]
        return {
            "position": position,
            "a": torch.from_numpy(np.array(sample.image_a)).permute(2, 0, 1),
            "b": torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2),
            "cells": torch.from_numpy(cell_fractions(sample.mask, self.grid)),
            "captions": sample.captions, "changed": sample.changed, "change_type": sample.change_type,
        }


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"position": [it["position"] for it in items], "a": torch.stack([it["a"] for it in items]),
            "b": torch.stack([it["b"] for it in items]), "cells": torch.stack([it["cells"] for it in items]),
            "meta": [{k: it[k] for k in ("captions", "changed", "change_type")} for it in items]}


@dataclass
class PairCache:
    """Cached features of a pair set (see the module docstring)."""

    a: np.ndarray
    b: np.ndarray
    cells: np.ndarray
    captions: list[list[str]]
    changed: np.ndarray
    change_types: list[str]

    @property
    def views(self) -> int:
        return int(self.b.shape[1])

    def __len__(self) -> int:
        return int(self.a.shape[0])


def cache_key(specs: list[PairSpec], data: ChangeDataConfig, size: int, views: int, backbone_sha: str | None) -> str:
    blob = json.dumps({"specs": [asdict(s) for s in specs], "rendered": asdict(data.rendered), "size": size,
                       "views": views, "strength": data.nuisance_strength, "backbone": backbone_sha,
                       "version": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_pair_cache(folder: Path, specs: list[PairSpec], data: ChangeDataConfig, *, extractor: torch.nn.Module,
                     normalize: Any, size: int, views: int, shape: tuple[int, int], grid: tuple[int, int],
                     key: str, device: torch.device, dtype: torch.dtype, workers: int, progress: bool,
                     ) -> PairCache:
    """Build (or resume, or reuse) the feature cache of ``specs`` in ``folder`` (see the module docstring).

    ``extractor`` maps normalised pixels to packed (B, N + 1, C) features; ``normalize`` maps uint8 pixels to its
    input; ``shape`` is (N + 1, C).
    """
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    meta_path, done_path = folder / "pairs.json", folder / "done.json"
    n = len(specs)
    old = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    fresh = old.get("key") != key
    mode = "w+" if fresh else "r+"
    a = np.lib.format.open_memmap(folder / "a.npy", mode=mode, dtype=np.float16, shape=(n, *shape))
    b = np.lib.format.open_memmap(folder / "b.npy", mode=mode, dtype=np.float16, shape=(n, views, *shape))
    cells = np.lib.format.open_memmap(folder / "cells.npy", mode=mode, dtype=np.float16, shape=(n, grid[0] * grid[1]))
    meta: dict[str, Any] = old
    if fresh:
        meta = {"key": key, "captions": [[] for _ in range(n)], "changed": [False] * n, "change_types": [""] * n}
        atomic_write_json(done_path, [])
    done = set(json.loads(done_path.read_text())) if done_path.is_file() else set()
    chunks = [c for c in range((n + CHUNK - 1) // CHUNK) if c not in done]
    bar = tqdm(total=n, initial=n - sum(min(CHUNK, n - c * CHUNK) for c in chunks), unit="pair",
               desc="pair features", disable=not progress, dynamic_ncols=True)
    for chunk in chunks:
        positions = list(range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)))
        loader = DataLoader(_PairPixels(specs, positions, data, size, views, grid), batch_size=16,
                            num_workers=workers, collate_fn=_collate)
        for batch in loader:
            rows = batch["position"]
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                fa = extractor(normalize(batch["a"]))
                fb = extractor(normalize(batch["b"].flatten(0, 1)))
            a[rows] = fa.float().cpu().numpy().astype(np.float16)
            b[rows] = fb.float().cpu().numpy().astype(np.float16).reshape(len(rows), views, *shape)
            cells[rows] = batch["cells"].numpy().astype(np.float16)
            for row, m in zip(rows, batch["meta"], strict=True):
                meta["captions"][row] = m["captions"]
                meta["changed"][row] = m["changed"]
                meta["change_types"][row] = m["change_type"]
            bar.update(len(rows))
        for arr in (a, b, cells):
            arr.flush()
        atomic_write_json(meta_path, meta)
        done.add(chunk)
        atomic_write_json(done_path, sorted(done))
    bar.close()
    return PairCache(a, b, cells, meta["captions"], np.asarray(meta["changed"], bool), meta["change_types"])
