"""Batch captioning as a Ray Data job (``geovl caption --runner ray``): partitions are the unit of work, captioner
replicas the actors.

The driver plans the same partitions as the local runner (same ids, same shards), skips those a previous run
finished, and streams the rest through ``map_batches`` with an actor class that loads the captioner once per
replica; as each partition comes back the driver lists it in the manifest, so a killed job resumes like a local one
and both runners write the same rows. Each actor takes one GPU when the cluster has GPUs (``num_gpus_per_actor``),
else ``num_cpus_per_actor`` CPUs. Point ``address`` at a running cluster to scale out; the output folder must then be
on storage every node can write to.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geovl._optional import require
from geovl.data.partitioned import mark_complete, note_partition, plan_partitions
from geovl.data.sources import Source
from geovl.models.decoding import DecodingConfig
from geovl.tasks.captioning.batch import (
    MANIFEST,
    CaptionRunConfig,
    CaptionRunSummary,
    caption_partition_to,
    open_caption_run,
)

__all__ = ["run_captions_ray"]


class _PartitionCaptioner:
    """Ray actor: one captioner replica that captions whole partitions."""

    def __init__(self, model: str, device: str, precision: str, out: str, config: CaptionRunConfig,
                 decoding: DecodingConfig, chip_readers: list[list[Any]]) -> None:
        from geovl.models.captioner import load_captioner

        self.model = load_captioner(model, device=device, precision=precision)
        self.out = Path(out)
        self.config = config
        self.decoding = decoding
        self.chip_readers = chip_readers

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        names, counts, failed = [], [], []
        for name, chunk in zip(batch["name"], batch["chunk"], strict=True):
            n, bad = caption_partition_to(self.out, self.model, str(name), list(chunk), self.chip_readers,
                                          self.config, self.decoding, workers=0)
            names.append(str(name))
            counts.append(n)
            failed.append([list(b) for b in bad])
        return {"name": names, "count": counts, "failures": failed}


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
    ray = require("ray", extra="dist", feature="the Ray runner")
    from geovl.models.captioner import load_captioner

    config = config or CaptionRunConfig()
    decoding = decoding or DecodingConfig()
    if num_actors < 1:
        raise ValueError(f"num_actors must be >= 1, got {num_actors}")
    record = load_captioner(model, device="cpu", precision="fp32").record()  # identity for the manifest
    out, manifest = open_caption_run(record, decoding, sources, out_dir, config)
    done = {p["name"]: p for p in manifest["partitions"]}
    planned = list(plan_partitions(sources, config.partition_size, config.limit))
    pending = [(name, chunk) for name, chunk in planned if name not in done]
    chunks = dict(pending)
    summary = CaptionRunSummary(out, sum(len(c) for _, c in planned), 0, sum(p["count"] for p in done.values()), 0,
                                0.0, 0)
    start = time.perf_counter()
    if pending:
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
        gpus = num_gpus_per_actor if num_gpus_per_actor is not None else \
            (1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0)
        items = [{"name": name, "chunk": chunk} for name, chunk in pending]
        results = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _PartitionCaptioner,
            fn_constructor_kwargs={"model": model, "device": device, "precision": precision, "out": str(out),
                                   "config": config, "decoding": decoding,
                                   "chip_readers": [s.chip_readers() for s in sources]},
            batch_size=1, concurrency=num_actors, num_cpus=num_cpus_per_actor, num_gpus=gpus,
        )
        for row in results.iter_rows():
            bad = [(str(p), str(e)) for p, e in row["failures"]]
            note_partition(out / MANIFEST, manifest, row["name"], chunks[row["name"]], int(row["count"]), len(bad))
            summary.captioned += int(row["count"])
            summary.failed += len(bad)
            summary.failures += bad
    mark_complete(out / MANIFEST, manifest)
    summary.seconds = time.perf_counter() - start
    summary.partitions = len(manifest["partitions"])
    return summary
