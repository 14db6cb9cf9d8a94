"""Delayed updates: each update's gradient all-reduce overlaps the steps that follow it.

``Learner(..., distributed=True)`` waits at every update for a blocking all-reduce of every
gradient (:func:`ostl.distributed.all_reduce_grads`); with ``update_every=1`` that is one wait
per time step, and the processes compute nothing meanwhile. With ``delayed_updates=True``
(:class:`DelayedGradients`) an update instead

1. starts summing its own window's gradients (the steps since the previous update) over the
   ranks, asynchronously, in flat buckets of at most :data:`BUCKET_BYTES` each;
2. waits for the sum that the previous update started (finished long ago, as a rule), steps
   the optimizer on that averaged gradient and returns: the new sum travels in the
   background while the next window's steps compute.

This changes the algorithm: every gradient is applied one update late. Number the updates of
a sequence u = 0, 1, 2, ... and call W_u the weights the steps of window u run with and g_u
the (averaged) gradient of that window, computed along W_u. The default updates
``W_{u+1} = opt(W_u, g_u)``; delayed updates take ``W_{u+1} = opt(W_u, g_{u-1})``: the steps
of window u run with weights that lack the update of window u-1, and update 0 steps nothing.
:meth:`ostl.Learner.end_sequence` applies the gradient still in flight, so after it the
weights hold every gradient of the sequence: as many optimizer steps as without the delay,
each one update later. The non-finite guard checks a gradient when it is applied, at the
update after the one that produced it.

The same arithmetic runs in a single process (``distributed=False``): the gradient of the
previous window is applied, with nothing to wait for. N processes with delayed updates follow
that single-process trajectory with the whole batch, up to floating-point summation order.

The gradients and the count of samples of one window travel as in
:func:`ostl.distributed.all_reduce_grads`: each rank sends ``local batch · gradient`` (0 if it
saw no target since the previous update), and the sum is divided by the total batch. An
update with no step since the previous one (the update of :meth:`ostl.Learner.end_sequence`
after an update at the last step) starts no collective; with ``same_target_steps`` neither does
a window without a target. Every rank must call ``update`` on the same schedule, as for the
default.

What it buys: the wait for the other ranks and the collective's latency are hidden behind
the next window's steps. What it does not: the collective's own CPU work (gloo copies and
sums the buckets on threads of its own) still competes with the steps for the cores, so on a
machine with no core to spare the gain is smaller; ``update_every=k`` cuts that work k-fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor

from .distributed import _collective
from .errors import CheckpointError, OptionError

__all__ = ["DelayedGradients", "BUCKET_BYTES", "check_delayed", "check_saved_delay"]

#: Largest flat all-reduce bucket in bytes: the gradients of consecutive parameters go into
#: one bucket until it would exceed this (a single parameter larger than this gets its own).
#: Read when a learner is built.
BUCKET_BYTES = 4 << 20


def check_delayed(update_every: int | None, unlocked: bool) -> None:
    """The schedules that delayed updates apply to; otherwise an :class:`OptionError`."""
    if update_every is None:
        raise OptionError(
            "delayed_updates=True delays each update's gradient to the next update: it needs "
            "update_every=k (an int), got None (its one update, at end_sequence, applies "
            "everything)"
        )
    if unlocked:
        raise OptionError(
            "delayed_updates=True and unlocked=True: choose one (unlocked updates are applied "
            "layer by layer within the step, delayed ones at the next update)"
        )


def _all_gather(out: Tensor, x: Tensor, async_op: bool) -> Any:
    """Every rank's ``x`` into ``out``, end to end (``all_gather_single`` in newer torch)."""
    fn = getattr(tdist, "all_gather_single", None) or tdist.all_gather_into_tensor
    return fn(out, x, async_op=async_op)


def buckets(sizes: list[int], itemsize: int, limit: int) -> list[slice]:
    """Consecutive runs of ``sizes`` (numbers of elements) of at most ``limit`` bytes each."""
    out, start, nbytes = [], 0, 0
    for i, n in enumerate(sizes):
        if i > start and nbytes + n * itemsize > limit:
            out.append(slice(start, i))
            start, nbytes = i, 0
        nbytes += n * itemsize
    out.append(slice(start, len(sizes)))
    return out


