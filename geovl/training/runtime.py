"""The run machinery every ``geovl train`` command shares, whatever it trains.

A trainer builds its model and optimizer and then drives a :class:`Runtime`::

    with Runtime(spec, resume="auto") as rt:                # processes, device, resume decision, seeds
        model, optimizer = build(rt.device)
        rt.resume_state(model, {"optimizer": optimizer})    # load the checkpoint (if resuming), open the log
        for index in rt.steps():                            # optimizer steps still to run in this call
            loss = train_one_step(index)
            rt.advance(samples_per_step, loss=f"{loss:.3f}")
            if rt.should_log(rt.step):
                rt.log(rt.step, {"train/loss": loss})
            rt.maybe_eval(rt.step, evaluate)
            if rt.should_save(rt.step):
                rt.save(model, {"optimizer": optimizer})
        final = rt.on_main(export) if rt.completed else None

Rules it enforces:

* the run folder is ``spec.output``: ``config.json``, ``metrics.csv`` (:mod:`geovl.training.metrics`),
  ``tensorboard/`` and ``checkpoints/step-NNNNNNN`` with a ``latest`` pointer (:mod:`geovl.training.checkpoint`);
* ``resume="auto"`` continues from ``checkpoints/latest`` when there is one; ``"no"`` refuses a folder that already
  holds checkpoints; any other value is a checkpoint folder to start from. A checkpoint written under another
  ``spec.config_hash`` is refused, so one run never overwrites another. The decision is taken before anything
  is written;
* only rank 0 writes files; every rank calls every method (they synchronise where they must);
* a checkpoint holds the model, the ``state_dict`` of each stateful object and every rank's RNG states, so a
  resumed run repeats exactly what an uninterrupted one does when its data order depends only on the step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from geovl.io.fs import atomic_write_json, remove_stale_temps
from geovl.training.checkpoint import TrainingState, latest_checkpoint, load_checkpoint, save_checkpoint
from geovl.training.config import config_to_dict, settings_hash
from geovl.training.distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    init_distributed,
    shutdown_distributed,
)
from geovl.training.metrics import MetricsLog, RateMeter
from geovl.training.rng import get_rng_state, seed_all, set_rng_state

__all__ = ["RunSpec", "Runtime", "Stateful", "TrainResult"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"


@dataclass
class TrainResult:
    """What a ``train_*`` call produced.

    Attributes:
        output: the run folder.
        final: the exported model (rank 0, once the run has done all its steps), else ``None``.
        steps: optimizer steps done by this call.
        losses: the loss of each of those steps.
        evals: the evaluations recorded by this call (``{"step": ..., "<figure>": ...}``).
    """

    output: Path
    final: Path | None
    steps: int
    losses: list[float] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)


class Stateful(Protocol):
    """An object a checkpoint carries: an optimizer, a learning-rate scheduler, a grad scaler..."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], /) -> Any: ...


@dataclass(frozen=True)
class RunSpec:
    """What the runtime needs to know of a run, whatever it trains.

    Attributes:
        output: the run folder.
        total_steps: optimizer steps of the whole run.
        config: the run's full configuration as plain data, written to ``<output>/config.json``.
        config_hash: identifies the settings a run cannot change when resumed (model, data, optimizer, loss);
            a checkpoint written under another hash is refused.
        seed: base seed (rank ``r`` seeds its generators with ``seed + r``).
        device: device preference (``auto``, ``cpu``, ``cuda``...).
        log_every / save_every: log / checkpoint every N steps (and at the last step of a call).
        eval_every: evaluate every N steps before the last (0: never; a final evaluation is the trainer's).
        keep_checkpoints: newest checkpoints kept.
        tensorboard: also write TensorBoard event files.
    """

    output: Path
    total_steps: int
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    seed: int = 0
    device: str = "auto"
    log_every: int = 10
    save_every: int = 200
    eval_every: int = 0
    keep_checkpoints: int = 2
    tensorboard: bool = False

    @classmethod
    def for_config(cls, config: Any) -> RunSpec:
        """The spec of a trainer's config (``TrainConfig``, ``CaptionerTrainConfig``: sections ``run``, ``optim``,
        ``eval``), hashed with :func:`geovl.training.config.settings_hash`."""
        run = config.run
        return cls(output=Path(run.output), total_steps=config.optim.steps, config=config_to_dict(config),
                   config_hash=settings_hash(config), seed=run.seed, device=run.device, log_every=run.log_every,
                   save_every=run.save_every, eval_every=config.eval.every_steps,
                   keep_checkpoints=run.keep_checkpoints, tensorboard=run.tensorboard)

    def __post_init__(self) -> None:
        for name in ("total_steps", "log_every", "save_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")


