"""Checkpoint files: atomic writes, the last N kept, safe loads.

A checkpoint is one file ``step-<n>.pt`` in a folder, written by :func:`save_checkpoint`:

1. the payload is serialised in memory (``torch.save``) and written to a temporary file in the
   same folder (``.step-<n>.pt.tmp-<pid>``), which is flushed and fsync-ed;
2. ``os.replace`` renames it to its final name (atomic on POSIX) and the folder is fsync-ed;
3. all but the newest ``keep`` checkpoints are deleted.

A process killed at any point leaves either the old set of files or the new one, never a
half-written ``step-*.pt``: the previous checkpoint stays loadable. The temporary file a killed
writer leaves is ignored by :func:`list_checkpoints` and :func:`load_checkpoint`, and removed by
the next save (once its PID is no longer running) and by a resumed run
(:func:`remove_temps`). A write that fails (a full disk) removes its temporary file and raises
:class:`WriteError`; the previous checkpoints stay.

:func:`load_checkpoint` uses ``torch.load(weights_only=True)``: only tensors and plain
containers are unpickled, never arbitrary code. It takes a checkpoint file, a checkpoint folder
or a run folder (whose checkpoints are in ``checkpoints/``). A corrupt, truncated or foreign
file raises :class:`~ostl.errors.CheckpointError` naming the path. Every file carries a format
tag and a version. By default a payload holding NaN or Inf is refused both ways: on save
(:class:`~ostl.errors.NonFiniteError`, so that a poisoned state never replaces a good
checkpoint) and on load (:class:`~ostl.errors.CheckpointError` naming the file and the tensors:
a file poisoned outside ostl never starts a run).

The RNG states of torch, numpy and Python's ``random`` are saved and restored with
:func:`rng_state` / :func:`set_rng_state`.
"""

from __future__ import annotations

import io
import os
import random
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import CheckpointError, NonFiniteError, OptionError, OSTLError, nonfinite_names

__all__ = [
    "CheckpointError",
    "FORMAT",
    "VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "write_atomic",
    "list_checkpoints",
    "remove_temps",
    "WriteError",
    "rng_state",
    "set_rng_state",
]

FORMAT = "ostl-checkpoint"
VERSION = 1
_NAME = re.compile(r"^step-(\d+)\.pt$")

#: Test hook: called with the temporary file's path halfway through writing it (the kill -9
#: test pauses there). None in normal use.
MID_WRITE_HOOK: Callable[[Path], None] | None = None
_TEMP = re.compile(r"^\..+\.tmp-(\d+)$")


class WriteError(OSTLError, OSError):
    """A file of a run could not be written (a full disk, an I/O error): a failure of the
    machine, not of the input. Its temporary file is removed; the file it would replace, and
    the other checkpoints, stay as they were. ``errno`` is the cause's."""

    def __init__(self, message: str, cause: OSError | None = None) -> None:
        super().__init__(message)
        self.errno = cause.errno if cause is not None else None

    def __str__(self) -> str:
        return str(self.args[0])


def list_checkpoints(directory: str | Path) -> list[Path]:
    """The checkpoint files of ``directory``, oldest first (by step)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    directory: str | Path,
    payload: dict[str, Any],
    *,
    step: int,
    keep: int = 3,
    require_finite: bool = True,
) -> Path:
    """Write ``payload`` atomically as ``directory/step-<step>.pt``; keep the newest ``keep``.

    Args:
        directory: the checkpoint folder (created if missing).
        payload: tensors and plain containers (dict, list, tuple, str, int, float, bool, None).
        step: the position in the stream (names the file; larger is newer).
        keep: how many checkpoints to keep (the newest); at least 1.
        require_finite: refuse a payload with NaN or Inf (raises NonFiniteError, writes nothing).

    Returns:
        The path written.

    Raises:
        WriteError: the file could not be written (a full disk...): nothing of it is left,
            the previous checkpoints are kept.
    """
    if not isinstance(keep, int) or keep < 1:
        raise OptionError(f"keep must be a positive int, got {keep!r}")
    if not isinstance(step, int) or step < 0:
        raise OptionError(f"step must be a non-negative int, got {step!r}")
    if require_finite:
        bad = [n for n, t in _tensors("", payload) if t.is_floating_point() and not _finite(t)]
        if bad:
            raise NonFiniteError(
                f"refusing to write a poisoned checkpoint: {', '.join(bad[:5])} hold NaN/Inf "
                "(the previous checkpoint is kept)"
            )
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, "step": step, "payload": payload}, buf)
    data = buf.getbuffer()
    final = d / f"step-{step:012d}.pt"
    _replace(final, data, "the checkpoint ", " (the previous checkpoints are kept)", MID_WRITE_HOOK)
    for old in list_checkpoints(d)[:-keep]:
        old.unlink(missing_ok=True)
    remove_temps(d)  # left by a killed writer
    return final


def load_checkpoint(path: str | Path, *, require_finite: bool = True) -> dict[str, Any]:
    """The payload of a checkpoint file, or of the newest loadable one in a folder.

    ``path`` is a checkpoint file, a folder of checkpoints, or a run folder (its
    ``checkpoints/`` subfolder is read). In a folder, a newest file that cannot be read is
    reported with a warning and the one before it is tried.

    Args:
        path: a checkpoint file, a checkpoint folder or a run folder.
        require_finite: refuse a payload with NaN or Inf (as an unreadable file).

    Raises:
        CheckpointError: no checkpoint, or a file that is corrupt, truncated, not ours, or
            (``require_finite``) holds NaN or Inf: the file and the tensors are named.
    """
    p = Path(path)
    if p.is_dir() and not list_checkpoints(p) and (p / "checkpoints").is_dir():
        p = p / "checkpoints"  # a run folder
    if p.is_dir():
        files = list_checkpoints(p)
        if not files:
            raise CheckpointError(f"{p}: no checkpoint (step-*.pt) in this folder")
        errors = []
        for f in reversed(files):
            try:
                return _load_file(f, require_finite)
            except CheckpointError as e:
                errors.append(str(e))
                warnings.warn(f"skipping an unreadable checkpoint: {e}", stacklevel=2)
        raise CheckpointError(f"{p}: no loadable checkpoint: {'; '.join(errors)}")
    return _load_file(p, require_finite)


def write_atomic(path: str | Path, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, flushed and
    fsync-ed, then renamed over ``path`` (a reader sees the old file or the new one, whole)."""
    final = Path(path)
    _replace(final, data)
    return final