@dataclass
class _Buckets:
    """One set of flat buckets: ``flat`` (a slot for the weight at the end of the last),
    ``views`` of them shaped like the parameters, and (all-gather) ``gathered``, every rank's
    copy of each bucket, end to end in rank order."""

    flat: list[Tensor]
    views: dict[str, Tensor]
    gathered: list[Tensor] | None


class _Flight:
    """One window's gradients: in the collective, buckets of ``weight · gradient`` (the weight,
    the local batch or 0, in the slot at the end) and the collectives' handles; once finished,
    the sums by name (views of the buckets; None: no rank had work) and their divisor."""

    def __init__(self, buckets: _Buckets | None, works: list[Any]) -> None:
        self.buckets, self.works = buckets, works
        self.done = False
        self.total = 1.0
        self.sums: dict[str, Tensor] | None = None

    @classmethod
    def finished(cls, grads: dict[str, Tensor] | None) -> _Flight:
        """A flight whose averaged gradients are ``grads`` (None: no work), e.g. loaded."""
        flight = cls(None, [])
        flight.done, flight.sums = True, grads
        return flight

    @_collective
    def finish(self) -> dict[str, Tensor] | None:
        """Wait for the collective (a failure raises :class:`CollectiveError`); the sums."""
        if not self.done:
            assert self.buckets is not None
            for w in self.works:
                w.wait()
            b = self.buckets
            for flat, every in zip(b.flat, b.gathered or []):  # the ranks' sum, in rank order
                torch.sum(every.view(-1, flat.numel()), dim=0, out=flat)
            self.works, self.done = [], True
            self.total = float(b.flat[-1][-1])  # the window's global batch (0: no work)
            self.sums = b.views if self.total != 0 else None
        return self.sums


