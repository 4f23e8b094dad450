"""In-memory embedding of image collections (the partitioned, resumable pipeline is geovl.index.pipeline).

Decoding runs in DataLoader workers (the pipeline's own mapper) so it overlaps the model (on a small CPU, in the
model's process: see :func:`~geovl.index.pipeline.default_decode_workers`); unreadable inputs are skipped and
reported, never fatal.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geovl.io.images import ImageSource
from geovl.vlm.backbone import Backbone

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


def list_images(paths: Iterable[str | os.PathLike[str]], suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files under ``paths`` (files are kept as given, folders searched recursively), sorted per folder."""
    found: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found.extend(sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in suffixes))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


@dataclass
class EmbedResult:
    """What :func:`embed_images` did.

    Attributes:
        embeddings: (N, D) float32, L2-normalised, in the order of ``files``.
        files: the files that were embedded (bad files removed).
        failures: ``(file, error)`` for every skipped file.
        seconds: wall time of the embedding loop (decode + model), excluding model loading.
        images_per_second: ``len(files) / seconds``.
    """

    embeddings: np.ndarray
    files: list[str]
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return len(self.files) / self.seconds if self.seconds > 0 else 0.0


def embed_sources(
    backbone: Backbone,
    sources: Sequence[ImageSource],
    *,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "embed",
) -> tuple[np.ndarray, list[int], list[tuple[int, str]], float]:
    """Embed image sources (paths, bytes, PIL images, arrays), decoding in DataLoader workers.

    Returns:
        ``(embeddings, kept, failures, seconds)``: (N_kept, D) float32 L2-normalised rows for the sources at
        positions ``kept`` (in order), ``(position, error)`` for each source that could not be read, and the wall
        time of the loop.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(sources) == 0:
        raise ValueError("no images to embed")
    # the pipeline's mapper; imported late (it imports us)
    from geovl.index.pipeline import Record, decode_loader, default_decode_workers

    if workers is None:
        workers = default_decode_workers(backbone.device)

    loader = decode_loader(backbone, [Record(src) for src in sources], [], batch_size, workers)
    chunks: list[np.ndarray] = []
    kept: list[int] = []
    failures: list[tuple[int, str]] = []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(sources), unit="img", desc=desc, disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    for idx, pixels, _, bad in loader:
        for i, err in bad:
            failures.append((i, err))
            logger.warning("skipped %s", err)
        if pixels is not None:
            chunks.append(backbone.embed_pixels(pixels).cpu().numpy())
            kept.extend(idx)
        bar.update(len(idx) + len(bad))
    seconds = time.perf_counter() - start
    bar.close()
    emb = np.concatenate(chunks) if chunks else np.zeros((0, backbone.embed_dim), np.float32)
    return emb, kept, failures, seconds


def embed_images(
    backbone: Backbone,
    paths: Iterable[str | os.PathLike[str]],
    *,
    batch_size: int = 64,
    workers: int | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> EmbedResult:
    """Embed every image under ``paths``.

    Args:
        backbone: the model.
        paths: files and/or folders (searched recursively for image suffixes).
        batch_size: images per model call.
        workers: DataLoader decode processes (default: :func:`~geovl.index.pipeline.default_decode_workers`;
            0 decodes in-process).
        limit: embed only the first ``limit`` files (after sorting).
        progress: show a progress bar with images/s.
    """
    files = list_images(paths)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        files = files[:limit]
    if not files:
        raise ValueError("no image files found under the given paths (looked for " + ", ".join(IMAGE_SUFFIXES) + ")")
    emb, kept, bad, seconds = embed_sources(backbone, files, batch_size=batch_size, workers=workers,
                                            progress=progress)
    return EmbedResult(embeddings=emb, files=[str(files[i]) for i in kept],
                       failures=[(str(files[i]), err) for i, err in bad], seconds=seconds)


def model_record(backbone: Backbone) -> dict[str, Any]:
    """The backbone's identity for manifests and reports, including the sha256 of its weights file(s)."""
    info = backbone.info
    if info.checkpoint and info.checkpoint_sha256 is None:
        info.checkpoint_sha256 = _weights_digest(Path(info.checkpoint))
    record = asdict(info)
    record.update(precision=backbone.precision, device=str(backbone.device), dim=backbone.embed_dim)
    return record


def _weights_digest(path: Path) -> str | None:
    """sha256 of a weights file; for a model folder, of its weight files' digests (sorted by name)."""
    from geovl.vlm.weights import sha256_file

    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
        if files:
            import hashlib

            return hashlib.sha256("".join(f"{f.name}:{sha256_file(f)}\n" for f in files).encode()).hexdigest()
    return None
