"""Host synchronisations of an online learner between its updates, counted on any device.

On a GPU every read of a value back to the host (``.item()``, ``float(t)``, a boolean mask, a
host-to-device copy of Python data, ...) makes the host wait for the device: an online rule that
steps without such a read between updates keeps the device's queue full. :func:`count_syncs`
trains OSTL with ``update_every > 1`` and counts the syncs of every step, on CUDA with CUDA's
own sync debug mode (``torch.cuda.set_sync_debug_mode("warn")``: a warning per synchronising
call) and on the CPU with the detector of ``benchmarks/sync_detector.py`` (a ``TorchFunctionMode``
that records every operation that would synchronise on a GPU). A deliberate ``.item()`` after
the run checks that the counter sees a sync at all.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ostl.learner import Learner

from .sync_detector import SyncDetector
from .workload import (
    NetSpec,
    build_network,
    input_pool,
    loss_fn,
    make_optimizer,
    make_rule,
    one_hot_targets,
)

__all__ = ["count_syncs"]


@contextlib.contextmanager
def _cuda_syncs(found: list[str]) -> Iterator[None]:
    """Appends to ``found`` a line per synchronising CUDA call made inside (sync debug mode)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found += [f"{w.message} at {w.filename}:{w.lineno}" for w in caught
              if "synchroniz" in str(w.message)]  # fmt: skip


@contextlib.contextmanager
def _detected_syncs(found: list[str]) -> Iterator[None]:
    """Appends to ``found`` every tensor read that would wait for a GPU (CPU detector)."""
    with SyncDetector() as d:
        yield
    found += [str(s) for s in d.syncs]


def count_syncs(
    spec: NetSpec, *, device: str, every: int = 4, steps: int = 24, seed: int = 0
) -> dict[str, Any]:
    """Host syncs of OSTL (``update_every=every``) over ``steps`` steps after two updates'
    worth of warm-up (the first update creates Adam's state), split into the steps between
    updates and the updates themselves.

    Returns:
        ``counter`` (how syncs were counted), ``control`` (syncs the counter saw in one
        deliberate ``.item()``: at least 1 or the count means nothing), ``between_steps``,
        ``syncs_between``, ``updates``, ``syncs_at_updates``, ``between_examples`` and
        ``update_examples`` (a few of each), ``schedule_ok`` (the Learner took its updates at
        the steps counted as updates); or ``skipped`` with the reason.
    """
    cuda = torch.device(device).type == "cuda"
    if cuda:
        counter, how = (
            _cuda_syncs,
            'CUDA\'s own sync debug mode (torch.cuda.set_sync_debug_mode("warn"))',
        )
    else:
        counter, how = (
            _detected_syncs,
            "the CPU detector of benchmarks/sync_detector.py (every read that would wait for a "
            "GPU)",
        )
    net = build_network(spec, seed=seed, device=device)
    learner = Learner(net, make_rule("ostl"), loss_fn=loss_fn,
                      optimizer=make_optimizer(net.parameters()), update_every=every)  # fmt: skip
    pool = input_pool(spec, 2 * every + steps, seed=seed, device=device)
    target = one_hot_targets(spec, seed=seed, device=device)
    learner.reset(spec.batch)
    for t in range(2 * every):
        learner.step(pool[t], target)
    between: list[str] = []
    at_updates: list[str] = []
    for t in range(2 * every, 2 * every + steps):
        found = at_updates if (t + 1) % every == 0 else between  # the Learner's schedule
        with counter(found):
            learner.step(pool[t], target)
    control: list[str] = []
    with counter(control):
        torch.ones(1, device=device).sum().item()
    updates = sum((t + 1) % every == 0 for t in range(2 * every, 2 * every + steps))
    return {"counter": how, "control": len(control), "between_steps": steps - updates,
            "syncs_between": len(between), "updates": updates, "syncs_at_updates": len(at_updates),
            "between_examples": _short(between), "update_examples": _short(at_updates),
            "update_every": every, "schedule_ok": learner.updates == 2 + updates}  # fmt: skip


def _short(found: list[str], k: int = 3) -> list[str]:
    """The first ``k`` distinct records, with paths relative to the repository."""
    root = str(Path(__file__).resolve().parents[1]) + os.sep
    return list(dict.fromkeys(f.replace(root, "") for f in found))[:k]
