"""The run folder of a new run: created and checked before training, never silently reused."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from ostl.run import cli
from ostl.run.checkpoint import list_checkpoints
from ostl.run.cli import main
from ostl.run.config import TrainConfig
from ostl.run.model import MODEL, MODEL_LAST
from ostl.run.outputs import prepare_folder
from ostl.run.resume import Checkpointer, RunOptions
from ostl.run.run import Run

TINY = [
    "--task", "digits", "--hidden", "4", "--epochs", "1", "--batch-size", "16",
    "--task-opt", "steps=2", "--task-opt", "train_size=32", "--task-opt", "test_size=16",
    "--no-progress",
]  # fmt: skip


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command starts a run."""

    def fail(*args: Any, **kwargs: Any) -> None:
        pytest.fail("the command started training")

    monkeypatch.setattr("ostl.run.train.train", fail)
    monkeypatch.setattr("ostl.run.compare.compare", fail)


def test_a_folder_holding_a_run_is_refused_unless_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), "--checkpoint-every", "1"]) == 0
    old = list_checkpoints(out / "checkpoints")
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    with monkeypatch.context() as m:
        _no_training(m)
        assert main(["train", *TINY, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "already holds a run" in err and "--overwrite" in err and err.count("\n") == 1
        assert main(["train", "--resume", str(out), "--overwrite"]) == 2
        assert "drop --overwrite" in capsys.readouterr().err
    assert list_checkpoints(out / "checkpoints") == old  # untouched
    assert main(["train", *TINY, "--seed", "3", "--out", str(out), "--overwrite"]) == 0
    assert not (out / "checkpoints").exists()  # the old run's files are gone ...
    assert (out / "notes.txt").read_text() == "mine"  # ... and only those
    assert '"seed": 3' in (out / "config.json").read_text() and (out / MODEL).exists()


def test_a_folder_holding_a_comparison_is_refused_unless_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ostl").mkdir()
    (tmp_path / "ostl" / MODEL_LAST).write_bytes(b"")  # a run of an earlier comparison
    with monkeypatch.context() as m:
        _no_training(m)
        assert main(["compare", "--rules", "ostl", *TINY, "--out", str(tmp_path)]) == 2
        assert "already holds a comparison (ostl/)" in capsys.readouterr().err
    assert main(["compare", "--rules", "ostl", *TINY, "--out", str(tmp_path), "--overwrite"]) == 0
    assert (tmp_path / "table.md").exists() and (tmp_path / "ostl" / MODEL).exists()


@pytest.mark.parametrize("where", ["under a file", "read-only folder"])
def test_an_unwritable_out_fails_before_training(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if where == "under a file":  # unwritable even for root
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "run"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o500)
        out = tmp_path / "ro" / "run"
    _no_training(monkeypatch)
    try:
        for command in (["train"], ["compare", "--rules", "ostl"]):
            assert main([*command, *TINY, "--out", str(out)]) == 2
            err = capsys.readouterr().err
            assert "cannot write the " in err and str(out) in err and err.count("\n") == 1
    finally:
        (tmp_path / "ro").chmod(0o700) if (tmp_path / "ro").exists() else None
    assert main(["train", *TINY, "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_a_failed_start_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--device", "cuda:7", "--out", "new"]) == 2
    assert main(["train", *TINY, "--task-opt", "steps=0"]) == 2  # the default folder
    assert "device" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and list((tmp_path / "runs").iterdir()) == []


def test_the_default_out_is_a_new_folder_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-000000")  # the same second
    a, b = cli._default_out("digits", "ostl"), cli._default_out("digits", "ostl")
    assert a != b and a.is_dir() and b.is_dir()
    assert b.name == "digits-ostl-20260101-000000-2"


def test_the_run_writes_its_config_first_and_metrics_every_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = TrainConfig(
        task="digits", hidden=(4,), epochs=2, batch_size=16,
        task_options={"steps": 2, "train_size": 32, "test_size": 16},
    )  # fmt: skip
    run = Run(cfg, tmp_path / "run", progress=False)
    before = {p.name for p in (tmp_path / "run").iterdir()}  # before training
    assert before == {"config.json", "options.json"}
    seen: list[str] = []
    real = Checkpointer.after_step

    def after_step(self: Checkpointer, step: int, payload: Any) -> None:
        real(self, step, payload)
        if step == 5:  # epoch 2 (2 batches × 2 steps an epoch)
            seen.append((tmp_path / "run" / "metrics.csv").read_text())

    monkeypatch.setattr(Checkpointer, "after_step", after_step)
    run.execute()
    assert seen and seen[0].count("\n") == 2  # the header and epoch 1
    assert RunOptions().writes_checkpoints is False  # none of this needed checkpoints


def test_prepare_folder_creates_and_checks(tmp_path: Path) -> None:
    prepare_folder(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and not any((tmp_path / "a" / "b").iterdir())