def _replace(
    final: Path,
    data: bytes | memoryview,
    what: str = "",
    kept: str = "",
    hook: Callable[[Path], None] | None = None,
) -> None:
    """Write ``data`` to a temporary file next to ``final``, fsync it, rename it over
    ``final`` and fsync the folder. On failure (a full disk...) the temporary file is removed
    and :class:`WriteError` says ``cannot write <what><final>: <reason><kept>``. ``hook``: called
    halfway through the write (:data:`MID_WRITE_HOOK`)."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            half = len(data) // 2 if hook is not None else len(data)
            f.write(data[:half])
            if hook is not None:
                f.flush()
                hook(tmp)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:
        raise WriteError(f"cannot write {what}{final}: {e.strerror or e}{kept}", e) from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(final.parent)


def remove_temps(directory: str | Path, *, only_dead: bool = True) -> list[Path]:
    """Remove the temporary files (``.<name>.tmp-<pid>``) that killed writers left in
    ``directory``; returns them.

    ``only_dead``: only those whose PID is not a running process (on POSIX; elsewhere none):
    a writer that is still running keeps its file. False: every one but this process's, as
    the holder of the run folder's lock may (:mod:`.lock`: no other process writes there).
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in d.iterdir():
        m = _TEMP.match(p.name)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        if not only_dead or _dead(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _dead(pid: int) -> bool:
    if os.name != "posix":
        return False  # no safe probe (os.kill(pid, 0) would signal it on Windows)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process
        return False
    return False


def _load_file(p: Path, require_finite: bool = True) -> dict[str, Any]:
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    _check_crcs(p)
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning: we raise anyway
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, unsafe globals, I/O error
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{p}: not a readable ostl checkpoint (corrupt, truncated or foreign file): {first}"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an ostl checkpoint (no {FORMAT!r} format tag)")
    if obj.get("version") != VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format version {obj.get('version')!r}; this ostl reads {VERSION}"
        )
    payload = obj.get("payload")
    if not isinstance(payload, dict):
        raise CheckpointError(f"{p}: the checkpoint has no payload")
    if require_finite:
        bad = nonfinite_names(_tensors("", payload))
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise CheckpointError(
                f"{p}: the checkpoint holds NaN or Inf in {', '.join(bad[:5])}{more} "
                "(a poisoned state: resume from an earlier checkpoint)"
            )
    return payload


def _check_crcs(p: Path) -> None:
    """Refuse a damaged checkpoint: ``torch.save`` writes a zip archive with a CRC-32 per entry,
    which ``torch.load`` does not check (a flipped bit in a tensor would load as a wrong
    weight). A file that is not a zip archive is left to ``torch.load``'s own error."""
    try:
        with zipfile.ZipFile(p) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return
    if bad is not None:
        raise CheckpointError(
            f"{p}: damaged: the checksum of its entry {bad!r} does not match (a corrupted "
            "file: resume from an earlier checkpoint)"
        )


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and CUDA), numpy and Python's ``random``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), gauss))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def _finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _tensors(prefix: str, obj: Any) -> Iterator[tuple[str, Tensor]]:
    if isinstance(obj, Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(f"{prefix}.{k}" if prefix else str(k), v)
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _tensors(f"{prefix}.{i}", v)


def _fsync_dir(d: Path) -> None:
    """Make the rename durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
