"""Hostile and corrupt files (class 7) and NaN/Inf in a checkpoint (class 8).

Each try copies the finished reference run, spoils one file and checks the readers: the
library's (``ostl.load_checkpoint`` on the file and on the folder, ``ostl.load``) and the
commands' (``ostl train --resume``, ``ostl evaluate``). A spoiled *checkpoint* is either the
newest one changed in place (truncated, a bit flipped) or a new file with a newer step (a
foreign file, a pickle that would run code, a checkpoint holding NaN or Inf); the promise is an
error naming the file, or a fallback to the previous good checkpoint with a warning naming it.
A spoiled *model* replaces ``model.safetensors``; ``ostl evaluate`` must fail in one line.
The code-running files create a marker file if their code ever runs.
"""

from __future__ import annotations

import io
import pickle
import random
import shutil
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from ostl.run.checkpoint import save_checkpoint

from .checks import check_final, load_checkpoint, load_model, reference_learner, same
from .core import CKPT, FaultClass, Job, Suite, Try, step_files, step_of
from .procs import Command

HOSTILE = FaultClass(
    7, "hostile", "truncated, bit-flipped, foreign and code-running files",
    "A truncated, bit-flipped, foreign or code-carrying checkpoint or model file is refused "
    "with an error naming it (a checkpoint folder may fall back to the previous good "
    "checkpoint, with a warning naming the bad one); no code in a file ever runs; "
    "`ostl evaluate` of a bad model fails in one line.",
    "CheckpointError naming the file or a warned fallback, resume ends bit-identical or is "
    "refused in one line, `ostl evaluate` fails in one line, no code ran",
)  # fmt: skip
NONFINITE = FaultClass(
    8, "nonfinite", "NaN/Inf in a checkpoint's weights",
    "A checkpoint whose weights hold NaN or Inf is refused on load, naming the file (a folder "
    "falls back to the previous good checkpoint with a warning); it never starts a run.",
    "CheckpointError naming the file or a warned fallback; resume ends bit-identical or is "
    "refused in one line",
)  # fmt: skip
MARKER = "CODE-RAN"