class Runtime:
    """Processes, run folder, resume, checkpoints, RNG state, logging, periodic evaluation and progress of a run.

    Args:
        spec: the run (see :class:`RunSpec`).
        resume: ``"auto"``, ``"no"`` or a checkpoint folder (see the module docstring).
        progress: show a step progress bar (rank 0 only).
        stop_after: stop after this many optimizer steps of this call (as a crash would: no final export).
    """

    def __init__(self, spec: RunSpec, *, resume: str = "auto", progress: bool = True,
                 stop_after: int | None = None) -> None:
        if stop_after is not None and stop_after < 1:
            raise ValueError(f"stop_after must be >= 1, got {stop_after}")
        self.spec = spec
        self.resume = resume
        self.progress = progress
        self.stop_after = stop_after
        self.dist = DistInfo()
        self.device = torch.device("cpu")
        self.state = TrainingState(config_hash=spec.config_hash)
        self.start_step = 0
        self.end_step = spec.total_steps
        self.evals: list[dict[str, Any]] = []
        self._from: Path | None = None
        self._log: MetricsLog | None = None
        self._bar: Any = None
        self._meter = RateMeter()
        self._started = False

    # ---------------------------------------------------------------- set-up

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish()

    def start(self) -> Runtime:
        """Join the process group, pick the device, decide where the run starts, create the folder, seed."""
        if self._started:
            raise RuntimeError("Runtime.start() was already called")
        self.dist, self.device = init_distributed(self.spec.device)
        self._started = True
        self._from = self._checkpoint_to_resume()
        if self.main:
            self.spec.output.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.spec.output)
        seed_all(self.spec.seed + self.dist.rank)
        return self

    def _checkpoint_to_resume(self) -> Path | None:
        if self.resume == "auto":
            return latest_checkpoint(self.checkpoints)
        if self.resume == "no":
            if latest_checkpoint(self.checkpoints) is not None:
                raise ValueError(f"{self.spec.output} already holds checkpoints of a run; resume it (--resume auto) "
                                 "or choose another --output")
            return None
        path = Path(self.resume)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such checkpoint folder")
        return path

    def resume_state(self, model: nn.Module, stateful: Mapping[str, Stateful]) -> TrainingState:
        """Load the checkpoint the run starts from (if any) into ``model`` and ``stateful``, restore this rank's
        RNG states, then (rank 0) open the log, drop its rows past the checkpoint and write ``config.json``.

        Call it once, after building the model and optimizer, before the first step.

        Raises:
            ValueError: the checkpoint was written under another config hash, or lacks one of ``stateful``.
        """
        if not self._started:
            raise RuntimeError("call Runtime.start() before resume_state()")
        if self._from is not None:
            self._load(self._from, model, stateful)
        self.start_step = self.state.step
        self.end_step = self.spec.total_steps
        if self.stop_after is not None:
            self.end_step = min(self.end_step, self.start_step + self.stop_after)
        self._log = MetricsLog(self.spec.output, tensorboard=self.spec.tensorboard, enabled=self.main)
        if self.main:
            self._log.truncate_after(self.state.step)
            atomic_write_json(self.spec.output / CONFIG_FILE, self.spec.config)
        return self.state

    def _load(self, path: Path, model: nn.Module, stateful: Mapping[str, Stateful]) -> None:
        state, extra = load_checkpoint(path, model)
        if state.config_hash != self.spec.config_hash:
            raise ValueError(f"{path} was written by a run with a different model/data/optimizer/loss config; "
                             "use another --output for a new run")
        missing = sorted(set(stateful) - set(extra))
        if missing:
            raise ValueError(f"{path} holds no state for {', '.join(missing)}; it was written by another trainer")
        for name, obj in stateful.items():
            obj.load_state_dict(extra[name])
        rngs = extra["rng"]
        set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
        self.state = state
        if self.main:
            logger.info("resuming from %s (step %d)", path, state.step)

    # ---------------------------------------------------------------- properties

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.dist.main

    @property
    def world(self) -> int:
        """Number of processes."""
        return self.dist.world

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def step(self) -> int:
        """Optimizer steps done, counting those of earlier calls."""
        return self.state.step

    @property
    def checkpoints(self) -> Path:
        """The run's checkpoint folder."""
        return self.spec.output / CHECKPOINTS

    @property
    def completed(self) -> bool:
        """Whether the run has done all ``spec.total_steps`` steps."""
        return self.state.step >= self.spec.total_steps

    @property
    def steps_done(self) -> int:
        """Optimizer steps done by this call."""
        return self.state.step - self.start_step

    # ---------------------------------------------------------------- the loop

    def steps(self) -> Iterator[int]:
        """The 0-based index of each step still to run in this call; call :meth:`advance` after each."""
        if self._log is None:
            raise RuntimeError("call Runtime.resume_state() before steps()")
        if self.progress and self.main and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.spec.total_steps, initial=self.state.step, unit="step", dynamic_ncols=True)
        self._meter.restart()
        while self.state.step < self.end_step:
            index = self.state.step
            yield index
            if self.state.step == index:
                raise RuntimeError(f"step {index} ended without Runtime.advance()")
        self._close_bar()

    def advance(self, samples: int, **postfix: str) -> None:
        """Count one optimizer step of ``samples`` samples (all ranks together); ``postfix`` goes on the bar."""
        self.state.step += 1
        self.state.samples += samples
        self._meter.add(samples)
        if self._bar is not None:
            self._bar.update(1)
            if postfix:
                self._bar.set_postfix(**postfix)

    def samples_per_s(self) -> float:
        """Throughput since the last call (or the start of the loop)."""
        return self._meter.rate()

    def should_log(self, step: int) -> bool:
        return step % self.spec.log_every == 0 or step == self.end_step

    def should_save(self, step: int) -> bool:
        return step % self.spec.save_every == 0 or step == self.end_step

    def should_eval(self, step: int) -> bool:
        every = self.spec.eval_every
        return bool(every) and step % every == 0 and step < self.spec.total_steps

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log scalars at ``step`` (rank 0 writes; other ranks do nothing)."""
        if self._log is None:
            raise RuntimeError("call Runtime.resume_state() before log()")
        self._log.log(step, dict(metrics))

    def record_eval(self, step: int, figures: Mapping[str, float]) -> None:
        """Log evaluation figures and keep them in :attr:`evals`."""
        self.log(step, figures)
        self.evals.append({"step": step, **figures})

    def maybe_eval(self, step: int, evaluate: Callable[[], Mapping[str, float]]) -> Mapping[str, float] | None:
        """At an evaluation step, run ``evaluate`` on rank 0 and record its figures; every rank waits for it."""
        if not self.should_eval(step):
            return None
        return self.on_main(lambda: self._evaluate(step, evaluate))

    def _evaluate(self, step: int, evaluate: Callable[[], Mapping[str, float]]) -> Mapping[str, float]:
        figures = evaluate()
        self.record_eval(step, figures)
        return figures

    def save(self, model: nn.Module, stateful: Mapping[str, Stateful]) -> None:
        """Checkpoint the model, ``stateful`` and every rank's RNG states at the current step (rank 0 writes)."""
        rngs = all_gather_objects(self.dist, get_rng_state())
        if self.main:
            extra: dict[str, Any] = {name: obj.state_dict() for name, obj in stateful.items()}
            extra["rng"] = rngs
            save_checkpoint(self.checkpoints, model, self.state, extra, keep=self.spec.keep_checkpoints)
        barrier(self.dist)

    def on_main(self, fn: Callable[[], T]) -> T | None:
        """``fn()`` on rank 0 (``None`` elsewhere), then every rank waits for it."""
        result = fn() if self.main else None
        barrier(self.dist)
        return result

    # ---------------------------------------------------------------- teardown

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def finish(self) -> None:
        """Close the progress bar and the log and leave the process group (if this runtime joined it)."""
        self._close_bar()
        if self._log is not None:
            self._log.close()
        shutdown_distributed(self.dist)
