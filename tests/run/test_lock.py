"""One writer per run folder (ostl.run.lock), and a ``--nproc`` run that ends with its
launcher or within its collective timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ostl.run.checkpoint import list_checkpoints, load_checkpoint
from ostl.run.cli import main
from ostl.run.lock import HELD_ENV, FolderBusyError, folder_lock

OPTS = [
    "--task", "digits", "--hidden", "8", "--batch-size", "16", "--epochs", "2",
    "--task-opt", "steps=4", "--task-opt", "train_size=48", "--task-opt", "test_size=16",
    "--no-progress",
]  # fmt: skip

_HOLD = """
import sys, time
from ostl.run.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds the worker processes in /proc"
)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop(HELD_ENV, None)
    return env


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A run stopped at step 5, and another process holding its folder's lock."""
    run = tmp_path / "run"
    assert main(["train", *OPTS, "--out", str(run), "--stop-after-steps", "5"]) == 0
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE,
                            text=True, env=_env())  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        yield run, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_second_writer_is_refused_until_the_first_dies(
    holder: tuple[Path, subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two commands on one folder: the second gets one line naming the folder and the PID
    holding it (exit 2) and changes nothing; once the holder is killed -9 its lock is gone."""
    run, proc = holder
    capsys.readouterr()
    for argv in (
        ["train", "--resume", str(run), "--checkpoint-every", "2"],
        ["train", "--resume", str(run), "--nproc", "2"],
        ["train", *OPTS, "--out", str(run), "--overwrite"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"{run} is in use by another ostl process (PID {proc.pid})" in err
    assert (run / "config.json").exists()  # the refused --overwrite removed nothing
    assert [
        load_checkpoint(p)["learner"]["steps"] for p in list_checkpoints(run / "checkpoints")
    ] == [5]
    with pytest.raises(FolderBusyError), folder_lock(run):
        pass
    proc.kill()
    proc.wait()
    assert (run / ".lock").exists()  # the file stays; the lock went with its holder
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0


def test_the_lock_is_reentrant_and_left_to_the_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = [sys.executable, "-c", _HOLD.replace("time.sleep(600)", "pass"), str(tmp_path)]
    with folder_lock(tmp_path):
        with folder_lock(tmp_path):  # the command, then train() in it
            pass
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
        busy = subprocess.run(probe, capture_output=True, text=True, env=_env())
        assert busy.returncode == 1 and "FolderBusyError" in busy.stderr  # still held
    free = subprocess.run(probe, capture_output=True, text=True, env=_env())
    assert free.returncode == 0 and free.stdout == "held\n"
    monkeypatch.setenv(HELD_ENV, "1")  # a worker of ostl train --nproc: its launcher holds it
    with folder_lock(tmp_path / "new"):
        assert not (tmp_path / "new").exists()


def _descendants(pid: int) -> list[int]:
    """The PIDs of the processes below ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parents[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [c for c, of in parents.items() if of == parent]
        found += kids
        todo += kids
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (a dead process not yet reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _rank_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [e[5:].decode() for e in env if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def _long_run(out: Path, **env: str) -> subprocess.Popen[str]:
    """``ostl train --nproc 2`` with epochs of 800 steps, started; returns once it wrote its
    first checkpoint (training, both workers up)."""
    opts = [*OPTS, "--task-opt", "train_size=3200", "--epochs", "5", "--checkpoint-every", "20"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ostl", "train", "--nproc", "2", *opts, "--out", str(out)],
        env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not list_checkpoints(out / "checkpoints"):
        if proc.poll() is not None:
            raise AssertionError(proc.communicate()[1][-3000:])
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.1)
    return proc


@linux_only
@pytest.mark.slow
def test_killing_the_nproc_launcher_stops_its_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill -9 of ``ostl train --nproc 2``: torchrun and both workers end within seconds (no
    orphan keeps training into the folder); a --resume is refused while the run lives and
    accepted after."""
    out = tmp_path / "run"
    proc = _long_run(out)
    tree = []
    try:
        tree = _descendants(proc.pid)
        assert sorted(r for r in map(_rank_of, tree) if r is not None) == ["0", "1"]
        capsys.readouterr()
        assert main(["train", "--resume", str(out), "--nproc", "2"]) == 2
        assert f"(PID {proc.pid})" in capsys.readouterr().err
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(_running(p) for p in tree):
            assert time.monotonic() < deadline, [p for p in tree if _running(p)]
            time.sleep(0.05)
    finally:
        for p in [proc.pid, *tree]:
            if _running(p):
                os.kill(p, signal.SIGKILL)
    step = load_checkpoint(out)["learner"]["steps"]
    time.sleep(1)
    assert load_checkpoint(out)["learner"]["steps"] == step  # nobody writes any more
    resumed = subprocess.run(
        [sys.executable, "-m", "ostl", "train", "--resume", str(out), "--nproc", "2",
         "--stop-after-steps", str(step + 10)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"stopped after step {step + 10};" in resumed.stdout


@linux_only
@pytest.mark.slow
def test_a_stopped_worker_ends_the_run_within_the_collective_timeout(tmp_path: Path) -> None:
    """SIGSTOP of rank 1 with OSTL_DIST_TIMEOUT=10: rank 0's collective times out after 10 s,
    torchrun kills the stopped rank at once (not after its 30 s grace): the run ends within a
    few seconds of the timeout, in one line per process and no traceback."""
    proc = _long_run(tmp_path / "run", OSTL_DIST_TIMEOUT="10")
    stopped = None
    try:
        stopped = next(p for p in _descendants(proc.pid) if _rank_of(p) == "1")
        os.kill(stopped, signal.SIGSTOP)
        t0 = time.monotonic()
        _, stderr = proc.communicate(timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        if stopped is not None and _running(stopped):
            os.kill(stopped, signal.SIGKILL)
    assert proc.returncode == 1, stderr[-3000:]
    assert 10 <= elapsed < 20, elapsed
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("ostl train: error: a worker process failed"), lines
    assert any("rank 0:" in line and "OSTL_DIST_TIMEOUT=10 s" in line for line in lines), lines
    assert not _running(stopped)
