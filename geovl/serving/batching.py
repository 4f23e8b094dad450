"""A micro-batcher: concurrent requests share forward passes.

Request threads :meth:`~MicroBatcher.submit` items into a bounded queue and get one future per item. One worker
thread takes up to ``max_batch`` items, waiting at most ``max_wait_ms`` after the oldest arrived, and runs them
through ``process`` in one call. A full queue rejects the whole submission at once (:class:`QueueFullError`,
HTTP 503 in the server) instead of letting latency grow without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class QueueFullError(RuntimeError):
    """The batcher's queue has no room for the submitted items; try again later."""


class BatcherClosedError(RuntimeError):
    """The batcher was closed before (or while) the items were waiting."""


@dataclass
class _Item(Generic[T, R]):
    value: T
    future: Future[R]
    enqueued: float = field(default_factory=time.monotonic)


class MicroBatcher(Generic[T, R]):
    """Group items from many threads into batches for one ``process`` call each.

    Args:
        process: maps a list of items to one result per item, in order. An exception fails the batch; the
            batcher then re-runs its items one at a time so that only the item that raises again fails.
        max_batch: most items per ``process`` call.
        max_wait_ms: how long the oldest waiting item may wait for the batch to fill (milliseconds).
        queue_size: most items waiting (not yet taken by the worker).
        name: the worker thread's name.
    """

    def __init__(
        self,
        process: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 10.0,
        queue_size: int = 256,
        name: str = "geovl-batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self._process = process
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self._name = name
        self._queue: deque[_Item[T, R]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.batches_run = 0
        self.items_run = 0

    # ---- life cycle
    def start(self) -> None:
        """Start the worker thread (idempotent; :meth:`submit` also starts it)."""
        with self._cond:
            if self._closing:
                raise BatcherClosedError("the batcher is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._worker, name=self._name, daemon=True)
                self._thread.start()

    def close(self, *, cancel_pending: bool = False, timeout: float | None = 30.0) -> None:
        """Stop accepting items, then finish the queued ones (or fail them with :class:`BatcherClosedError` when
        ``cancel_pending``) and join the worker thread (waiting at most ``timeout`` seconds)."""
        with self._cond:
            self._closing = True
            if cancel_pending:
                while self._queue:
                    item = self._queue.popleft()
                    if not item.future.done():
                        item.future.set_exception(BatcherClosedError("the server is shutting down"))
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("batcher thread %s did not stop within %s s", self._name, timeout)

    def __enter__(self) -> MicroBatcher[T, R]:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """The worker thread is alive and the batcher accepts items."""
        with self._cond:
            return self._thread is not None and self._thread.is_alive() and not self._closing

    @property
    def pending(self) -> int:
        """Items waiting for the worker."""
        with self._cond:
            return len(self._queue)

    # ---- submission
    def submit(self, values: Sequence[T]) -> list[Future[R]]:
        """Queue ``values`` together and return one future per value, in order.

        Raises:
            QueueFullError: the queue has no room for all of them (none is queued).
            BatcherClosedError: the batcher is closed.
            ValueError: more values than the queue can ever hold, or none.
        """
        if len(values) == 0:
            raise ValueError("nothing to submit")
        if len(values) > self.queue_size:
            raise ValueError(f"{len(values)} items can never fit a queue of {self.queue_size}")
        if self._thread is None:
            self.start()
        items = [_Item[T, R](value, Future()) for value in values]
        with self._cond:
            if self._closing:
                raise BatcherClosedError("the batcher is closed")
            if len(self._queue) + len(items) > self.queue_size:
                raise QueueFullError(
                    f"the queue is full ({len(self._queue)} of {self.queue_size} waiting, {len(items)} more asked)"
                )
            self._queue.extend(items)
            self._cond.notify_all()
        return [item.future for item in items]

    # ---- worker
    def _next_batch(self) -> list[_Item[T, R]] | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None  # closing and drained
            deadline = self._queue[0].enqueued + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            n = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _worker(self) -> None:
        while (batch := self._next_batch()) is not None:
            # A request that gave up (its future cancelled) costs no forward pass.
            live = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if live:
                self._run(live)

    def _run(self, batch: list[_Item[T, R]]) -> None:
        try:
            results = self._process([item.value for item in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"process returned {len(results)} results for {len(batch)} items")
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            logger.info("a batch of %d failed (%s); retrying its items one by one", len(batch), exc)
            for item in batch:
                self._run([item])
            return
        self.batches_run += 1
        self.items_run += len(batch)
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)
