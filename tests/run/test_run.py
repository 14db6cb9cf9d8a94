"""The collaborators of a training run (src/ostl/run/run.py): each on its own."""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ostl.errors import OptionError
from ostl.run.checkpoint import list_checkpoints, load_checkpoint
from ostl.run.evaluate import ModelSelection, better
from ostl.run.outputs import RunFolder
from ostl.run.resume import Checkpointer, RunOptions, Stopped
from ostl.run.run import DataParallel, Hardware, Run

from .tiny import tiny

TINY = tiny(steps=2, train_size=32, hidden=(4,))


def test_better_prefers_numbers_to_nan_and_follows_the_direction() -> None:
    assert better(0.5, None, True) and better(float("nan"), None, True)
    assert better(0.1, float("nan"), True) and not better(float("nan"), 0.1, True)
    assert better(0.6, 0.5, True) and not better(0.5, 0.5, True)  # the first of equal bests
    assert better(0.4, 0.5, False) and not better(0.6, 0.5, False)


def test_model_selection_keeps_the_best_validation_state() -> None:
    net = torch.nn.Linear(2, 1, bias=False)
    sel = ModelSelection(net, higher_is_better=True)  # type: ignore[arg-type]
    for epoch, (weight, valid) in enumerate([(1.0, 0.5), (2.0, 0.7), (3.0, 0.7), (4.0, 0.2)], 1):
        net.weight.data.fill_(weight)
        sel.offer(epoch, valid, net)  # type: ignore[arg-type]
    assert sel.best_epoch == 2 and sel.best_valid == 0.7
    assert sel.best_state["weight"].eq(2.0).all()  # a copy, not the live weights

    def test(n: torch.nn.Module) -> float:
        return float(n.weight.detach().sum())

    best, last = sel.select(net, 4, test)  # type: ignore[arg-type]
    assert (best, last) == (4.0, 8.0) and net.weight.eq(2.0).all()
    again = ModelSelection(net, higher_is_better=True)  # type: ignore[arg-type]
    again.load_state_dict(sel.state_dict())
    assert again.best_epoch == 2 and again.best_valid == 0.7


def test_model_selection_keep_last_is_the_final_state() -> None:
    net = torch.nn.Linear(2, 1, bias=False)
    sel = ModelSelection(net, higher_is_better=False)  # type: ignore[arg-type]
    sel.offer(1, 0.1, net)  # type: ignore[arg-type]
    net.weight.data.fill_(5.0)
    sel.keep_last(3, net)  # type: ignore[arg-type]
    calls: list[float] = []

    def test(n: torch.nn.Module) -> float:
        calls.append(float(n.weight.detach().sum()))
        return calls[-1]

    assert sel.select(net, 3, test) == (10.0, 10.0) and calls == [10.0]  # tested once


def test_checkpointer_writes_when_due_and_stops(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, RunOptions(checkpoint_every=2, keep=5, stop_after_steps=5))
    assert ckpt.active
    for step in range(1, 6):
        with pytest.raises(Stopped) if step == 5 else contextlib.nullcontext():
            ckpt.after_step(step, lambda step=step: {"step": torch.tensor(step)})
    files = list_checkpoints(tmp_path / "checkpoints")
    steps = [int(load_checkpoint(p)["step"]) for p in files]
    assert steps == [2, 4, 5]


@pytest.mark.parametrize(
    ("out", "options"), [(None, RunOptions(checkpoint_every=1)), ("run", RunOptions())]
)
def test_checkpointer_without_folder_or_options_writes_nothing(
    out: str | None, options: RunOptions, tmp_path: Path
) -> None:
    ckpt = Checkpointer(tmp_path / out if out else None, options)
    assert not ckpt.active
    ckpt.after_step(1, lambda: pytest.fail("no payload is built"))  # type: ignore[arg-type,return-value]
    assert ckpt.save({"x": torch.ones(1)}, 1) is None and not any(tmp_path.iterdir())


def test_run_folder_of_another_rank_writes_nothing(tmp_path: Path) -> None:
    for folder in (RunFolder(tmp_path / "a", writes=False), RunFolder(None)):
        folder.config(TINY)
        folder.metrics([{"epoch": 1.0}])
    assert not any(tmp_path.iterdir())
    RunFolder(tmp_path / "b").metrics([{"epoch": 1.0}])
    assert (tmp_path / "b" / "metrics.csv").read_text().split() == ["epoch", "1.0"]


def test_data_parallel_needs_a_sequence_per_process() -> None:
    parallel = DataParallel()
    assert parallel.world == 1 and parallel.is_main and not parallel.active
    parallel.world = 4
    with pytest.raises(OptionError, match="smaller than the 4 processes"):
        parallel.check_batch(3)


def test_hardware_of_a_digital_run_does_nothing_and_pcm_refuses_checkpoints() -> None:
    digital = Hardware(TINY, RunOptions(checkpoint_every=3), DataParallel())
    assert not digital.in_the_loop and digital.report(None, float) is None  # type: ignore[arg-type]
    for options in (RunOptions(checkpoint_every=3), RunOptions(resume=True)):
        with pytest.raises(OptionError, match="not saved"):
            Hardware(replace(TINY, hardware="pcm"), options, DataParallel())


def test_a_checkpoint_holds_the_run_and_its_model_selection(tmp_path: Path) -> None:
    run = Run(TINY, tmp_path, options=RunOptions(stop_after_steps=5), progress=False)
    result = run.execute()
    assert result.stopped_at_step == 5 and math.isnan(result.test_metric)
    saved = run.payload()
    assert saved is not None and saved["processes"] == 1 and saved["ranks"] == []
    assert set(saved["progress"]) == {
        "epoch", "epoch_rng", "history", "elapsed", "best_valid", "best_epoch", "best_state",
    }  # fmt: skip
    assert saved["progress"]["best_epoch"] == 1  # 2 batches × 2 steps: epoch 1 is done
    assert saved["config"] == run.cfg.to_json() and (tmp_path / "config.json").exists()
