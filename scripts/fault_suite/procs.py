"""Processes of the suite: ``ostl`` commands in subprocesses, their process trees, kill -9.

Every command runs as ``python -m ostl ...`` with the interpreter running the suite, one torch
thread, its output in files (a process killed, or orphaned, never blocks on a full pipe) and in
a session of its own. :func:`descendants` reads the process tree from ``/proc`` (Linux), for
the workers that torchrun starts in sessions of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .hook import ENV, PROBE

HERE = Path(__file__).resolve().parent
#: The longest any one command may take before the suite calls it hung and kills it.
TIMEOUT = 300.0
TRACEBACK = "Traceback (most recent call last)"
#: Commands started and not yet waited for (killed with their trees if the suite stops early).
LIVE: set[Command] = set()


def environment(
    fault: dict[str, Any] | None = None,
    hooks: Path | None = None,
    probe: Path | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of a command; with ``fault`` (or ``probe``: the file that the first
    training step creates), the hook of :mod:`.hook` is active."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    for name in ("PYTEST_XDIST_WORKER", ENV, PROBE):
        env.pop(name, None)
    if fault is not None or probe is not None:
        assert hooks is not None, "a fault needs the folder holding the hook"
        if fault is not None:
            env[ENV] = json.dumps(fault)
        if probe is not None:
            env[PROBE] = str(probe)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(hooks), os.environ.get("PYTHONPATH", "")) if p
        )
    return env


def hook_folder(root: Path) -> Path:
    """A folder holding the hook as ``sitecustomize.py`` (for PYTHONPATH)."""
    folder = root / "hook"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text((HERE / "hook.py").read_text())
    return folder


@dataclass
class Done:
    """A finished command: exit status (negative: killed by that signal), output, seconds."""

    rc: int
    out: str
    err: str
    seconds: float
    hung: bool = False

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    @property
    def last(self) -> str:
        return self.lines[-1] if self.lines else "(nothing on stderr)"

    @property
    def traceback(self) -> bool:
        return TRACEBACK in self.err

    def error_line(self, command: str, strict: bool = True) -> str | None:
        """Why this is not a one-line error of ``ostl <command>`` (None: it is one).

        ``strict``: nothing else on stderr either (a worker's own output may precede it).
        """
        if self.traceback:
            return f"a traceback instead of a one-line error (last line: {self.last})"
        if not self.last.startswith(f"ostl {command}: error:"):
            return f"no one-line error, stderr ends with: {self.last}"
        if strict and len(self.lines) != 1:
            return f"{len(self.lines)} lines on stderr, not one (last: {self.last})"
        return None


class Command:
    """One ``python -m ostl ...`` subprocess, started at once."""

    def __init__(
        self, args: Sequence[str | Path | int], cwd: Path, env: dict[str, str], name: str = "cmd"
    ) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        stamp = f"{name}-{time.monotonic_ns()}"
        self.out_path, self.err_path = cwd / f"{stamp}.out", cwd / f"{stamp}.err"
        self.t0 = time.monotonic()
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "ostl", *map(str, args)],
                cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip
        self.pid = self.popen.pid
        LIVE.add(self)

    def running(self) -> bool:
        return self.popen.poll() is None

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def kill9(self, pid: int | None = None) -> None:
        """SIGKILL this command's process (or ``pid``, one of its descendants)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid if pid is None else pid, signal.SIGKILL)

    def wait(self, timeout: float = TIMEOUT) -> Done:
        """Wait for the end (killing the command and its process tree after ``timeout``)."""
        hung = False
        try:
            self.popen.wait(timeout=max(timeout - self.elapsed(), 0.1))
        except subprocess.TimeoutExpired:
            hung = True
            kill_tree(self.pid)
            self.popen.wait()
        seconds = self.elapsed()
        rc = self.popen.returncode
        LIVE.discard(self)
        return Done(rc, self.out_path.read_text(), self.err_path.read_text(), seconds, hung)


def ostl(
    args: Sequence[str | Path | int],
    cwd: Path,
    env: dict[str, str] | None = None,
    name: str = "cmd",
) -> Done:
    """Run one ``ostl`` command to its end."""
    return Command(args, cwd, env or environment(), name).wait()


# -- process trees -------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            parents.setdefault(st[1], []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(0), []):
            if alive(child):
                found.append(child)
                todo.append(child)
    return found


def rank_of(pid: int) -> int | None:
    """The torchrun rank of a worker process (its RANK variable), None for other processes."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [e[5:] for e in env if e.startswith(b"RANK=")]
    local = any(e.startswith(b"LOCAL_RANK=") for e in env)
    return int(ranks[0]) if ranks and local else None


def kill_tree(pid: int, also: Sequence[int] = ()) -> None:
    """SIGKILL ``pid``, its descendants and the processes ``also`` (all started by the suite)."""
    for p in [*descendants(pid), pid, *also]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def stop_all() -> None:
    """Kill every command still running, with its process tree (the suite is stopping)."""
    for cmd in list(LIVE):
        kill_tree(cmd.pid)
        LIVE.discard(cmd)


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    while_running: Command | None = None,
    poll: float = 0.003,
) -> bool:
    """Poll ``condition`` until it holds (True); False after ``timeout`` or once
    ``while_running`` has ended without it holding."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if while_running is not None and not while_running.running():
            return condition()
        time.sleep(poll)
    return False
