"""SIGINT/SIGTERM while training: a checkpoint and the model are saved, the run resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from ostl.run.checkpoint import list_checkpoints, load_checkpoint
from ostl.run.cli import main
from ostl.run.model import MODEL, MODEL_LAST, evaluate_model, load, read_model
from ostl.run.resume import Checkpointer
from ostl.run.signals import Interrupted, Signals

OPTS = [
    "--task", "digits", "--hidden", "8", "--batch-size", "16", "--task-opt", "steps=4",
    "--task-opt", "test_size=16", "--no-progress",
]  # fmt: skip

main_thread_only = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers can only be set in the main thread",
)


@main_thread_only
def test_signals_records_the_first_and_stops_at_the_second() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with Signals() as signals:
        assert signal.getsignal(signal.SIGTERM) == signals._handle  # ours: safe to raise
        signal.raise_signal(signal.SIGTERM)
        assert signals.caught == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with Signals(enabled=False) as signals:
        assert signal.getsignal(signal.SIGINT) == before[0] and signals.caught is None
    e = Interrupted(signal.SIGTERM, 7, Path("r"), checkpoint=True)
    assert isinstance(e, KeyboardInterrupt) and e.status == 143
    assert e.report().endswith("continue with: ostl train --resume r")


def _signal_at(step: int, signum: int) -> Callable[..., None]:
    """A Checkpointer.after_step that sends ``signum`` to this process after ``step``."""
    real = Checkpointer.after_step

    def after_step(self: Checkpointer, at: int, payload: Any) -> None:
        real(self, at, payload)
        if at == step:
            assert signal.getsignal(signum) != signal.SIG_DFL  # the run's handler is set
            signal.raise_signal(signum)

    return after_step


@main_thread_only
def test_sigterm_saves_a_resumable_run_that_ends_as_the_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    opts = [*OPTS, "--epochs", "2", "--task-opt", "train_size=48"]  # 3 batches × 4 steps
    full, run = tmp_path / "full", tmp_path / "run"
    assert main(["train", *opts, "--out", str(full)]) == 0
    handler = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(Checkpointer, "after_step", _signal_at(17, signal.SIGTERM))
    assert main(["train", *opts, "--out", str(run)]) == 143
    err = capsys.readouterr().err
    assert "interrupted by SIGTERM after step 17" in err and "Traceback" not in err
    assert f"continue with: ostl train --resume {run}\n" in err
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000000000017.pt"]
    assert read_model(run / MODEL_LAST)[1]["step"] == "17" and (run / MODEL).exists()
    assert (run / "metrics.csv").read_text().count("\n") == 2  # a header and epoch 1
    assert signal.getsignal(signal.SIGTERM) == handler  # restored
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    a, _ = load(full, "last")
    b, _ = load(run, "last")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert evaluate_model(run).value == evaluate_model(full).value


def test_sigint_mid_run_leaves_a_resumable_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m ostl train`` gets SIGINT once its first epoch is written: it saves, prints
    the resume command, exits with 130; ``ostl train --resume`` completes the run."""
    out = tmp_path / "run"
    opts = [*OPTS, "--epochs", "6", "--task-opt", "train_size=320"]  # 20 batches an epoch
    proc = subprocess.Popen(
        [sys.executable, "-m", "ostl", "train", *opts, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.csv").exists():  # the first epoch is done
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.01)
        assert (out / "config.json").exists() and (out / MODEL).exists()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted by SIGINT" in stderr
    assert f"continue with: ostl train --resume {out}" in stderr
    assert not (out / "summary.json").exists()  # interrupted before the end
    saved = load_checkpoint(out)
    assert 80 <= saved["learner"]["steps"] < 6 * 80  # 80 steps an epoch, after the first
    assert (out / MODEL_LAST).exists()
    load(out, "last")  # the current weights load
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert "| ostl |" in capsys.readouterr().out and (out / "summary.json").exists()
