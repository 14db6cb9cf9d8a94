"""Operations dispatched per training step, counted with ``torch.profiler`` in its own process.

Protocol: the method is prepared exactly as for the speed measurement (:func:`.speed.prepare`:
same network, inputs, loss, Adam); ``warmup`` sequences run unprofiled (lazy initialisation;
a compiled variant compiles there); then one sequence of T steps runs under the profiler, the
reset before it outside. That sequence holds everything a training step does over a sequence:
every forward step, BPTT's backward pass, every optimizer step and zeroing of gradients. The
counts are divided by T.

Counting convention, the same for every method:

- ``aten_per_step``: every profiler event whose name starts with ``aten::``, **nested ones
  included**: an ``aten::linear`` that calls ``aten::t`` and ``aten::addmm`` counts three. It is
  the number of times an aten operation went through the dispatcher, in the forward code, in
  autograd's backward functions and in the optimizer alike.
- ``aten_top_per_step``: only the ``aten::`` events with no ``aten::`` event among their
  ancestors: the operations that Python code (or an autograd node) called directly.
- ``aten_backward_per_step``: the part of ``aten_per_step`` that autograd's engine ran (events
  under an ``autograd::engine::`` event): BPTT's backward pass.

Work that does not go through the dispatcher is not counted: ostl's fused trace kernel, which
eager code calls directly, and the code ``torch.compile`` generates.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch.profiler import ProfilerActivity, profile

from .speed import prepare, time_sequences
from .workload import NetSpec

__all__ = ["count_ops", "aten_counts", "ATEN", "BACKWARD"]

#: Prefix of the profiler events that count.
ATEN = "aten::"


#: Prefix of the events autograd's engine wraps each backward function in.
BACKWARD = "autograd::engine::"


def _has_ancestor(event: Any, prefix: str) -> bool:
    """Whether an ancestor of a profiler event has a name starting with ``prefix``."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(prefix):
            return True
        parent = parent.cpu_parent
    return False


def aten_counts(events: Any) -> dict[str, Any]:
    """The aten events of a profile: ``all`` (nested ones included), ``top`` (top level only),
    ``backward`` (those run by autograd's engine, in a backward pass) and ``names`` (top-level
    ones by name)."""
    aten = [e for e in events if e.name.startswith(ATEN)]
    top = [e for e in aten if not _has_ancestor(e, ATEN)]
    return {
        "all": len(aten),
        "top": len(top),
        "backward": sum(_has_ancestor(e, BACKWARD) for e in aten),
        "names": Counter(e.name for e in top),
    }


def count_ops(
    spec: NetSpec, method: str, steps: int, *, warmup: int = 1, seed: int = 0, device: str = "cpu"
) -> dict[str, Any]:
    """Aten operations per training step of ``method`` on ``spec``; see the module docstring.

    Returns:
        ``aten_per_step`` (nested included), ``aten_top_per_step`` (top level only),
        ``aten_backward_per_step`` (of ``aten_per_step``, those in autograd's backward pass),
        ``top_ops`` (the ten most frequent top-level ops, per step) and ``steps``.
    """
    w = prepare(spec, method, steps, seed=seed, device=device)
    if warmup:
        time_sequences(w.run, warmup=0, repeats=warmup, setup=w.setup, device=device)
    if w.setup is not None:
        w.setup()
    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        w.run()
    n = aten_counts(prof.events())
    return {
        "steps": steps,
        "aten_per_step": n["all"] / steps,
        "aten_top_per_step": n["top"] / steps,
        "aten_backward_per_step": n["backward"] / steps,
        "top_ops": {k.removeprefix(ATEN): c / steps for k, c in n["names"].most_common(10)},
    }
