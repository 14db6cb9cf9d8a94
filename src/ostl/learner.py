"""The online learner: forward, traces, learning signal and optimizer updates on a schedule.

::

    learner = Learner(net, "ostl", loss_fn=loss_fn, optimizer=torch.optim.Adam(net.parameters()),
                      update_every=1)
    learner.reset(batch_size)
    for x_t, target_t in stream:
        y_t = learner.step(x_t, target_t)
    learner.end_sequence()

``update_every=1`` updates the weights after every step (true online learning), ``k`` every k
steps, ``None`` once per sequence at ``end_sequence()``. Before each update the rule's pending
work is finished (BPTT back-propagates and cuts its graph: with ``update_every=k`` BPTT becomes
truncated BPTT), the accumulated gradients are written into ``.grad`` and the optimizer steps.
An update window without any target does not step the optimizer.

``unlocked=True`` (OSTTP only, with ``update_every=1``) is the schedule without update locking:
each layer's update at step t is applied right after that layer's own forward step, before the
layers above have run (``ostl.rules.osttp``). Each parameter still gets one optimizer step per
step with a target, so the weights follow the same trajectory as with ``unlocked=False``.

Non-finite values (``nonfinite``): ``"raise"`` (default) raises
:class:`~ostl.errors.NonFiniteError` naming the tensor and the step as soon as an input, a
target, a learning signal or a gradient holds NaN or Inf, or an optimizer step makes a weight
non-finite (a learning rate far too large); ``"skip"`` lets them through to the gradient,
skips that update (counted in ``skipped``) and, if the network state or traces were poisoned,
restarts the stream state. Either way the update is undone (:mod:`ostl.guard`: the weights
and the optimizer state are as before it), and ``max_skips`` skipped updates in a row raise:
a learner whose every update is non-finite is not learning. Unlocked, a step's validity is
decided at its first layer update, from x_t, the target and that layer's gradient: a bad input
or target updates no layer and counts one skip (a gradient that turns non-finite higher up
spares that layer and those above; the layers below were updated). The guard costs a copy of
the stepped parameters and their optimizer state (Adam: 3x the parameters' bytes): 3 to 7% of
an online step on a CPU.

Host synchronisations (a value read back from an accelerator stalls its queue): a step that
does not update reads nothing back (BPTT and RTRL with ``nonfinite="raise"`` excepted: they
check each x_t and target as it comes). An update reads back one verdict, whether its gradients
and new weights are finite, as ``"raise"`` raises at the very update that met a NaN. With
``"skip"`` on an accelerator the verdict stays on the device (``guard_on_device``,
:mod:`ostl.guard`): the update is kept or undone there, a poisoned stream restarted there, and
the counts are read back when read (``updates``, ``skipped``, ``state_dict()``, ...) or once
``max_skips`` skips in a row have become possible (one read per ``max_skips`` updates at most).
The optimizer's first step, an optimizer with state on the host (Adam's step counts unless
``capturable=True`` or ``fused=True``) and unlocked layer updates still read their verdict.

``distributed=True`` is data-parallel learning on ``torch.distributed`` (:mod:`ostl.distributed`):
every rank steps on its own slice of the batch, and the gradients are averaged over the ranks,
weighted by their local batch sizes, before each optimizer update (one all-reduce per update, or
per layer update when unlocked). Every rank must call ``update`` on the same schedule; it steps
its optimizer when any rank saw a target, so all ranks keep the same weights. The non-finite
guard checks the averaged gradients and the weights (the same on every rank), so every rank
takes the same decision. Two options trade exactness for less waiting on the all-reduce (each
still gives the same trajectory with N processes as with one process and the whole batch):
``update_every=k`` all-reduces once per k steps (each rank sums its gradients over the k steps
first: fewer, larger updates); ``delayed_updates=True`` starts each update's all-reduce in the
background and applies its result at the next update, so the all-reduce overlaps the next
window's steps and every gradient is applied one update late (:mod:`ostl.delayed`).

Checkpoints: ``learner.state_dict()`` holds the weights, the optimizer state, the rule's runner
(network state, traces, accumulated gradients, random matrices) and the schedule position;
``learner.load_state_dict(sd)`` on a learner built the same way continues bit for bit. A state
holding NaN or Inf is refused (:class:`~ostl.errors.CheckpointError` naming the tensors).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from . import distributed as dist
from .delayed import DelayedGradients, check_delayed, check_saved_delay
from .errors import CheckpointError, NonFiniteError, OSTLError, all_finite, nonfinite_names
from .guard import Bad, GuardedStep, Tally, Verdict
from .layer import Network
from .learner_checks import check_optimizer, check_options, check_state, check_unlockable
from .numerics import flush_denormals
from .rules import LossFn, Rule, get_rule

# About 450 lines on purpose: the schedule (locked and unlocked), the non-finite policy with its
# two verdict paths and the checkpoints act on one object's state; the guard, its counts, the
# argument checks and the delayed updates already live in ostl.guard, ostl.learner_checks and
# ostl.delayed.
__all__ = ["Learner"]


class Learner:
    """Drives a rule over a stream and updates the weights with a ``torch.optim`` optimizer.

    Args:
        net: the network.
        rule: a rule object or its name.
        loss_fn: ``loss_fn(y_t, target_t)`` -> scalar loss of one step (mean over the batch).
        optimizer: any ``torch.optim.Optimizer`` over the network's parameters (it must hold
            every trainable parameter of ``net``).
        update_every: 1 (every step), k (every k steps) or None (at ``end_sequence``).
        unlocked: apply each layer's update as soon as its own step is done (OSTTP with
            ``update_every=1`` only; see the module docstring).
        nonfinite: ``"raise"`` or ``"skip"`` (see the module docstring).
        max_skips: with ``"skip"``, raise after this many consecutive skipped updates.
        distributed: average the gradients over the ranks of the initialised default
            ``torch.distributed`` process group before each update; rank 0's initial weights
            are broadcast to every rank at construction.
        same_target_steps: (distributed) every rank has its targets at the same steps, as when
            the ranks take slices of the same global batches (``ostl.run.train``): an update window
            without any target then skips the all-reduce instead of asking the other ranks.
        delayed_updates: apply each update's gradient at the next update instead, while its
            all-reduce runs in the background during the steps in between (``update_every``
            an int, not ``unlocked``). Changes the algorithm: the steps of each update window
            run with weights that lack the previous window's update (gradients one update
            old); ``end_sequence`` applies the last one. Without ``distributed`` it is the
            single-process reference of that trajectory. See :mod:`ostl.delayed`.
        compile: run the rule's whole step under ``torch.compile`` (trace rules only, not with
            ``unlocked``); the first steps compile it (seconds on a CPU). See BENCHMARKS.md
            for where it pays off.

    Attributes:
        guard_on_device: with ``"skip"``, keep each update's verdict on the device (module
            docstring): None (default) off the CPU, or True / False. Weights, counts and errors
            are the same either way.
    """

    def __init__(
        self,
        net: Network,
        rule: Rule | str,
        *,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        update_every: int | None = 1,
        unlocked: bool = False,
        nonfinite: str = "raise",
        max_skips: int = 100,
        distributed: bool = False,
        same_target_steps: bool = False,
        compile: bool = False,
        delayed_updates: bool = False,
    ) -> None:
        check_options(loss_fn, optimizer, update_every, nonfinite, unlocked, compile, max_skips)
        self.net = net
        self.rule = get_rule(rule)
        self.runner = self.rule.bind(net)
        check_optimizer(optimizer, self.runner.params)
        self.nonfinite = self.runner.nonfinite = nonfinite
        self.max_skips = max_skips
        self.steps = 0  # time steps since construction
        self._tally = Tally()  # updates taken, skipped, skipped in a row
        self.guard_on_device: bool | None = None
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.guard = GuardedStep(optimizer)
        self.update_every = update_every
        self._since_update = 0
        self._pending = False  # a target was seen since the last update
        self.unlocked = bool(unlocked)
        self._inputs: tuple[Tensor, Any] | None = None  # (unlocked) the step's x_t, target_t
        self._step_bad: bool | None = None  # (unlocked) None until the step's first update
        self._last_bad: Bad | None = None  # what the last skipped update held
        if self.unlocked:
            check_unlockable(self.runner).on_layer_update = self._update_layer
        if compile:
            self.runner.compile()
        self.distributed = bool(distributed)
        self.same_target_steps = bool(same_target_steps)
        if self.distributed:
            if not dist.active():
                raise OSTLError(
                    "distributed=True needs an initialised torch.distributed process group: "
                    "launch with torchrun and call ostl.distributed.init() first"
                )
            dist.broadcast_parameters(self.runner.params.values())
        self._delayed: DelayedGradients | None = None
        if delayed_updates:
            check_delayed(update_every, self.unlocked)
            self._delayed = DelayedGradients(
                self.runner.params, self.distributed, self.same_target_steps
            )

    @property
    def updates(self) -> int:
        """Optimizer steps taken since construction."""
        return self._tally.read()[0]

    @property
    def skipped(self) -> int:
        """Updates skipped for non-finite values (``nonfinite="skip"``)."""
        return self._tally.read()[1]

    @property
    def skips_in_a_row(self) -> int:
        """Consecutive skipped updates, up to the last one."""
        return self._tally.read()[2]

    def reset(self, batch_size: int) -> None:
        """Start new sequences: resting state and zero traces (weights are kept)."""
        self.runner.reset(batch_size)
        self.runner.zero_grads()
        self._since_update = 0
        self._pending = False

    def step(self, x_t: Tensor, target_t: Any = None) -> Tensor:
        """One time step; updates the weights when the schedule says so. Returns y_t.

        Runs with denormal floats flushed to zero (the optimizer's decaying moments too; see
        :mod:`ostl.numerics`), the caller's mode restored afterwards.
        """
        with flush_denormals():
            if self.unlocked:
                return self._step_unlocked(x_t, target_t)
            return self._step(x_t, target_t)

    def _step(self, x_t: Tensor, target_t: Any) -> Tensor:
        y = self.runner.step(x_t, target_t, self.loss_fn)
        self.steps += 1
        self._since_update += 1
        self._pending = self._pending or target_t is not None
        if self.update_every is not None and self._since_update >= self.update_every:
            self.update()
        return y

    def _step_unlocked(self, x_t: Tensor, target_t: Any) -> Tensor:
        """Every layer's update is applied during the step (:meth:`_update_layer`)."""
        self._inputs, self._step_bad = (x_t, target_t), None
        try:
            y = self.runner.step(x_t, target_t, self.loss_fn)
        finally:
            self._inputs = None
        self.steps += 1
        if target_t is not None:
            if self._step_bad:  # one skip for the step, however many layers it spared
                self._skip()
            else:
                self._tally.took()
        return y

    def end_sequence(self) -> None:
        """Apply what is still pending (always needed for BPTT with update_every=None; with
        ``delayed_updates``, the gradient still in flight too)."""
        with flush_denormals():
            self.update()
            if self._delayed is not None:
                self.update()  # a window without steps: applies the gradient in flight

    def update(self) -> None:
        """Finish pending work, write the gradients into ``.grad`` and step the optimizer.

        Reads back the update's verdict (one host synchronisation), unless it stays on the
        device (``guard_on_device``; see the module docstring)."""
        self.runner.flush()
        self._since_update = 0
        self._all_reduce_grads()  # before the guard: every rank checks the same gradients
        if not self._pending:
            return
        self._pending = False
        bad = self._guarded_step(list(self.runner.params), on_device=self._verdict_on_device())
        self.optimizer.zero_grad(set_to_none=True)
        if isinstance(bad, Verdict):
            self._count_verdict(bad)
            return
        if bad is None:
            self._tally.took()
            return
        self._last_bad = bad
        self._reject(bad)
        self._skip()

    def _update_layer(self, i: int) -> None:
        """Write layer i's gradients into ``.grad`` and step the optimizer on them alone.

        ``torch.optim`` optimizers skip parameters whose ``.grad`` is None, so the other layers'
        parameters (and their optimizer state) are untouched. The step's first layer update
        also checks x_t and the target (through that layer's gradient, so that every rank sees
        a bad input of any rank); once the step is found bad no layer above is updated.
        """
        prefix = f"layers.{i}."
        names = [n for n in self.runner.params if n.startswith(prefix)]
        if not names:
            return
        if self._step_bad:
            self.runner.zero_grads(names)
            return
        first = self._step_bad is None
        if first:
            self._poison_if_bad_inputs(self.runner.grad(names[0]))
        self._all_reduce_grads(prefix)
        bad = self._guarded_step(names)  # decided on the host (see the module docstring)
        assert not isinstance(bad, Verdict)
        if bad is None:
            self._step_bad = False
            return
        self._step_bad, self._last_bad = True, bad
        if bad.error is not None or self.nonfinite == "raise":
            self._reject(bad, layer=None if first else i)
        # "skip": counted once for the whole step, after it (_step_unlocked)

    def _poison_if_bad_inputs(self, grad: Tensor) -> None:
        """Make ``grad`` NaN if the step's x_t or target holds NaN/Inf (on the device)."""
        assert self._inputs is not None
        x, target = self._inputs
        ok = torch.isfinite(x).all()
        if isinstance(target, Tensor) and target.is_floating_point():
            ok = ok & torch.isfinite(target).all()
        grad.add_(torch.where(ok, 0.0, float("nan")))

    def _guarded_step(self, names: list[str], on_device: bool = False) -> Bad | Verdict | None:
        """Step the optimizer on the runner's gradients of ``names`` (:mod:`ostl.guard`)."""
        r = self.runner
        params, grads = {n: r.params[n] for n in names}, {n: r.grad(n) for n in names}
        try:
            return self.guard.step(params, grads, on_device=on_device)
        finally:
            r.zero_grads(names)

    def _verdict_on_device(self) -> bool:
        """Keep this update's verdict on the device (``nonfinite="skip"``, locked schedule)."""
        if self.nonfinite != "skip" or self.unlocked or self.guard_on_device is False:
            return False
        on_host = next(iter(self.runner.params.values())).device.type == "cpu"
        return bool(self.guard_on_device) or not on_host

    def _count_verdict(self, verdict: Verdict) -> None:
        """What counting an update or :meth:`_skip` do, on the device; the counts are read
        back only once ``max_skips`` skips in a row have become possible."""
        self.runner.restart_where(~verdict.ok)
        self._tally.add(verdict.ok)
        possible = self._tally.most_in_a_row() >= self.max_skips  # known without a read
        if possible and self.skips_in_a_row >= self.max_skips:
            self._last_bad = verdict.bad()  # this update was the last of the skips
            self._tally.check(self.max_skips, self.steps, self._last_bad)

    def _skip(self) -> None:
        """Count a skipped update; raise if ``max_skips`` were skipped in a row."""
        self._tally.skipped_one()
        self._restart_if_poisoned()
        self._tally.check(self.max_skips, self.steps, self._last_bad)

    def _restart_if_poisoned(self) -> list[str]:
        """Restart the stream if the rule's state or traces hold NaN/Inf (weights are kept);
        otherwise forget the record of non-finite inputs. Returns the poisoned names."""
        r = self.runner
        named = [(n, t) for n, t in r.named_state() if not n.startswith("grads.")]
        poisoned = nonfinite_names(named)
        if poisoned:
            r.restart_stream()  # clean state and traces for the steps that follow
        else:
            r.clear_nonfinite()  # reported (or skipped): the record starts afresh
        return poisoned

    def _reject(self, bad: Bad, layer: int | None = None) -> None:
        """Raise :class:`NonFiniteError` for an undone update, under ``"raise"`` (and for an
        optimizer step that failed, under either policy). ``layer``: the unlocked layer whose
        update failed after the layers below it were updated in this step."""
        if bad.error is None and self.nonfinite != "raise":
            return
        cause = self._cause() if bad.grads else None
        poisoned = self._restart_if_poisoned()
        kept = "The weights were not updated"
        if layer is not None:
            kept = f"Layers {layer} and above were not updated at this step (those below were)"
        raise NonFiniteError(
            bad.message(
                f"at step {self.steps} (update {self.updates + 1})",
                cause=cause,
                poisoned=poisoned,
                kept=kept,
                lrs=[float(g["lr"]) for g in self.optimizer.param_groups if "lr" in g],
                dtype=self.net.dtype,
            )
        )

    def _cause(self) -> str | None:
        """The first non-finite input, target or output error on record (or, during an
        unlocked step, this step's x_t or target), as ``"<tensor> at step <t>"``."""
        r = self.runner
        cause = r.first_nonfinite()
        if cause is None and self._inputs is not None:
            for what, t in zip(("x_t", "target_t"), self._inputs):
                if isinstance(t, Tensor) and not all_finite([t]):
                    return f"{what} at step {r.steps} of the sequence"
        return cause

    def _all_reduce_grads(self, prefix: str = "") -> None:
        """Distributed: average the (``prefix``-named) gradients over the ranks, in place.

        Every rank calls it at every update, so no rank skips the collective; afterwards
        ``_pending`` is True on every rank if any rank saw a target.
        """
        if self._delayed is not None:  # start this window's, take the previous window's
            self._pending = self._delayed.exchange(self.runner, self._pending, self.steps)
            return
        if not self.distributed or (self.same_target_steps and not self._pending and not prefix):
            return
        r = self.runner
        grads = {n: r.grad(n) for n in r.params if n.startswith(prefix)}
        if prefix:  # an unlocked layer update: it happens only at steps with a target
            dist.all_reduce_grads(grads, r.batch_size, True)
        else:
            self._pending = dist.all_reduce_grads(grads, r.batch_size, self._pending)

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizer state, the runner's state and the schedule position (cloned)."""
        return {
            "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),  # a snapshot, not live
            "runner": self.runner.state_dict(),
            "update_every": self.update_every,
            "unlocked": self.unlocked,
            "steps": self.steps,
            "updates": self.updates,
            "skipped": self.skipped,
            "skips_in_a_row": self.skips_in_a_row,
            "since_update": self._since_update,
            "pending": self._pending,
            **({} if self._delayed is None else {"delayed": self._delayed.state_dict()}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a learner built the same way (net, rule, options).

        Raises:
            CheckpointError: not a learner's state, another set-up's, or holding NaN or Inf.
        """
        check_state(state, {"update_every": self.update_every, "unlocked": self.unlocked})
        check_saved_delay(state, self._delayed is not None)
        try:
            self.net.load_state_dict(state["net"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"the saved weights or optimizer do not fit: {e}") from None
        self.runner.load_state_dict(state["runner"], self.loss_fn)
        self.steps, self._tally = int(state["steps"]), Tally()
        in_a_row = int(state.get("skips_in_a_row", 0))  # absent from older ones
        self._tally.counts = [int(state["updates"]), int(state["skipped"]), in_a_row]
        self._since_update, self._pending = int(state["since_update"]), bool(state["pending"])
        if self._delayed is not None:
            self._delayed.load_state_dict(state["delayed"])

    @property
    def mean_loss(self) -> float:
        """Mean per-step loss since the last reset (nan if no target was seen); one host
        synchronisation."""
        total, n = self.runner.losses()
        return total / n if n else float("nan")

    def state_bytes(self) -> int:
        """Bytes of every tensor the rule holds (state, traces, gradients)."""
        return self.runner.state_bytes()
