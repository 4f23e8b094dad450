"""geovl.training.runtime on a toy trainer: exact resume (every RNG), refusals, log truncation, schedules."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from geovl.training.data import BatchPlan
from geovl.training.runtime import RunSpec, Runtime, TrainResult


def _toy_run(out: Path, *, total: int = 6, stop_after: int | None = None, resume: str = "auto",
             config_hash: str = "toy", eval_every: int = 0, stateful: bool = True) -> tuple[TrainResult, nn.Linear]:
    """A trainer whose batches come from the global torch, NumPy and Python generators."""
    spec = RunSpec(output=out, total_steps=total, config={"toy": True}, config_hash=config_hash, seed=3,
                   device="cpu", log_every=1, save_every=2, eval_every=eval_every)
    losses: list[float] = []
    with Runtime(spec, resume=resume, progress=False, stop_after=stop_after) as rt:
        model = nn.Linear(4, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        objects: dict[str, Any] = {"optimizer": optimizer} if stateful else {}
        rt.resume_state(model, objects)
        for _ in rt.steps():
            x = torch.randn(8, 4) + random.random() + float(np.random.rand())
            loss = model(x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            rt.advance(8)
            if rt.should_log(rt.step):
                rt.log(rt.step, {"train/loss": losses[-1]})
            rt.maybe_eval(rt.step, lambda: {"eval/weight_sum": float(model.weight.detach().sum())})
            if rt.should_save(rt.step):
                rt.save(model, objects)
        final = rt.on_main(lambda: out / "final") if rt.completed else None
    return TrainResult(out, final, rt.steps_done, losses, rt.evals), model


def _rows(out: Path) -> list[tuple[int, str]]:
    with (out / "metrics.csv").open(newline="") as fh:
        return [(int(r["step"]), r["key"]) for r in csv.DictReader(fh)]


def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    ref, ref_model = _toy_run(tmp_path / "ref")
    first, _ = _toy_run(tmp_path / "run", stop_after=3)
    assert (first.steps, first.final) == (3, None)
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step-0000003"
    with (tmp_path / "run" / "metrics.csv").open("a", newline="") as fh:  # rows a killed run logged after it
        csv.writer(fh).writerows([[4, "train/loss", "1.0"], [5, "train/loss", "1.0"]])

    second, model = _toy_run(tmp_path / "run")
    assert second.steps == 3 and second.final == tmp_path / "run" / "final"
    assert first.losses + second.losses == ref.losses
    assert torch.equal(model.weight, ref_model.weight) and torch.equal(model.bias, ref_model.bias)
    assert _rows(tmp_path / "run") == [(s, "train/loss") for s in range(1, 7)]
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"toy": True}
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["latest", "step-0000004", "step-0000006"]


def test_refuses_another_run_and_a_checkpoint_without_its_state(tmp_path: Path) -> None:
    _toy_run(tmp_path / "run", total=2)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        _toy_run(tmp_path / "run", resume="no")
    with pytest.raises(ValueError, match="different model/data/optimizer/loss config"):
        _toy_run(tmp_path / "run", config_hash="other")
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        _toy_run(tmp_path / "new", resume=str(tmp_path / "missing"))
    _toy_run(tmp_path / "bare", total=2, stateful=False)
    with pytest.raises(ValueError, match="holds no state for optimizer"):
        _toy_run(tmp_path / "other", total=4, resume=str(tmp_path / "bare" / "checkpoints" / "step-0000002"))


def test_periodic_evaluation_skips_the_last_step_and_stale_temporaries_go(tmp_path: Path) -> None:
    stale = tmp_path / "run" / "checkpoints" / ".step-0000002.0a1b2c3d.tmpdir"
    stale.mkdir(parents=True)
    result, _ = _toy_run(tmp_path / "run", eval_every=2)
    assert [e["step"] for e in result.evals] == [2, 4]
    assert ("eval/weight_sum" in result.evals[0]) and not stale.exists()


def test_runspec_and_batch_plan_reject_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="save_every must be >= 1"):
        RunSpec(output=Path("x"), total_steps=5, save_every=0)
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        BatchPlan(epoch_size=10, batch_size=4, grad_accum=2, world=2)


def test_batch_plan_splits_a_step_the_same_way_for_any_world_size() -> None:
    one = BatchPlan(epoch_size=64, batch_size=8)
    two = [BatchPlan(epoch_size=64, batch_size=4, rank=r, world=2) for r in range(2)]
    for step in range(one.steps_per_epoch + 2):
        whole = sorted(p for batch in one.positions(step, step + 1) for p in batch)
        split = sorted(p for plan in two for batch in plan.positions(step, step + 1) for p in batch)
        assert whole == split
    assert one.epoch_of(one.steps_per_epoch) == 1
    assert list(one.positions(8, 9)) == [list(range(0, 8))]


def test_required_packages_are_named_before_work_starts() -> None:
    from geovl.training.config import SourceConfig, TrainConfig, required_packages

    config = TrainConfig()
    assert required_packages(config) == {}
    config.run.tensorboard = True
    config.data.sources = [SourceConfig(path="x", format="git10m")]
    assert required_packages(config) == {"tensorboard": "train", "datasets": "train"}


def test_the_metrics_file_is_born_with_its_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader (or a kill) between creating metrics.csv and writing its first line must never find it headerless:
    the file appears whole, header included, and rows are appended after."""
    from geovl.training import metrics

    log = metrics.MetricsLog(tmp_path)
    seen: list[str] = []
    real_open = Path.open

    def spying_open(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if self == log.path and "a" in mode:  # the moment rows are about to be appended
            seen.append(self.read_text())
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spying_open)
    log.log(1, {"train/loss": 2.0})
    log.log(2, {"train/loss": 1.5})
    assert seen[0].splitlines() == ["step,key,value"]
    with real_open(log.path, newline="") as fh:
        assert [(r["step"], r["value"]) for r in csv.DictReader(fh)] == [("1", "2"), ("2", "1.5")]
