"""Run the embedding pipeline as a Ray Data job: partitions are the unit of work, model replicas the actors.

The driver plans the same partitions as the local runner (same ids, same files), skips those a previous run
finished, and streams the rest through ``map_batches`` with an actor class that loads the model once per
replica. As each partition comes back the driver lists it in the manifest, so a killed job resumes like a local
one. Point ``address`` at a running cluster (``ray start --head`` / ``ray://host:10001``) to scale out; the
output folder must then be on storage every node can write to.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from geovl._optional import require
from geovl.data.sources import Source
from geovl.index.pipeline import (
    EmbedConfig,
    EmbedSummary,
    embed_partition_to,
    finish_run,
    note_partition,
    open_run,
    plan_partitions,
)


class _PartitionEmbedder:
    """Ray actor: holds one model replica and embeds whole partitions."""

    def __init__(self, model: str, device: str, precision: str, out: str, config: EmbedConfig,
                 chip_readers: list[list[Any]]) -> None:
        from pathlib import Path

        from geovl.models import load_backbone

        self.backbone = load_backbone(model, device=device, precision=precision)
        self.out = Path(out)
        self.config = config
        self.chip_readers = chip_readers

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        names, counts, failed = [], [], []
        for name, chunk in zip(batch["name"], batch["chunk"], strict=True):
            n, bad = embed_partition_to(self.out, self.backbone, str(name), list(chunk), self.chip_readers,
                                        self.config, workers=0)
            names.append(str(name))
            counts.append(n)
            failed.append([list(b) for b in bad])
        return {"name": names, "count": counts, "failures": failed}


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
) -> EmbedSummary:
    """Embed ``sources`` into ``out_dir`` with ``num_actors`` model replicas on a Ray cluster (local by default)."""
    import time

    ray = require("ray", extra="dist", feature="the Ray runner")
    from geovl.models import load_backbone

    config = config or EmbedConfig()
    if num_actors < 1:
        raise ValueError(f"num_actors must be >= 1, got {num_actors}")
    probe = load_backbone(model, device="cpu", precision="fp32")
    from geovl.models.record import model_record

    record = model_record(probe)
    record.update(precision=precision, device=device)
    out, manifest = open_run(record, probe.embed_dim, sources, out_dir, config)
    del probe
    done = {p["name"]: p for p in manifest["partitions"]}
    planned = list(plan_partitions(sources, config))
    pending = [(name, chunk) for name, chunk in planned if name not in done]
    chunks = dict(pending)
    start = time.perf_counter()
    embedded = failed = 0
    failures: list[tuple[str, str]] = []
    if pending:
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
        items = [{"name": name, "chunk": chunk} for name, chunk in pending]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        results = ds.map_batches(
            _PartitionEmbedder,
            fn_constructor_kwargs={"model": model, "device": device, "precision": precision, "out": str(out),
                                   "config": config, "chip_readers": [s.chip_readers() for s in sources]},
            batch_size=1,
            concurrency=num_actors,
            num_cpus=num_cpus_per_actor,
        )
        for row in results.iter_rows():
            bad = [(str(p), str(e)) for p, e in row["failures"]]
            note_partition(out, manifest, row["name"], chunks[row["name"]], int(row["count"]), len(bad))
            embedded += int(row["count"])
            failed += len(bad)
            failures += bad
    finish_run(out, manifest)
    total = sum(len(chunk) for _, chunk in planned)
    return EmbedSummary(out_dir=out, total=total, embedded=embedded, resumed=sum(p["count"] for p in done.values()),
                        failed=failed, seconds=time.perf_counter() - start, partitions=len(manifest["partitions"]),
                        failures=failures)
