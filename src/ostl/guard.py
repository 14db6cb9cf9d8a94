"""The optimizer step under the non-finite guard of :class:`ostl.Learner` (``nonfinite=``).

:class:`GuardedStep` steps a ``torch.optim`` optimizer so that a step which leaves a NaN or an
Inf behind is undone:

1. the parameters the step updates and their optimizer state (Adam's moments and step count,
   SGD's momentum buffer, ...) are copied into buffers kept from one update to the next (one
   fused ``torch._foreach_copy_`` per device and dtype);
2. the optimizer steps;
3. the verdict: are the gradients it was given and the new weights finite? Decided either

   - *on the host* (the default): their norms are summed on the device (one fused
     ``torch._foreach_norm``) and read back, the update's single host synchronisation. If the
     sum is not finite (and an element-by-element look confirms it: the sum of large finite
     norms may overflow), the copies are written back: the weights and the optimizer state
     are exactly as before the step, and :meth:`GuardedStep.step` says what was bad;
   - or *on the device* (``step(..., on_device=True)``): each tensor's largest magnitude
     and 2-norm (:func:`ostl.engine.carry.finite_flags`: exact, no overflow) give the
     verdict as a tensor, and every copied tensor is put back where the verdict is bad
     (``torch.where``). Nothing is read back: :meth:`GuardedStep.step` returns a
     :class:`Verdict`, which says what was bad only when asked (one synchronisation then).
     This needs the optimizer state on the parameters' device and no new state entries: a
     step that creates them (an optimizer's first step) or an optimizer that keeps some on
     the host (``torch.optim.Adam``'s step counts, unless ``capturable=True`` or
     ``fused=True``) is decided on the host, with its one synchronisation.

The optimizer state is restored with the weights but not checked on its own (that would read
it all at every update): a state that turns non-finite while the weights stay finite (Adam's
second moment overflowing for a gradient above ~1e19 in float32) is not caught here.

Cost per update, besides the verdict: a copy of the stepped parameters and of their
optimizer state (for Adam three times the parameters' bytes, held between updates), the norms
of gradients and weights, and a walk over the optimizer's state entries (to notice new ones).
Measured on a CPU (2 cores, 64-128-10 networks, Adam): 50 to 120 µs per update, 3 to 7% of an
online step (on a GPU the copies and norms are a few fused kernels; not measured). A verdict
on the device adds one ``torch.where`` per copied tensor, and the Learner then checks and
selects its whole carry on the device too (:func:`ostl.engine.carry.restart_where`): on a CPU
(2 cores) that made an online step of the 64-256-256-10 LIF network 8x slower (about 24 ms
instead of 3 ms), since these reductions and selections run slowly there, and reading a value
back costs a CPU nothing: hence the host verdict there by default. The optimizer steps even on
non-finite gradients (its step hooks run) and that step is undone.

A ``RuntimeError`` from the optimizer's step undoes the step the same way; an overflow (a
learning rate so large that it overflows the weights' dtype: ``value cannot be converted to
type float without overflow``) is reported as ``Bad(error=...)``, any other is re-raised.

:class:`Tally` counts the updates taken and skipped; verdicts on the device are counted there
and read back only when a count is read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .engine.carry import finite_flags
from .errors import NonFiniteError, nonfinite_names, norm_total

__all__ = ["GuardedStep", "Bad", "Verdict", "Tally"]


@dataclass
class Bad:
    """What made an update non-finite (its step was undone)."""

    grads: list[str] = field(default_factory=list)  # parameters with a NaN/Inf gradient
    weights: list[str] = field(default_factory=list)  # ... whose new value held NaN/Inf
    state: list[str] = field(default_factory=list)  # optimizer state entries, "<param>.<key>",
    # that held NaN/Inf after the step (reported; the check itself is on gradients and weights)
    error: str | None = None  # the optimizer's step raised this (first line)

    def summary(self) -> str:
        """What was bad, in a few words."""
        if self.error is not None:
            return f"the optimizer step failed: {self.error}"
        if self.grads:
            return f"non-finite gradients of {', '.join(self.grads[:5])}"
        return f"the optimizer step made {', '.join([*self.weights, *self.state][:5])} non-finite"

    def message(
        self,
        where: str,
        *,
        cause: str | None,
        poisoned: list[str],
        kept: str,
        lrs: list[float],
        dtype: torch.dtype,
    ) -> str:
        """What :class:`~ostl.errors.NonFiniteError` says about this update.

        Args:
            where: ``"at step <t> (update <u>)"``.
            cause: the first non-finite input, target or output error on record, if any.
            poisoned: the rule's state entries that hold NaN/Inf.
            kept: what was not updated (a sentence).
            lrs: the optimizer's learning rates; dtype: the weights' dtype.
        """
        lr = ", ".join(f"{v:g}" for v in sorted(set(lrs)))
        if self.error is not None:
            return (
                f"the optimizer step {where} failed: {self.error}. It was undone (the weights and "
                f"the optimizer state are as before it). Is the learning rate (lr={lr}) too "
                f"large for {dtype} weights?"
            )
        if cause is not None:
            msg = f"{cause}: expected finite values, found NaN or Inf"
        elif self.grads:
            state = f"; non-finite rule state: {', '.join(poisoned[:5])}" if poisoned else ""
            msg = f"non-finite gradient {where} of {', '.join(self.grads)}{state}"
        else:
            made = ", ".join([*self.weights, *self.state][:8])
            msg = (
                f"the optimizer step {where} made {made} non-finite (NaN or Inf) from finite "
                f"gradients (is the learning rate lr={lr} too large?); the step was undone"
            )
        return (
            f"{msg}. {kept} (the stream state was restarted if it was poisoned). "
            "Learner(nonfinite='skip') skips such updates instead."
        )


@dataclass
class Verdict:
    """A guarded step's verdict, decided on the device (:meth:`GuardedStep.step` with
    ``on_device=True``): nothing has been read back. The step was already kept or undone
    accordingly."""

    ok: Tensor  # () bool: the gradients and the new weights were finite, the step was kept
    finite: Tensor  # (n,) bool: each tensor of `names` free of NaN/Inf (state: after the step)
    names: tuple[list[str], list[str], list[str]]  # gradients, weights, "<param>.<key>" state

    def bad(self) -> Bad | None:
        """What was bad, as :meth:`GuardedStep.step` says on the host; None if the step was
        kept. One host synchronisation."""
        flags = iter(self.finite.tolist())
        grads, weights, state = ([n for n in names if not next(flags)] for names in self.names)
        if not (grads or weights):
            return None
        return Bad(grads=grads, weights=weights, state=state)


class _Plan:
    """What a step over one set of parameters copies (built once, and again when the
    optimizer's state changes shape: its first step, a ``load_state_dict``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: Mapping[str, Tensor]) -> None:
        self.signature = _signature(optimizer, params.values())
        self.names = list(params)
        self.params = list(params.values())
        #: each parameter's state entries (None: empty, created lazily by the first step)
        self.entries: list[tuple[Tensor, dict[Any, Any] | None]] = []
        live: list[Tensor] = list(params.values())
        for p in self.params:
            state = optimizer.state.get(p)
            self.entries.append((p, dict(state) if state else None))
            live.extend(v for v in (state or {}).values() if isinstance(v, Tensor))
        kinds = {(p.device, p.dtype) for p in self.params}
        self.kind = kinds.pop() if len(kinds) == 1 else None  # one fused norm if not None
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
        for t in live:
            lv, sv = groups.setdefault((t.device, t.dtype), ([], []))
            lv.append(t)
            sv.append(torch.empty_like(t))
        self.groups = list(groups.values())  # (live tensors, their copies)
        #: the floating-point optimizer state, named "<param>.<key>" (for a Verdict)
        self.state = [
            (f"{n}.{k}", v)
            for n, (_, entries) in zip(self.names, self.entries)
            for k, v in (entries or {}).items()
            if isinstance(v, Tensor) and v.is_floating_point()
        ]
        devices = {t.device for t in live}
        #: the one device of every copied tensor (None: several); a Verdict needs one
        self.device = devices.pop() if len(devices) == 1 else None
        self.others = any(
            not isinstance(v, Tensor) for _, e in self.entries for v in (e or {}).values()
        )

    def snapshot(self) -> list[tuple[Tensor, Any, Any]]:
        """Copy the weights and the state tensors; returns the other state entries."""
        with torch.no_grad():
            for live, saved in self.groups:
                torch._foreach_copy_(saved, live)
        return [
            (p, k, v)
            for p, entries in self.entries
            if entries
            for k, v in entries.items()
            if not isinstance(v, Tensor)
        ]

    def undo(self, optimizer: torch.optim.Optimizer, others: list[tuple[Tensor, Any, Any]]) -> None:
        """The weights and the optimizer state as they were at :meth:`snapshot`."""
        with torch.no_grad():
            for live, saved in self.groups:
                torch._foreach_copy_(live, saved)
        for p, entries in self.entries:
            if entries is None:
                optimizer.state.pop(p, None)  # created by the undone step
            else:
                optimizer.state[p] = dict(entries)  # the same tensors, now restored
        for p, k, v in others:
            optimizer.state[p][k] = v

    def keep_if(self, ok: Tensor) -> None:
        """Keep the stepped weights and state where ``ok``, else put the copies back (on the
        device: the optimizer's state entries are the same tensors, none was added)."""
        with torch.no_grad():
            for live, saved in self.groups:
                for a, b in zip(live, saved):
                    torch.where(ok, a, b, out=a)

    def verdict(self, grads: Mapping[str, Tensor]) -> Verdict:
        """Whether the gradients, the new weights (and, for the record, the state) are finite,
        on the device; the step is then kept or undone (:meth:`keep_if`)."""
        n = len(self.params)
        finite = finite_flags([*grads.values(), *self.params, *(v for _, v in self.state)])
        ok = finite[: 2 * n].all()
        self.keep_if(ok)
        names = (list(grads), list(self.names), [k for k, _ in self.state])
        return Verdict(ok, finite, names)

    def decidable_on_device(self, optimizer: torch.optim.Optimizer, grads: Mapping[str, Tensor]
                            ) -> bool:  # fmt: skip
        """A verdict on the device can keep or undo this step: every tensor on one device,
        no state entry but tensors, none created or replaced by the step."""
        return (
            self.device is not None
            and not self.others
            and all(g.device == self.device and g.is_floating_point() for g in grads.values())
            and _signature(optimizer, self.params) == self.signature
        )

    def total(self, grads: Mapping[str, Tensor]) -> Tensor | None:
        """The summed norms of ``grads`` and of the weights, on the device (no sync)."""
        tensors = [*grads.values(), *self.params]
        with torch.no_grad():
            if self.kind is not None and all(
                (g.device, g.dtype) == self.kind for g in grads.values()
            ):
                return torch.stack(torch._foreach_norm(tensors)).sum()
            return norm_total(tensors)


def _signature(optimizer: torch.optim.Optimizer, params: Iterable[Tensor]) -> tuple[Any, ...]:
    """What a :class:`_Plan` depends on: each parameter's state entries (tensors by identity)."""
    sig: list[Any] = []
    for p in params:
        state = optimizer.state.get(p)
        sig.append(len(state) if state else 0)
        if state:
            sig.extend(id(v) if isinstance(v, Tensor) else k for k, v in state.items())
    return tuple(sig)


class GuardedStep:
    """Steps ``optimizer`` on given gradients and undoes a step that is not finite."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self._plans: dict[tuple[str, ...], _Plan] = {}  # by the names of the stepped params

    def step(
        self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor], *, on_device: bool = False
    ) -> Bad | Verdict | None:
        """Write ``grads`` into ``.grad``, step, forget ``.grad``; None if the gradients and
        the new weights are finite, else what was not (the step undone).

        ``on_device=True``: decide on the device where it can (see the module docstring) and
        return the :class:`Verdict` without reading it; where it cannot, as above. A failed
        optimizer step is reported at once either way (``Bad(error=...)``).
        """
        key = tuple(params)
        before = self._plan(key, params)
        others = before.snapshot()
        for name, p in params.items():
            p.grad = grads[name]  # forgotten right after the step, so not copied
        try:
            self.optimizer.step()
        except RuntimeError as e:
            before.undo(self.optimizer, others)
            if "overflow" not in str(e):
                raise
            return Bad(error=str(e).strip().splitlines()[0])
        finally:
            for p in params.values():
                p.grad = None
        if on_device and before.decidable_on_device(self.optimizer, grads):
            return before.verdict(grads)
        total = before.total(grads)
        if total is None or math.isfinite(float(total)):  # the one host synchronisation
            return None
        bad = Bad(
            grads=nonfinite_names(grads.items()),
            weights=nonfinite_names((n, p.detach()) for n, p in params.items()),
            state=nonfinite_names(self._state(params)),
        )
        if not (bad.grads or bad.weights):
            return None  # finite values whose norms overflowed in the sum
        before.undo(self.optimizer, others)
        return bad

    def _state(self, params: Mapping[str, Tensor]) -> list[tuple[str, Tensor]]:
        """(``<param>.<key>``, tensor) of the optimizer state of ``params``."""
        return [
            (f"{name}.{key}", v)
            for name, p in params.items()
            for key, v in self.optimizer.state.get(p, {}).items()
            if isinstance(v, Tensor)
        ]

    def _plan(self, key: tuple[str, ...], params: Mapping[str, Tensor]) -> _Plan:
        """The plan for ``params``, rebuilt if the optimizer's state changed shape."""
        plan = self._plans.get(key)
        if plan is None or plan.signature != _signature(self.optimizer, params.values()):
            plan = self._plans[key] = _Plan(self.optimizer, params)
        return plan


class Tally:
    """Updates taken, skipped, and skipped in a row (since the last one taken).

    Updates decided on the host count at once (:meth:`took`, :meth:`skipped_one`); a
    :class:`Verdict` is counted on the device (:meth:`add`, no synchronisation) and read back
    the next time a count is read (:meth:`read`: one synchronisation for all of them).
    """

    def __init__(self) -> None:
        self.counts = [0, 0, 0]  # taken, skipped, skipped in a row: up to the last read
        # on the device, since the last read: taken, skipped, skipped since the last taken,
        # and how many were taken (0: the run of skips continues the host's)
        self._dev: Tensor | None = None
        self.unread = 0  # verdicts added since the last read

    def add(self, ok: Tensor) -> None:
        """Count a verdict decided on the device (``ok``: a () bool tensor)."""
        if self._dev is None or self._dev.device != ok.device:
            self.read()
            self._dev = torch.zeros(4, dtype=torch.int64, device=ok.device)
        took = ok.to(torch.int64)
        bad = 1 - took
        one = torch.ones_like(took)
        # (taken, skipped, run, any taken) <- (+took, +bad, (run + 1)·bad, +took)
        self._dev.mul_(torch.stack((one, one, bad, one))).add_(torch.stack((took, bad, bad, took)))
        self.unread += 1

    def read(self) -> list[int]:
        """[taken, skipped, skipped in a row], the device's verdicts included (one host
        synchronisation if there are any)."""
        if self.unread:
            assert self._dev is not None
            took, bad, run, any_took = self._dev.tolist()
            self._dev.zero_()
            self.unread = 0
            c = self.counts
            self.counts = [c[0] + took, c[1] + bad, run if any_took else c[2] + run]
        return list(self.counts)

    def check(self, max_skips: int, step: int, last: Bad | None) -> None:
        """Raise :class:`~ostl.errors.NonFiniteError` if ``max_skips`` updates in a row were
        skipped, the last at ``step`` for what ``last`` says."""
        taken, skipped, in_a_row = self.read()
        if in_a_row >= max_skips:
            why = f": {last.summary()}" if last is not None else ""
            raise NonFiniteError(
                f"{in_a_row} updates in a row were skipped for NaN or Inf (the last at step "
                f"{step}{why}; {taken} updates taken, {skipped} skipped): the learner is not "
                "learning. Check the inputs, the targets and the learning rate "
                "(Learner(max_skips=...) sets this limit)."
            )

    def most_in_a_row(self) -> int:
        """An upper bound on the skips in a row, known without reading the device."""
        return self.counts[2] + self.unread

    def took(self) -> None:
        """Count an update taken (decided on the host)."""
        taken, skipped, _ = self.read()
        self.counts = [taken + 1, skipped, 0]

    def skipped_one(self) -> None:
        """Count a skipped update (decided on the host)."""
        taken, skipped, run = self.read()
        self.counts = [taken, skipped + 1, run + 1]
