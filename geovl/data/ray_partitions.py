"""Partitioned runs as Ray Data jobs: partitions are the unit of work, model replicas the actors.

:func:`run_partitions_ray` streams the pending partitions of a run (:mod:`geovl.data.partitioned`) through
``map_batches`` with :class:`PartitionActor`, which loads its model once per replica (``load()``) and processes whole
partitions (``process(model, name, items) -> (rows written, failures)``, writing the partition's files itself). As
each partition comes back the driver lists it in the run's manifest, so a killed job resumes like a local one. Point
``address`` at a running cluster (``ray start --head`` / ``ray://host:10001``) to scale out; the output folder must
then be on storage every node can write to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geovl._optional import require
from geovl.data.partitioned import Item, note_partition

__all__ = ["PartitionActor", "RayRunResult", "run_partitions_ray"]

Failures = list[tuple[str, str]]


class PartitionActor:
    """Ray actor: one model replica (``load()``) that processes whole partitions (``process(model, name, items)``).
    Both callables must pickle (module-level functions, or ``functools.partial`` of them)."""

    def __init__(self, load: Callable[[], Any], process: Callable[[Any, str, list[Item]], tuple[int, Failures]]
                 ) -> None:
        self.model = load()
        self.process = process

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        names, counts, failed = [], [], []
        for name, chunk in zip(batch["name"], batch["chunk"], strict=True):
            n, bad = self.process(self.model, str(name), list(chunk))
            names.append(str(name))
            counts.append(n)
            failed.append([list(b) for b in bad])
        return {"name": names, "count": counts, "failures": failed}


@dataclass
class RayRunResult:
    """Rows written and failures of the partitions this job processed."""

    count: int = 0
    failures: Failures = field(default_factory=list)


def run_partitions_ray(pending: list[tuple[str, list[Item]]], manifest_path: Path, manifest: dict[str, Any],
                       load: Callable[[], Any], process: Callable[[Any, str, list[Item]], tuple[int, Failures]], *,
                       num_actors: int = 2, num_cpus_per_actor: float = 1.0, num_gpus_per_actor: float | None = None,
                       address: str | None = None) -> RayRunResult:
    """Process ``pending`` partitions on ``num_actors`` replicas, listing each in the manifest as it returns.

    ``num_gpus_per_actor`` defaults to 1 when the cluster has GPUs, else 0.

    Raises:
        ValueError: ``num_actors`` < 1.
    """
    if num_actors < 1:
        raise ValueError(f"num_actors must be >= 1, got {num_actors}")
    result = RayRunResult()
    if not pending:
        return result
    ray = require("ray", extra="dist", feature="the Ray runner")
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    gpus = num_gpus_per_actor if num_gpus_per_actor is not None else \
        (1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0)
    chunks = dict(pending)
    items = [{"name": name, "chunk": chunk} for name, chunk in pending]
    rows = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        PartitionActor, fn_constructor_kwargs={"load": load, "process": process}, batch_size=1,
        concurrency=num_actors, num_cpus=num_cpus_per_actor, num_gpus=gpus,
    )
    for row in rows.iter_rows():
        bad = [(str(p), str(e)) for p, e in row["failures"]]
        note_partition(manifest_path, manifest, row["name"], chunks[row["name"]], int(row["count"]), len(bad))
        result.count += int(row["count"])
        result.failures += bad
    return result
