"""What survives a crash: a kill -9 mid-write, a full disk, a chain of stops and resumes.

Each test reproduces a fault as a user meets it (the command in a subprocess killed with
SIGKILL, a write that fails with ENOSPC) and checks what the next ``ostl train --resume`` does.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ostl.errors import OSTLError
from ostl.run import checkpoint
from ostl.run.checkpoint import (
    WriteError,
    list_checkpoints,
    load_checkpoint,
    remove_temps,
    write_atomic,
)
from ostl.run.cli import main
from ostl.run.model import load
from ostl.run.train import TrainConfig, resume, train

from .tiny import tiny

OPTS = [
    "--task", "digits", "--hidden", "8", "--batch-size", "16", "--epochs", "2",
    "--task-opt", "steps=4", "--task-opt", "train_size=48", "--task-opt", "test_size=16",
    "--no-progress",
]  # fmt: skip
# 3 batches × 4 steps × 2 epochs = 24 steps
STEPS = 24

#: sitecustomize of the killed subprocess: pause forever halfway through its Nth checkpoint write
_PAUSE = """
import os
if os.environ.get("OSTL_TEST_PAUSE_AT_WRITE"):
    import time
    from pathlib import Path
    from ostl.run import checkpoint

    writes = [0]

    def pause(tmp):
        writes[0] += 1
        if writes[0] == int(os.environ["OSTL_TEST_PAUSE_AT_WRITE"]):
            Path(os.environ["OSTL_TEST_READY"]).write_text(str(tmp))
            time.sleep(600)

    checkpoint.MID_WRITE_HOOK = pause
"""


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for d in (folder, folder / "checkpoints") if d.is_dir()
                  for p in d.iterdir() if ".tmp" in p.name)  # fmt: skip


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load(out, "last")[0].state_dict()


def _summary(out: Path) -> dict[str, object]:
    return dict(json.loads((out / "summary.json").read_text()))


def _killed_mid_write(tmp_path: Path, run: Path, nth: int) -> Path:
    """``ostl train --checkpoint-every 5 --keep 2 --out run`` killed with SIGKILL halfway
    through its ``nth`` checkpoint write; the temporary file it left."""
    hook, ready = tmp_path / "hook", tmp_path / "ready"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_PAUSE)
    env = dict(os.environ, PYTHONPATH=str(hook), OSTL_TEST_PAUSE_AT_WRITE=str(nth),
               OSTL_TEST_READY=str(ready), OMP_NUM_THREADS="1")  # fmt: skip
    cmd = [sys.executable, "-m", "ostl", "train", *OPTS, "--checkpoint-every", "5", "--keep", "2"]
    proc = subprocess.Popen([*cmd, "--out", str(run)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the run never reached the write"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    tmp = Path(ready.read_text())
    assert tmp.exists() and tmp.name.startswith(f".step-{5 * nth:012d}.pt.tmp-")
    return tmp


def test_a_run_killed_writing_its_first_checkpoint_restarts_on_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed before any checkpoint was complete: the folder holds config.json and a temporary
    file. --out is refused (it holds a run), --resume restarts it from step 0 in one line and
    leaves no temporary file; the run ends as an uninterrupted one."""
    full, run = tmp_path / "full", tmp_path / "run"
    assert main(["train", *OPTS, "--checkpoint-every", "5", "--out", str(full)]) == 0
    tmp = _killed_mid_write(tmp_path, run, nth=1)
    assert list_checkpoints(run / "checkpoints") == []
    capsys.readouterr()
    assert main(["train", *OPTS, "--out", str(run)]) == 2
    assert f"continue it with --resume {run}" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "restarting it from step 0" in err, err
    assert not tmp.exists() and _temps(run) == []
    assert _summary(run)["steps"] == _summary(full)["steps"] == STEPS
    a, b = _weights(full), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the killed run's options were kept: checkpoints every 5 steps, the newest 2
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [
        "step-000000000020.pt",
        "step-000000000024.pt",
    ]


def test_a_run_killed_writing_a_later_checkpoint_resumes_from_the_one_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    tmp = _killed_mid_write(tmp_path, run, nth=2)  # step 10; step 5 is complete
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000000000005.pt"]
    assert load_checkpoint(run)["learner"]["steps"] == 5  # the temporary file is ignored
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert "restarting" not in capsys.readouterr().err
    assert not tmp.exists() and _temps(run) == []
    assert _summary(run)["steps"] == STEPS


