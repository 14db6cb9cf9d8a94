"""Resume through train() and the command: an interrupted run ends bit-identical."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ostl.errors import CheckpointError
from ostl.run.checkpoint import list_checkpoints, load_checkpoint
from ostl.run.cli import main
from ostl.run.train import resume, train

from .tiny import tiny

TINY = tiny()
# 3 batches × 4 steps × 2 epochs = 24 steps


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    """The weights after the last epoch: the last checkpoint (written at every epoch end)."""
    return load_checkpoint(list_checkpoints(out / "checkpoints")[-1])["learner"]["net"]


@pytest.mark.parametrize(
    ("rule", "stop"),
    [
        ("bptt", 7),
        ("ostl", 14),
        ("osttp", 17),
        pytest.param("bptt", 8, marks=pytest.mark.slow),  # at a batch end
        pytest.param("ostl", 12, marks=pytest.mark.slow),  # at an epoch end
    ],
)
def test_train_interrupted_and_resumed_ends_bit_identical(
    rule: str, stop: int, tmp_path: Path
) -> None:
    cfg = replace(TINY, rule=rule)
    full = train(cfg, tmp_path / "full", progress=False, checkpoint_every=5)
    part = train(cfg, tmp_path / "run", progress=False, checkpoint_every=5, stop_after_steps=stop)
    assert part.stopped_at_step == stop and len(part.history) == (stop - 1) // 12
    done = resume(tmp_path / "run", progress=False, checkpoint_every=5)
    a, b = _final_weights(tmp_path / "full"), _final_weights(tmp_path / "run")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert done.test_metric == full.test_metric and done.updates == full.updates
    assert [h["train_loss"] for h in done.history] == [h["train_loss"] for h in full.history]
    assert [h["train_metric"] for h in done.history] == [h["train_metric"] for h in full.history]
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    assert len(list_checkpoints(tmp_path / "run" / "checkpoints")) == 3  # keep=3


def test_same_seed_same_run_twice(tmp_path: Path) -> None:
    a = train(TINY, tmp_path / "a", progress=False, checkpoint_every=100)
    b = train(TINY, tmp_path / "b", progress=False, checkpoint_every=100)
    wa, wb = _final_weights(tmp_path / "a"), _final_weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.history[-1]["train_loss"] == b.history[-1]["train_loss"]


def test_resume_refuses_another_config_and_bad_options(tmp_path: Path) -> None:
    train(TINY, tmp_path / "run", progress=False, stop_after_steps=3)
    with pytest.raises(CheckpointError, match="another configuration.*lr"):
        train(replace(TINY, lr=0.5), tmp_path / "run", progress=False, resume=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(TINY, tmp_path / "empty", progress=False, resume=True)
    with pytest.raises(ValueError, match="need a run folder"):
        train(TINY, None, progress=False, checkpoint_every=3)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive int"):
        train(TINY, tmp_path / "x", progress=False, checkpoint_every=0)
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        train(replace(TINY, nonfinite="maybe"), progress=False)


def test_cli_stop_then_resume_equals_the_uninterrupted_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opts = [
        "--rule", "osttp", "--task", "digits", "--hidden", "8", "--epochs", "2",
        "--batch-size", "16", "--task-opt", "steps=4", "--task-opt", "train_size=48",
        "--task-opt", "test_size=16", "--no-progress", "--checkpoint-every", "6",
    ]  # fmt: skip
    full, run = tmp_path / "full", tmp_path / "run"
    assert main(["train", *opts, "--out", str(full)]) == 0
    assert main(["train", *opts, "--out", str(run), "--stop-after-steps", "9"]) == 0
    assert f"continue with: ostl train --resume {run}" in capsys.readouterr().out
    assert main(["train", *opts, "--out", str(run)]) == 2  # would mix two runs
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--no-progress", "--checkpoint-every", "6"]) == 0
    a, b = _final_weights(full), _final_weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = json.loads((full / "summary.json").read_text())
    sb = json.loads((run / "summary.json").read_text())
    assert sa["test_metric"] == sb["test_metric"] and sa["updates"] == sb["updates"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--resume", "/no/such/run"], "no such run folder"),
        (["train", "--resume", ".", "--epochs", "3"], "drop --epochs"),
        (["train", "--nproc", "2", "--resume", "/no/such/run"], "no such run folder"),
    ],
)
def test_cli_resume_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_resume_of_a_folder_without_checkpoints_restarts_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run stopped before its first checkpoint left only its config.json (and perhaps a
    temporary file): --resume starts it again from step 0, saying so in one line."""
    (tmp_path / "config.json").write_text(json.dumps(TINY.to_json()))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".step-000000000020.pt.tmp-999999999").write_bytes(b"half")
    assert main(["train", "--resume", str(tmp_path), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "restarting it from step 0" in err
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 24
    assert not list(tmp_path.glob("checkpoints/.*"))  # the temporary file went with the restart
    (tmp_path / "x").mkdir()
    assert main(["train", "--resume", str(tmp_path / "x")]) == 2
    assert "no config.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--checkpoint-every", "0"], "expected a positive integer"),
        (["train", "--keep", "-1"], "expected a positive integer"),
        (["train", "--stop-after-steps", "x"], "expected a positive integer"),
        (["train", "--nonfinite", "ignore"], "invalid choice"),
        (["train", "--seed", "-1"], "non-negative"),
    ],
)
def test_cli_bad_checkpoint_options_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