class DelayedGradients:
    """The averaged gradient of the previous update, and this update's on its way.

    Two sets of flat buckets are allocated once and take turns: one in the collective, the
    other read by the update. The sum over ranks is an asynchronous all-reduce of each bucket,
    or, with ``gather``, an asynchronous all-gather of each bucket and a sum in rank order
    (the same on every rank): for two processes the same bytes travel as in gloo's ring
    all-reduce, in fewer messages (measured on a 2-core machine: about half its CPU and wall
    time for the 64-256-256-10 network's 84,490 gradients), while with more processes an
    all-gather moves more bytes than an all-reduce.

    Args:
        params: the learner's parameters by name (their shapes, dtypes and order).
        distributed: sum over the default process group (else: one process).
        same_target_steps: a window without a target on this rank has none on any rank, so
            it starts no collective (see :class:`ostl.Learner`).
        bucket_bytes: the largest flat bucket (default: :data:`BUCKET_BYTES`).
        gather: all-gather instead of all-reduce; None (default): with gloo and 2 processes.
    """

    def __init__(
        self,
        params: Mapping[str, Tensor],
        distributed: bool,
        same_target_steps: bool = False,
        bucket_bytes: int | None = None,
        gather: bool | None = None,
    ) -> None:
        bucket_bytes = BUCKET_BYTES if bucket_bytes is None else bucket_bytes
        if not isinstance(bucket_bytes, int) or isinstance(bucket_bytes, bool) or bucket_bytes <= 0:
            raise OptionError(f"bucket_bytes must be a positive int, got {bucket_bytes!r}")
        self.names = list(params)
        self.shapes = {n: p.shape for n, p in params.items()}
        dtypes = {p.dtype for p in params.values()}
        self.dtype = dtypes.pop() if len(dtypes) == 1 else torch.float64
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        sizes = [p.numel() for p in params.values()]
        self.buckets = [self.names[s] for s in buckets(sizes, itemsize, bucket_bytes)]
        self.distributed, self.same_target_steps = bool(distributed), bool(same_target_steps)
        self.world = tdist.get_world_size() if self.distributed else 1
        if gather is None:
            gather = self.distributed and self.world == 2 and tdist.get_backend() == "gloo"
        self.gather = bool(gather) and self.distributed
        self.flight: _Flight | None = None
        self.last_step = 0  # the learner's step count at the previous update
        self._free: list[_Buckets] = []  # bucket sets not in use

    def exchange(self, runner: Any, pending: bool, step: int) -> bool:
        """An update: start summing the runner's gradients of the window since the previous
        update over the ranks, and put the previous window's averaged gradients in their place.

        Args:
            runner: the learner's :class:`ostl.rules.base.Runner` (``grads``, ``batch_size``).
            pending: this rank saw a target since the previous update.
            step: the learner's step count (the same on every rank).

        Returns:
            True when the previous window had work on any rank: then the runner holds its
            averaged gradients, and the optimizer steps on them.
        """
        new = None
        if step != self.last_step and (pending or not self.same_target_steps):
            new = self._start(runner.grads, runner.batch_size if pending else 0)
        self.last_step = step
        prev, self.flight = self.flight, new
        if prev is None:
            runner.zero_grads()
            return False
        sums = prev.finish()
        if sums is None:
            runner.zero_grads()
        else:
            for n, s in sums.items():  # over this window's gradients, now in the buckets
                g = runner.grad(n)
                if s.dtype == g.dtype:
                    torch.div(s, prev.total, out=g)
                else:  # mixed dtypes travel in float64
                    g.copy_(s / prev.total)
        if prev.buckets is not None:  # free for the next window
            self._free.append(prev.buckets)
        return sums is not None

    @property
    def in_flight(self) -> bool:
        """A window's gradient waits to be applied."""
        return self.flight is not None

    @_collective
    def _start(self, grads: Mapping[str, Tensor], batch: int | None) -> _Flight:
        weight = float(batch or 0) if self.distributed else float(batch is not None and batch > 0)
        b = self._free.pop() if self._free else self._allocate(grads[self.names[0]].device)
        for n, v in b.views.items():
            g = grads[n]
            if g.dtype == v.dtype:
                torch.mul(g, weight, out=v)
            else:
                v.copy_(g).mul_(weight)
        b.flat[-1][-1] = weight
        if not self.distributed:
            return _Flight(b, [])
        if b.gathered is not None:
            pairs = zip(b.gathered, b.flat)
            works = [_all_gather(out, x, async_op=True) for out, x in pairs]
        else:
            works = [tdist.all_reduce(x, op=tdist.ReduceOp.SUM, async_op=True) for x in b.flat]
        return _Flight(b, works)

    def _allocate(self, device: torch.device) -> _Buckets:
        """One set of buckets, on ``device``."""
        flat, views = [], {}
        for i, bucket in enumerate(self.buckets):
            n = sum(self.shapes[k].numel() for k in bucket) + (i == len(self.buckets) - 1)
            buf = torch.empty(n, dtype=self.dtype, device=device)
            offset = 0
            for k in bucket:
                views[k] = buf[offset : offset + self.shapes[k].numel()].view(self.shapes[k])
                offset += self.shapes[k].numel()
            flat.append(buf)
        gathered = None
        if self.gather:
            gathered = [torch.empty(self.world * x.numel(), dtype=x.dtype, device=device)
                        for x in flat]  # fmt: skip
        return _Buckets(flat, views, gathered)

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The gradient in flight, averaged (waits for its all-reduce; None: nothing in flight,
        ``{}``: a window without work), and the step count of the previous update."""
        grads = None
        if self.flight is not None:
            sums = self.flight.finish()
            total = self.flight.total
            grads = {} if sums is None else {n: s / total for n, s in sums.items()}
        return {"grads": grads, "last_step": self.last_step}

    def load_state_dict(self, state: Any) -> None:
        """Continue from :meth:`state_dict` (a gradient in flight is applied at the next
        update)."""
        if not isinstance(state, dict) or set(state) != {"grads", "last_step"}:
            raise CheckpointError("not the state of delayed updates (keys grads, last_step)")
        grads = state["grads"]
        if grads and set(grads) != set(self.names):
            raise CheckpointError(
                f"the saved gradient in flight is for parameters {sorted(grads)}, this learner "
                f"has {sorted(self.names)}"
            )
        self.last_step = int(state["last_step"])
        self.flight = None if grads is None else _Flight.finished(dict(grads) or None)


def check_saved_delay(state: Mapping[str, Any], delayed: bool) -> None:
    """A learner's saved state was made with ``delayed_updates=delayed``; else a clear error."""
    saved = "delayed" in state
    if saved != delayed:
        raise CheckpointError(
            f"the saved learner had delayed_updates={saved}, this one {delayed}: build the "
            "learner with the same options to continue"
        )