def test_a_full_disk_fails_in_one_line_and_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second checkpoint's write fails with ENOSPC halfway: exit 1, one line; its
    temporary file is gone, the first checkpoint is intact and the run resumes from it."""
    full, run = tmp_path / "full", tmp_path / "run"
    assert main(["train", *OPTS, "--checkpoint-every", "5", "--out", str(full)]) == 0
    writes: list[Path] = []

    def disk_full(tmp: Path) -> None:
        writes.append(tmp)
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "MID_WRITE_HOOK", disk_full)
    capsys.readouterr()
    assert main(["train", *OPTS, "--checkpoint-every", "5", "--out", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "cannot write the checkpoint" in err and "No space left on device" in err
    assert not writes[1].exists() and _temps(run) == []
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000000000005.pt"]
    assert load_checkpoint(run)["learner"]["steps"] == 5
    monkeypatch.setattr(checkpoint, "MID_WRITE_HOOK", None)  # the disk has room again
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert _summary(run)["steps"] == STEPS
    a, b = _weights(full), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_failed_atomic_write_removes_its_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(WriteError, match="cannot write .*model.safetensors: No space") as e:
        write_atomic(target, b"new")
    assert isinstance(e.value, OSError) and isinstance(e.value, OSTLError)
    assert e.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old" and _temps(tmp_path) == []


def test_remove_temps_spares_a_live_writer(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    names = [f".step-1.pt.tmp-{dead.stdout.strip()}", f".step-2.pt.tmp-{os.getppid()}",
             f".step-3.pt.tmp-{os.getpid()}", "step-000000000004.pt"]  # fmt: skip
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in remove_temps(tmp_path)] == [names[0]]  # the dead writer's
    assert [p.name for p in remove_temps(tmp_path, only_dead=False)] == [names[1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


def test_resume_keeps_the_run_options_unless_given_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ostl train --resume DIR`` (no option) writes checkpoints and scalars as the run did."""
    run = tmp_path / "run"
    opts = ["--checkpoint-every", "5", "--keep", "2", "--log-every", "3"]
    assert main(["train", *OPTS, *opts, "--out", str(run), "--stop-after-steps", "7"]) == 0
    saved = json.loads((run / "options.json").read_text())
    assert saved == {"checkpoint_every": 5, "keep": 2, "log_every": 3, "tensorboard": False}
    assert main(["train", "--resume", str(run), "--no-progress", "--stop-after-steps", "17"]) == 0
    steps = [load_checkpoint(p)["learner"]["steps"] for p in list_checkpoints(run / "checkpoints")]
    assert steps == [15, 17]  # every 5 steps, the newest 2 kept
    rows = (run / "scalars.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [3, 6, 9, 12, 15]
    # given again: the new value holds from now on, the others stay the run's
    assert main(["train", "--resume", str(run), "--no-progress", "--checkpoint-every", "4"]) == 0
    assert json.loads((run / "options.json").read_text())["checkpoint_every"] == 4
    steps = [load_checkpoint(p)["learner"]["steps"] for p in list_checkpoints(run / "checkpoints")]
    assert steps == [20, 24]
    assert "Traceback" not in capsys.readouterr().err


TINY = tiny()


@pytest.mark.parametrize("rule", ["ostl", "bptt"])
def test_a_chain_of_stops_mid_batch_counts_every_step_once(rule: str, tmp_path: Path) -> None:
    """Three stops inside a batch (mid-sequence), in both epochs, then the end: the step count
    and the weights are the uninterrupted run's, through the API and in summary.json."""
    cfg = TrainConfig(**{**vars(TINY), "rule": rule})
    full = train(cfg, tmp_path / "full", progress=False)
    run = tmp_path / "run"
    part = train(cfg, run, progress=False, stop_after_steps=5, checkpoint_every=3)
    assert part.stopped_at_step == 5 and part.steps == 5
    for stop in (14, 19):  # epoch 2: batch 0 step 2, batch 1 step 3
        part = resume(run, progress=False, stop_after_steps=stop)
        assert part.stopped_at_step == stop and part.steps == stop
    done = resume(run, progress=False)
    assert done.steps == full.steps == STEPS and _summary(run)["steps"] == STEPS
    assert done.updates == full.updates
    assert [h["train_loss"] for h in done.history] == [h["train_loss"] for h in full.history]
    a, b = _weights(tmp_path / "full"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert done.seconds_per_step > 0


def test_cli_chain_of_stops_reports_the_exact_step_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", *OPTS, "--out", str(run), "--stop-after-steps", "7"]) == 0
    assert main(["train", "--resume", str(run), "--no-progress", "--stop-after-steps", "17"]) == 0
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert _summary(run)["steps"] == STEPS
    out = capsys.readouterr().out
    assert "stopped after step 7;" in out and "stopped after step 17;" in out


def test_stop_after_steps_is_not_kept_by_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(TINY, run, progress=False, stop_after_steps=3)
    assert "stop_after_steps" not in json.loads((run / "options.json").read_text())
    assert resume(run, progress=False).stopped_at_step is None
