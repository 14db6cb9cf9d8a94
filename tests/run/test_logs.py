"""Training scalars: scalars.csv rows as they come, TensorBoard events, resumed runs."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import pytest

from ostl.errors import OptionError
from ostl.run.cli import main
from ostl.run.logs import COLUMNS, _keep_rows_until
from ostl.run.resume import Checkpointer
from ostl.run.train import resume, train

from .tiny import tiny

TINY = tiny(steps=5)
# 3 batches × 5 steps = 15 steps an epoch, 30 in all


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "scalars.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_rows_are_appended_during_the_run_at_every_nth_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    seen: dict[int, list[int]] = {}
    real = Checkpointer.after_step

    def after_step(self: Checkpointer, step: int, payload: Any) -> None:
        real(self, step, payload)
        if step in (6, 22):  # while training: the rows so far are already in the file
            seen[step] = (
                [int(r["step"]) for r in _rows(out)] if (out / "scalars.csv").exists() else []
            )

    monkeypatch.setattr(Checkpointer, "after_step", after_step)
    result = train(TINY, out, progress=False, log_every=7)
    assert seen == {6: [], 22: [7, 14, 21]}
    rows = _rows(out)
    assert tuple(rows[0]) == COLUMNS
    assert [(int(r["step"]), int(r["epoch"])) for r in rows] == [(7, 1), (14, 1), (21, 2), (28, 2)]
    assert all(float(r["lr"]) == result.config.lr for r in rows)
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds == sorted(seconds) and seconds[0] >= 0


def test_a_row_per_epoch_holds_the_epoch_train_loss(tmp_path: Path) -> None:
    """Every row averages the steps since the previous one: with a row every epoch (15 steps)
    that is the epoch's training loss."""
    result = train(TINY, tmp_path / "run", progress=False, log_every=15)
    losses = [float(r["loss"]) for r in _rows(tmp_path / "run")]
    assert losses == pytest.approx([h["train_loss"] for h in result.history], rel=1e-9)


def test_no_scalars_with_log_every_0_and_bad_values_refused(tmp_path: Path) -> None:
    train(TINY, tmp_path / "run", progress=False, log_every=0)
    assert not (tmp_path / "run" / "scalars.csv").exists()
    with pytest.raises(OptionError, match="log_every must be a non-negative int"):
        train(TINY, tmp_path / "x", progress=False, log_every=-1)
    with pytest.raises(OptionError, match="tensorboard needs a run folder"):
        train(TINY, None, progress=False, tensorboard=True)


def test_tensorboard_events_hold_the_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["train", "--task", "digits", "--hidden", "8", "--epochs", "2", "--batch-size",
                 "16", "--task-opt", "steps=5", "--task-opt", "train_size=48", "--task-opt",
                 "test_size=16", "--no-progress", "--out", str(out), "--log-every", "10",
                 "--tensorboard"]) == 0  # fmt: skip
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"train/loss", "train/lr", "epoch/train_loss", "epoch/train_accuracy"}
    assert expected | {"epoch/valid_accuracy"} <= tags
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [10, 20, 30]
    assert [e.value for e in loss] == pytest.approx([float(r["loss"]) for r in _rows(out)])
    assert [e.step for e in events.Scalars("epoch/valid_accuracy")] == [15, 30]


def test_tensorboard_missing_is_one_line_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard: ImportError
    out = tmp_path / "run"
    assert main(["train", "--task", "digits", "--out", str(out), "--tensorboard"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'ostl[tensorboard]'" in err
    assert not out.exists()  # refused before training: no run folder left


def test_a_resumed_run_drops_the_rows_after_its_checkpoint(tmp_path: Path) -> None:
    full = train(TINY, tmp_path / "full", progress=False, log_every=4)
    out = tmp_path / "run"
    train(TINY, out, progress=False, log_every=4, stop_after_steps=17)
    with open(out / "scalars.csv", "a", newline="") as f:  # rows a crash left after the stop
        f.write("20,2,9.0,0.002,1.0\r\n24,2,9.0,0.002,1.0\r\n28,2,9")
    done = resume(out, progress=False, log_every=4)
    want, got = _rows(tmp_path / "full"), _rows(out)
    assert (
        [r["step"] for r in got] == [r["step"] for r in want] == [str(4 * i) for i in range(1, 8)]
    )
    # the window across the stop (steps 17-20) is averaged as in the run never stopped
    assert [float(r["loss"]) for r in got] == pytest.approx([float(r["loss"]) for r in want])
    assert [h["train_loss"] for h in done.history] == [h["train_loss"] for h in full.history]


def test_a_torn_last_row_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "scalars.csv"
    rows = b"step,epoch,loss,lr,seconds\r\n5,1,0.5,0.1,1.0\r\n10,1,0.4,0.1,2.0\r\n"
    path.write_bytes(rows + b"15,1,0.")  # the process died while writing this row
    _keep_rows_until(path, 100)
    assert path.read_bytes() == rows
    _keep_rows_until(path, 9)
    assert [r["step"] for r in csv.DictReader(path.open())] == ["5"]
