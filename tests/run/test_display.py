"""Progress: bars on a terminal only; redirected, a few plain lines; --no-progress, nothing."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ostl.run import display
from ostl.run.cli import main
from ostl.run.display import Display, display_mode

TINY = [
    "--task", "digits", "--hidden", "8", "--epochs", "2", "--batch-size", "8",
    "--task-opt", "steps=4", "--task-opt", "train_size=160", "--task-opt", "test_size=16",
]  # fmt: skip


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_mode_follows_the_stream_and_the_switch() -> None:
    assert display_mode(True, _Terminal()) == "bars"
    assert display_mode(True, io.StringIO()) == "lines"
    assert display_mode(False, _Terminal()) is None
    closed = io.StringIO()
    closed.close()
    assert display_mode(True, closed) == "lines"


def test_a_redirected_train_writes_a_few_plain_lines(tmp_path: Path) -> None:
    """The real command, its stderr a pipe (not a terminal): one line per epoch, no \\r."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "ostl", "train", *TINY, "--out", str(tmp_path / "run")]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    lines = done.stderr.splitlines()
    assert 2 <= len(lines) <= 10, lines
    assert any(line.startswith("ostl epoch 1/2: train loss") for line in lines)
    assert any(line.startswith("ostl epoch 2/2: train loss") for line in lines)
    assert "valid accuracy" in lines[-1]


def test_no_progress_shows_nothing_while_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *TINY, "--no-progress", "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "| ostl |" in captured.out  # the final table still


def _epoch(shown: Display, batches: int) -> None:
    items, after_batch = shown.batches(range(batches), batches, epoch=1)
    for _ in items:
        after_batch(0.5, 0.25)
    shown.epoch_end(1, 0.5, 0.25, 0.75, 12.0)


def test_lines_within_an_epoch_come_at_most_every_tenth(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    _epoch(Display("lines", "ostl", 3, 1, "accuracy", stream=out, interval=0.0), 1000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in out.getvalue()  # 10 %, ..., 90 %, then the epoch
    assert lines[0] == "ostl epoch 1/3: 10% (100/1000 batches), loss 0.5000, accuracy 0.2500 (0 s)"
    assert lines[-1].startswith("ostl epoch 1/3: train loss 0.5000, accuracy 0.2500; valid")
    out = io.StringIO()  # and not before the interval: a fast epoch writes its own line only
    monkeypatch.setattr(display, "LINE_INTERVAL", 3600.0)
    _epoch(Display("lines", "ostl", 3, 1, "accuracy", stream=out), 1000)
    assert len(out.getvalue().splitlines()) == 1


def test_bars_and_nothing() -> None:
    term = _Terminal()
    shown = Display("bars", "ostl", 3, 1, "accuracy", stream=term)
    _epoch(shown, 5)
    shown.close()
    assert "ostl epochs" in term.getvalue() and "\r" in term.getvalue()  # redrawn in place
    quiet = io.StringIO()
    _epoch(Display(None, "ostl", 3, 1, "accuracy", stream=quiet), 5)
    assert quiet.getvalue() == ""