class _Evil:
    """Unpickling it calls ``open(marker, "w")``: the file appears if the loader runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


# -- spoiling a file: each returns the bad file ------------------------------------------
Spoil = Callable[[Path, random.Random, Path], Path]  # (file, rng, marker) -> the bad file


def truncate(path: Path, rng: random.Random, marker: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: rng.randrange(len(data) // 4, 3 * len(data) // 4)])
    return path


def flip_bit(path: Path, rng: random.Random, marker: Path) -> Path:
    """Flip one bit of the tensor data (of a checkpoint's zip records or a model's data)."""
    data = bytearray(path.read_bytes())
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            records = [i for i in z.infolist() if "/data/" in i.filename and i.file_size]
        rec = rng.choice(records)
        head = data[rec.header_offset : rec.header_offset + 30]
        start = rec.header_offset + 30 + int.from_bytes(head[26:28], "little")
        start += int.from_bytes(head[28:30], "little")
        pos = rng.randrange(start, start + rec.compress_size)
    else:  # safetensors: an 8-byte header length, the JSON header, then the data
        start = 8 + int.from_bytes(data[:8], "little")
        pos = rng.randrange(start, len(data))
    data[pos] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return path


def flip_anywhere(path: Path, rng: random.Random, marker: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return path


def _newer(path: Path) -> Path:
    """A checkpoint name newer than ``path`` (a model file is replaced in place)."""
    if path.name.startswith("step-"):
        return path.with_name(f"step-{step_of(path) + 1:012d}.pt")
    return path


def _writing(make: Callable[[Path, random.Random, Path], bytes]) -> Spoil:
    def spoil(path: Path, rng: random.Random, marker: Path) -> Path:
        bad = _newer(path)
        bad.write_bytes(make(path, rng, marker))
        return bad

    return spoil


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


foreign_safetensors = _writing(
    lambda p, rng, m: safetensors_bytes({"weight": torch.full((4, 4), rng.random())})
)
foreign_pickle = _writing(lambda p, rng, m: pickle.dumps({"state_dict": {"w": [0.5, 1.5]}}))
foreign_torch = _writing(lambda p, rng, m: _torch_bytes({"model": {"w": torch.ones(3)}}))
code_pickle = _writing(lambda p, rng, m: pickle.dumps(_Evil(m)))
code_torch = _writing(lambda p, rng, m: _torch_bytes({"payload": _Evil(m)}))


def nonfinite(value: float, where: str) -> Spoil:
    """A newer checkpoint: the newest one with ``value`` in one tensor of ``where``."""

    def spoil(path: Path, rng: random.Random, marker: Path) -> Path:
        payload, error, _ = load_checkpoint(path)
        assert payload is not None, error
        tensors = _float_tensors(payload["learner"][where])
        tensors[rng.randrange(len(tensors))].view(-1)[0] = value
        step = step_of(path) + 1
        return save_checkpoint(path.parent, payload, step=step, keep=10**6, require_finite=False)

    return spoil


def _float_tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() and obj.numel() else []
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else []
    return [t for v in items for t in _float_tensors(v)]


# -- the tries -----------------------------------------------------------------------------
def _copy_of_reference(suite: Suite, work: Path) -> Path:
    run = work / "run"
    shutil.copytree(suite.reference.folder, run, ignore=shutil.ignore_patterns("*.png", "tb"))
    for old in step_files(run)[:-2]:
        old.unlink()
    return run


def checkpoint_try(suite: Suite, name: str, spoil: Spoil) -> Try:
    t, ref, rng = Try(name), suite.reference, suite.rng(name)
    work = suite.folder(name)
    run, marker = _copy_of_reference(suite, work), work / MARKER
    newest = step_files(run)[-1]
    original, _, _ = load_checkpoint(newest)
    bad = spoil(newest, rng, marker)
    good = step_files(run)[-2] if bad == newest else newest  # where a fallback should land
    payload, error, _ = load_checkpoint(bad)
    harmless = payload is not None and bad == newest and same(payload, original)
    if harmless:
        t.notes.append(f"{bad.name}: the change hit nothing that is read (loads the same data)")
    elif payload is not None:
        t.fail(f"{bad.name} loaded without an error: its data changed silently")
        t.lost.append("silent corruption")
    elif bad.name not in str(error) or "not a CheckpointError" in str(error):
        t.fail(f"loading {bad.name}: {error}")
    payload, error, warned = load_checkpoint(run / "checkpoints")
    if payload is None and bad.name not in str(error):
        t.fail(f"loading the folder: the error does not name {bad.name}: {error}")
    elif payload is not None and not harmless:
        fell_back = same(payload["learner"], reference_learner(ref, step_of(good)))
        if not fell_back:
            t.fail("loading the folder returned the bad file's data")
        elif not any(bad.name in w for w in warned):
            t.fail(f"loading the folder skipped {bad.name} without a warning naming it")
    _resume(t, suite, run, work, bad.name, harmless)
    if marker.exists():
        t.fail("the file's code ran: the marker file was created")
        t.lost.append("code ran")
    return t


def _resume(t: Try, suite: Suite, run: Path, work: Path, bad: str, harmless: bool) -> None:
    done = Command(["train", "--resume", run, *CKPT, "--no-progress"], work, suite.env(),
                   "resume").wait()  # fmt: skip
    t.lost += ["traceback"] if done.traceback else []
    if done.rc == 0:
        if not harmless and bad not in done.err:
            t.fail(f"the resume went on without a warning naming {bad}")
        t.failures += check_final(run, suite.reference, fallback_ok=True)
    elif not t.fail(done.error_line("train")) and bad not in done.last:
        t.fail(f"the resume was refused without naming {bad}: {done.last}")


def model_try(suite: Suite, name: str, spoil: Spoil) -> Try:
    t, rng = Try(name), suite.rng(name)
    work = suite.folder(name)
    run, marker = _copy_of_reference(suite, work), work / MARKER
    original, _ = load_model(run, "best")
    bad = spoil(run / "model.safetensors", rng, marker)
    weights, error = load_model(run, "best")
    harmless = weights is not None and original is not None and same(weights, original)
    if harmless:
        t.notes.append("the flipped bit changed nothing that is read")
    elif weights is not None:
        t.fail(f"{bad.name} loaded without an error: its weights changed silently")
        t.lost.append("silent corruption")
    elif bad.name not in str(error) or "not a CheckpointError" in str(error):
        t.fail(f"ostl.load: {error}")
    done = Command(["evaluate", run], work, suite.env(), "evaluate").wait()
    t.lost += ["traceback"] if done.traceback else []
    if done.rc == 0 and not harmless:
        t.fail("ostl evaluate succeeded on the bad model")
    elif done.rc != 0 and not t.fail(done.error_line("evaluate")) and bad.name not in done.last:
        t.fail(f"ostl evaluate failed without naming {bad.name}: {done.last}")
    if marker.exists():
        t.fail("the file's code ran: the marker file was created")
        t.lost.append("code ran")
    return t


def hostile_jobs(suite: Suite) -> list[Job]:
    ckpt: list[tuple[str, Spoil]] = [
        ("truncated", truncate), ("a bit flipped in a tensor", flip_bit),
        ("foreign safetensors file", foreign_safetensors), ("foreign pickle", foreign_pickle),
        ("pickle that runs code", code_pickle), ("torch file that runs code", code_torch),
    ]  # fmt: skip
    model = [entry for entry in ckpt if entry[0] != "foreign pickle"]
    if suite.mode != "quick":
        ckpt.append(("foreign torch file", foreign_torch))
    if suite.mode == "long":
        ckpt += [(f"a bit flipped anywhere #{i}", flip_anywhere) for i in range(1, 6)]
        model += [(f"a bit flipped anywhere #{i}", flip_anywhere) for i in range(1, 6)]
    cases = [(f"checkpoint: {n}", checkpoint_try, s) for n, s in ckpt]
    cases += [(f"model.safetensors: {n}", model_try, s) for n, s in model]
    return [Job(HOSTILE, name, partial(make, suite, name, s)) for name, make, s in cases]


def nonfinite_jobs(suite: Suite) -> list[Job]:
    cases = [("NaN in a weight", nonfinite(float("nan"), "net")),
             ("+Inf in a weight", nonfinite(float("inf"), "net"))]  # fmt: skip
    if suite.mode == "long":
        cases += [("NaN in the optimizer state", nonfinite(float("nan"), "optimizer")),
                  ("-Inf in the traces", nonfinite(float("-inf"), "runner"))]  # fmt: skip
    return [Job(NONFINITE, n, partial(checkpoint_try, suite, n, s)) for n, s in cases]
