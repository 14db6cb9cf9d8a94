"""One writer per run folder: a lock held for as long as a command writes the folder.

Two processes writing the same run folder (two ``ostl train --resume F`` at once, or a new run
started while orphaned workers of an earlier one still train there) would interleave their
checkpoints and remove each other's temporary files. :func:`folder_lock` prevents it: the
process that writes a run folder holds an exclusive lock on ``<folder>/.lock`` (and writes its
PID there); a second process gets :class:`FolderBusyError` at once, naming the folder and the
PID that holds it (``ostl``: one line, exit status 2).

On POSIX the lock is ``fcntl.flock``: the kernel releases it when its holder exits, however it
exits (``kill -9`` included), so a lock left by a dead process is never in the way: the
``.lock`` file that stays behind is not a lock by itself. Elsewhere (Windows) it is the
``filelock`` package's lock, which the system releases the same way; the holder's PID is then
written next to it, in ``.lock.pid``.

Who holds it:

- ``ostl train`` (one process) and :func:`ostl.run.train.train`: the process itself;
- ``ostl train --nproc N``: the launcher, for its workers: it sets :data:`HELD_ENV` in their
  environment, and they take no lock (a worker whose launcher dies is killed with it, see
  :func:`ostl.distributed.die_with_parent`, so the lock never outlives the run's writers);
- ``torchrun ... -m ostl train`` without the launcher: rank 0, the rank that writes the folder.

The lock is re-entrant within a process (the command takes it before it checks and prepares
the folder, :func:`~ostl.run.train.train` takes it again).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import OptionError, OSTLError

__all__ = ["folder_lock", "FolderBusyError", "LOCK", "HELD_ENV", "holder"]

#: The lock file in a run folder.
LOCK = ".lock"
#: Set (to its PID) by ``ostl train --nproc``'s launcher, which holds the lock for its workers.
HELD_ENV = "OSTL_FOLDER_LOCK_HELD"

_held: dict[Path, tuple[Any, int]] = {}  # folder -> (open lock, depth) of this process


class FolderBusyError(OSTLError):
    """The run folder is being written by another process (which holds its lock)."""


def holder(folder: Path) -> str:
    """The PID written by the holder of ``folder``'s lock ("unknown" if none was written)."""
    for name in (LOCK, f"{LOCK}.pid"):
        try:
            text = (folder / name).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return text
    return "unknown"


@contextmanager
def folder_lock(folder: str | Path | None) -> Iterator[None]:
    """Hold ``folder``'s lock inside the block (creating the folder); see the module.

    A no-op for None, in a worker whose launcher holds the lock (:data:`HELD_ENV`) and in a
    torchrun worker of rank > 0.

    Raises:
        FolderBusyError: another process holds the lock.
        OptionError: the folder cannot be created or written.
    """
    from ..distributed import is_main, launched_as_main

    if folder is None or os.environ.get(HELD_ENV) or not (launched_as_main() and is_main()):
        yield
        return
    path = Path(folder)
    key = path.resolve()
    if key in _held:  # this process holds it already
        lock, depth = _held[key]
        _held[key] = (lock, depth + 1)
        try:
            yield
        finally:
            _held[key] = (lock, _held[key][1] - 1)
        return
    lock = _acquire(path)
    _held[key] = (lock, 1)
    try:
        yield
    finally:
        del _held[key]
        _release(lock)


def _acquire(path: Path) -> Any:
    if path.exists() and not path.is_dir():
        raise OptionError(f"{path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        return _flock(path) if os.name == "posix" else _filelock(path)
    except FolderBusyError:
        raise
    except OSError as e:
        raise OptionError(f"cannot write the run folder {path}: {e.strerror or e}") from None


def _busy(path: Path) -> FolderBusyError:
    return FolderBusyError(
        f"{path} is in use by another ostl process (PID {holder(path)}): one process writes a "
        "run folder at a time; wait for it to end, or stop it"
    )


def _flock(path: Path) -> int:
    import fcntl

    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _busy(path) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _filelock(path: Path) -> Any:
    import filelock

    lock = filelock.FileLock(str(path / LOCK), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise _busy(path) from None
    (path / f"{LOCK}.pid").write_text(f"{os.getpid()}\n")
    return lock


def _release(lock: Any) -> None:
    if isinstance(lock, int):
        os.close(lock)  # releases the flock
    else:
        lock.release()
