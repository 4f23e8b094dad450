"""Run the embedding pipeline as a Ray Data job over the same partitions as the local runner (same ids, same
files), one model replica per actor (a GPU per actor when the cluster has GPUs); the machinery, resume included, is
:mod:`geovl.data.ray_partitions`'s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from geovl.data.partitioned import Item
from geovl.data.ray_partitions import run_partitions_ray
from geovl.data.sources import Source
from geovl.index.manifest import MANIFEST_FILE
from geovl.index.pipeline import EmbedConfig, EmbedSummary, embed_partition_to, finish_run, open_run, plan_partitions
from geovl.models.backbone import Backbone

__all__ = ["run_embed_ray"]


def _load(model: str, device: str, precision: str) -> Backbone:
    from geovl.models import load_backbone

    return load_backbone(model, device=device, precision=precision)


def _embed_partition(out: Path, config: EmbedConfig, chip_readers: list[list[Any]], backbone: Backbone, name: str,
                     chunk: list[Item]) -> tuple[int, list[tuple[str, str]]]:
    return embed_partition_to(out, backbone, name, chunk, chip_readers, config, workers=0)


def run_embed_ray(
    model: str,
    sources: Sequence[Source],
    out_dir: str | os.PathLike[str],
    config: EmbedConfig | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    num_actors: int = 2,
    address: str | None = None,
    num_cpus_per_actor: float = 1.0,
    num_gpus_per_actor: float | None = None,
) -> EmbedSummary:
    """Embed ``sources`` into ``out_dir`` with ``num_actors`` model replicas on a Ray cluster (local by default);
    ``num_gpus_per_actor`` defaults to 1 when the cluster has GPUs, else 0."""
    from geovl.models.record import model_record

    config = config or EmbedConfig()
    probe = _load(model, "cpu", "fp32")
    record = model_record(probe)
    record.update(precision=precision, device=device)
    out, manifest = open_run(record, probe.embed_dim, sources, out_dir, config)
    del probe
    done = {p["name"]: p for p in manifest["partitions"]}
    planned = list(plan_partitions(sources, config))
    start = time.perf_counter()
    result = run_partitions_ray(
        [(name, chunk) for name, chunk in planned if name not in done], out / MANIFEST_FILE, manifest,
        partial(_load, model, device, precision),
        partial(_embed_partition, out, config, [s.chip_readers() for s in sources]),
        num_actors=num_actors, num_cpus_per_actor=num_cpus_per_actor, num_gpus_per_actor=num_gpus_per_actor,
        address=address)
    finish_run(out, manifest)
    return EmbedSummary(out_dir=out, total=sum(len(chunk) for _, chunk in planned), embedded=result.count,
                        resumed=sum(p["count"] for p in done.values()), failed=len(result.failures),
                        seconds=time.perf_counter() - start, partitions=len(manifest["partitions"]),
                        failures=result.failures)
