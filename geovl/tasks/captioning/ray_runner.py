"""Batch captioning as a Ray Data job (``geovl caption --runner ray``), over the same partitions as the local runner
(same ids, same shards, so both write the same rows), with one captioner replica per actor and one GPU per actor
when the cluster has GPUs (:mod:`geovl.data.ray_partitions`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from geovl.data.partitioned import Item, mark_complete, plan_partitions
from geovl.data.ray_partitions import run_partitions_ray
from geovl.data.sources import Source
from geovl.models.captioner import CaptionModel, load_captioner
from geovl.models.decoding import DecodingConfig
from geovl.tasks.captioning.batch import (
    MANIFEST,
    CaptionRunConfig,
    CaptionRunSummary,
    caption_partition_to,
    open_caption_run,
)

__all__ = ["run_captions_ray"]


def _caption_partition(out: Path, config: CaptionRunConfig, decoding: DecodingConfig, chip_readers: list[list[Any]],
                       model: CaptionModel, name: str, chunk: list[Item]) -> tuple[int, list[tuple[str, str]]]:
    return caption_partition_to(out, model, name, chunk, chip_readers, config, decoding, workers=0)


def run_captions_ray(
    model: str,
    sources: Sequence[Source],
    out_dir: str | os.PathLike[str],
    config: CaptionRunConfig | None = None,
    decoding: DecodingConfig | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    num_actors: int = 2,
    address: str | None = None,
    num_cpus_per_actor: float = 1.0,
    num_gpus_per_actor: float | None = None,
) -> CaptionRunSummary:
    """Caption ``sources`` into ``out_dir`` with ``num_actors`` captioner replicas on a Ray cluster (local by
    default). ``num_gpus_per_actor`` defaults to 1 when the cluster has GPUs, else 0."""
    config = config or CaptionRunConfig()
    decoding = decoding or DecodingConfig()
    record = load_captioner(model, device="cpu", precision="fp32").record()  # identity for the manifest
    out, manifest = open_caption_run(record, decoding, sources, out_dir, config)
    done = {p["name"]: p for p in manifest["partitions"]}
    planned = list(plan_partitions(sources, config.partition_size, config.limit))
    start = time.perf_counter()
    result = run_partitions_ray(
        [(name, chunk) for name, chunk in planned if name not in done], out / MANIFEST, manifest,
        partial(load_captioner, model, device=device, precision=precision),
        partial(_caption_partition, out, config, decoding, [s.chip_readers() for s in sources]),
        num_actors=num_actors, num_cpus_per_actor=num_cpus_per_actor, num_gpus_per_actor=num_gpus_per_actor,
        address=address)
    mark_complete(out / MANIFEST, manifest)
    return CaptionRunSummary(out, sum(len(c) for _, c in planned), result.count,
                             sum(p["count"] for p in done.values()), len(result.failures),
                             time.perf_counter() - start, len(manifest["partitions"]), result.failures)
