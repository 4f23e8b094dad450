"""Scalar logging of a training run: ``<output>/metrics.csv`` (long format: ``step,key,value``), and TensorBoard
event files under ``<output>/tensorboard`` when asked for and installed.

Only the main process logs (other ranks get a disabled logger). A resumed run first drops the rows logged after
the checkpoint it resumes from (they are about to be redone), so the file never holds a step twice.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any

from geovl.io.fs import atomic_write_text

__all__ = ["METRICS_FILE", "MetricsLog", "RateMeter"]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
_HEADER = ["step", "key", "value"]


class MetricsLog:
    """Appends ``(step, key, value)`` rows to ``<output>/metrics.csv`` and mirrors them to TensorBoard."""

    def __init__(self, output: Path, *, tensorboard: bool = False, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = output / METRICS_FILE
        self.tb: Any = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(output / "tensorboard"))
            except ImportError:
                logger.warning("tensorboard is not installed; logging to %s only", METRICS_FILE)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Append one row per value (formatted with 6 significant digits) at ``step``."""
        if not self.enabled:
            return
        if not self.path.is_file():  # the header appears with the file, never a moment later (atomic create)
            header = io.StringIO(newline="")
            csv.writer(header).writerow(_HEADER)
            atomic_write_text(self.path, header.getvalue())
        with self.path.open("a", newline="") as fh:
            writer = csv.writer(fh)
            for key, value in values.items():
                writer.writerow([step, key, f"{value:.6g}"])
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)
            self.tb.flush()

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (by a killed run, after its last checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        with self.path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
        if len(kept) == len(rows):
            return
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows(kept)
        atomic_write_text(self.path, buffer.getvalue())

    def close(self) -> None:
        """Close the TensorBoard writer (the CSV file is closed after every write)."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None


class RateMeter:
    """Items per second over a window that restarts at each :meth:`rate` call."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.count = 0

    def restart(self) -> None:
        """Start a new, empty window now."""
        self.start, self.count = time.perf_counter(), 0

    def add(self, n: int) -> None:
        self.count += n

    def rate(self) -> float:
        """Items per second since the window started; starts a new window."""
        now = time.perf_counter()
        value = self.count / max(now - self.start, 1e-9)
        self.start, self.count = now, 0
        return value
