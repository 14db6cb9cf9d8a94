"""The promises checked after a fault, in this process: files compared with the reference.

"Bit-identical" means every tensor has the same dtype, shape and values (``torch.equal``) and
every other value is equal. Loads go through the library's own readers (``ostl.load``,
``ostl.load_checkpoint``), one at a time (warnings are recorded per load).
"""

from __future__ import annotations

import functools
import json
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from ostl.errors import CheckpointError
from ostl.run.checkpoint import load_checkpoint as read_checkpoint
from ostl.run.model import load

from .core import KEEP, Reference, step_files, step_of

LOCK = threading.Lock()
#: Fields of summary.json that an interrupted and resumed run must reproduce exactly.
SUMMARY_KEYS = ("steps", "updates", "test_metric", "final_test_metric", "best_epoch")


def same(a: Any, b: Any) -> bool:
    """Bit-identical (see the module)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(torch.equal(a, b))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def load_checkpoint(path: Path) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """(payload, error, warnings) of ``ostl.load_checkpoint(path)``."""
    with LOCK, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            payload = read_checkpoint(path)
            error = None
        except CheckpointError as e:
            payload, error = None, str(e)
        except Exception as e:  # not the documented error: reported as such
            payload, error = None, f"{type(e).__name__} (not a CheckpointError): {e}"
    return payload, error, [str(w.message) for w in seen]


def load_model(run: Path, which: str) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """(weights, error) of ``ostl.load(run, which)``."""
    with LOCK:
        try:
            net, _ = load(run, which)
            return {k: v.detach().clone() for k, v in net.state_dict().items()}, None
        except CheckpointError as e:
            return None, str(e)
        except Exception as e:
            return None, f"{type(e).__name__} (not a CheckpointError): {e}"


@functools.lru_cache(maxsize=256)
def _reference_learner(path: Path) -> dict[str, Any]:
    payload, error, _ = load_checkpoint(path)
    if payload is None:
        raise RuntimeError(f"the reference checkpoint {path} is unreadable: {error}")
    return dict(payload["learner"])


@functools.lru_cache(maxsize=8)
def _reference_model(run: Path) -> dict[str, torch.Tensor]:
    weights, error = load_model(run, "last")
    if weights is None:
        raise RuntimeError(f"the reference run's model is unreadable: {error}")
    return weights


def reference_learner(ref: Reference, step: int) -> dict[str, Any]:
    """The learner state (weights, optimizer, traces) of the reference at checkpoint ``step``."""
    return _reference_learner(ref.checkpoint(step))


def summary(run: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((run / "summary.json").read_text()))
    except (OSError, ValueError):
        return None


def _history(s: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in s.get("history", [])]


def check_final(run: Path, ref: Reference, fallback_ok: bool = False) -> list[str]:
    """Why the finished ``run`` differs from the reference (empty: it does not).

    Checks summary.json (step count, updates, metrics, history), model-last.safetensors and the
    newest checkpoint's learner state; ``fallback_ok``: the newest checkpoint file may be
    unreadable (a hostile file placed there) as long as the loader falls back to a good one.
    """
    reasons = []
    got, want = summary(run), summary(ref.folder)
    assert want is not None
    if got is None:
        return ["no readable summary.json: the run did not finish"]
    for key in SUMMARY_KEYS:
        if got.get(key) != want.get(key):
            reasons.append(f"summary.json {key} {got.get(key)!r}, uninterrupted {want[key]!r}")
    if _history(got) != _history(want):
        reasons.append("the per-epoch history differs from the uninterrupted run's")
    weights, error = load_model(run, "last")
    if weights is None:
        reasons.append(f"model-last.safetensors unreadable: {error}")
    elif not same(weights, _reference_model(ref.folder)):
        reasons.append("model-last.safetensors is not bit-identical to the uninterrupted run's")
    payload, error, warned = load_checkpoint(run / "checkpoints")
    if payload is None:
        reasons.append(f"the final checkpoint is unreadable: {error}")
    elif not same(payload["learner"], reference_learner(ref, ref.steps[-1])):
        reasons.append("the final checkpoint's state is not bit-identical to the uninterrupted")
    if warned and not fallback_ok:
        reasons.append(f"the newest checkpoint was skipped: {warned[0]}")
    return reasons


def check_kept(
    run: Path, ref: Reference, completed: int, compare: bool = True
) -> tuple[list[str], list[str]]:
    """After a fault while writing checkpoint number ``completed + 1`` (or in training after
    ``completed`` checkpoints): (failures, lost). Every checkpoint file present must load and
    (``compare``) equal the reference's at its step; the newest ``KEEP`` completed ones must be
    present."""
    failures, lost = [], []
    present = {step_of(p): p for p in step_files(run)}
    for step, path in sorted(present.items()):
        payload, error, _ = load_checkpoint(path)
        if payload is None:
            failures.append(f"{path.name} unreadable after the fault: {error}")
            lost.append("checkpoint unreadable")
        elif compare and (
            step not in ref.steps or not same(payload["learner"], reference_learner(ref, step))
        ):
            failures.append(f"{path.name} differs from the uninterrupted run's checkpoint")
            lost.append("checkpoint corrupted")
    for step in ref.steps[:completed][-KEEP:]:
        if step not in present:
            failures.append(f"the completed checkpoint of step {step} is gone")
            lost.append("checkpoint lost")
    return failures, lost
