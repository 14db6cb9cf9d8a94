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
target, a learning signal or a gradient holds NaN or Inf (the optimizer never steps on it);
``"skip"`` lets them through to the gradient, skips that update (counted in ``skipped``) and,
if the network state or traces were poisoned, restarts the stream state (weights are kept).

``distributed=True`` is data-parallel learning on ``torch.distributed`` (:mod:`ostl.distributed`):
every rank steps on its own slice of the batch, and the gradients are averaged over the ranks,
weighted by their local batch sizes, before each optimizer update (one all-reduce per update, or
per layer update when unlocked). Every rank must call ``update`` on the same schedule; it steps
its optimizer when any rank saw a target, so all ranks keep the same weights. The non-finite
guard checks the averaged gradients, so every rank takes the same decision.

Checkpoints: ``learner.state_dict()`` holds the weights, the optimizer state, the rule's runner
(network state, traces, accumulated gradients, random matrices) and the schedule position;
``learner.load_state_dict(sd)`` on a learner built the same way continues bit for bit.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from . import distributed as dist
from .errors import (
    CheckpointError,
    NonFiniteError,
    OptionError,
    OSTLError,
    UnsupportedError,
    all_finite,
)
from .layer import Network
from .numerics import flush_denormals
from .rules import LossFn, Rule, get_rule
from .rules.base import NONFINITE, Runner

__all__ = ["Learner"]


class Learner:
    """Drives a rule over a stream and updates the weights with a ``torch.optim`` optimizer.

    Args:
        net: the network.
        rule: a rule object or its name.
        loss_fn: ``loss_fn(y_t, target_t)`` -> scalar loss of one step (mean over the batch).
        optimizer: any ``torch.optim.Optimizer`` over the network's parameters.
        update_every: 1 (every step), k (every k steps) or None (at ``end_sequence``).
        unlocked: apply each layer's update as soon as its own step is done (OSTTP with
            ``update_every=1`` only; see the module docstring).
        nonfinite: ``"raise"`` or ``"skip"`` (see the module docstring).
        distributed: average the gradients over the ranks of the initialised default
            ``torch.distributed`` process group before each update; rank 0's initial weights
            are broadcast to every rank at construction.
        same_target_steps: (distributed) every rank has its targets at the same steps, as when
            the ranks take slices of the same global batches (``ostl.run.train``): an update window
            without any target then skips the all-reduce instead of asking the other ranks.
        compile: run the rule's whole step under ``torch.compile`` (trace rules only, not with
            ``unlocked``); the first steps compile it (seconds on a CPU). See BENCHMARKS.md
            for where it pays off.
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
        distributed: bool = False,
        same_target_steps: bool = False,
        compile: bool = False,
    ) -> None:
        _check_options(loss_fn, optimizer, update_every, nonfinite, unlocked, compile)
        self.net = net
        self.rule = get_rule(rule)
        self.runner = self.rule.bind(net)
        self.nonfinite = self.runner.nonfinite = nonfinite
        self.steps = 0  # time steps since construction
        self.skipped = 0  # updates skipped for non-finite gradients (nonfinite="skip")
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.update_every = update_every
        self.updates = 0  # optimizer steps taken since construction
        self._since_update = 0
        self._pending = False  # a target was seen since the last update
        self.unlocked = bool(unlocked)
        if self.unlocked:
            _check_unlockable(self.runner).on_layer_update = self._update_layer
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
            return self._step(x_t, target_t)

    def _step(self, x_t: Tensor, target_t: Any) -> Tensor:
        y = self.runner.step(x_t, target_t, self.loss_fn)
        self.steps += 1
        if self.unlocked:  # every layer's update was applied during the step
            if target_t is not None:
                self.updates += 1
            return y
        self._since_update += 1
        self._pending = self._pending or target_t is not None
        if self.update_every is not None and self._since_update >= self.update_every:
            self.update()
        return y

    def end_sequence(self) -> None:
        """Apply what is still pending (always needed for BPTT with update_every=None)."""
        with flush_denormals():
            self.update()

    def update(self) -> None:
        """Finish pending work, write the gradients into ``.grad`` and step the optimizer."""
        self.runner.flush()
        self._since_update = 0
        self._all_reduce_grads()  # before the guard: every rank checks the same gradients
        if not self._pending:
            return
        if not self._check_finite(list(self.runner.params)):
            self._pending = False
            return
        for name, p in self.runner.params.items():
            p.grad = self.runner.grad(name)  # forgotten right after the step, so not copied
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.runner.zero_grads()
        self._pending = False
        self.updates += 1

    def _update_layer(self, i: int) -> None:
        """Write layer i's gradients into ``.grad`` and step the optimizer on them alone.

        ``torch.optim`` optimizers skip parameters whose ``.grad`` is None, so the other layers'
        parameters (and their optimizer state) are untouched.
        """
        prefix = f"layers.{i}."
        params = {n: p for n, p in self.runner.params.items() if n.startswith(prefix)}
        if not params:
            return
        self._all_reduce_grads(prefix)
        if not self._check_finite(list(params)):
            return
        for name, p in params.items():
            p.grad = self.runner.grad(name)  # forgotten right after the step, so not copied
        self.optimizer.step()
        for p in params.values():
            p.grad = None
        self.runner.zero_grads(params)

    def _all_reduce_grads(self, prefix: str = "") -> None:
        """Distributed: average the (``prefix``-named) gradients over the ranks, in place.

        Every rank calls it at every update, so no rank skips the collective; afterwards
        ``_pending`` is True on every rank if any rank saw a target.
        """
        if not self.distributed or (self.same_target_steps and not self._pending and not prefix):
            return
        r = self.runner
        grads = {n: r.grad(n) for n in r.params if n.startswith(prefix)}
        if prefix:  # an unlocked layer update: it happens only at steps with a target
            dist.all_reduce_grads(grads, r.batch_size, True)
        else:
            self._pending = dist.all_reduce_grads(grads, r.batch_size, self._pending)

    def _check_finite(self, names: list[str]) -> bool:
        """True if the final gradients of ``names`` are finite; else raise or skip (policy).

        One host synchronisation when they are finite. Otherwise the stream is restarted if
        the rule's state or traces hold NaN/Inf (weights are kept; the record of non-finite
        inputs is cleared either way), and then: ``"raise"``
        raises naming the first non-finite input, target or output error and its step (or the
        poisoned gradients and state); ``"skip"`` zeroes those gradients and counts the skip.
        """
        r = self.runner
        grads = {n: r.grad(n) for n in names}
        if all_finite(grads.values()):
            return True
        bad = [n for n, g in grads.items() if not bool(torch.isfinite(g).all())]
        if not bad:
            return True
        cause = r.first_nonfinite()
        poisoned = [
            n
            for n, t in r.named_state()
            if not n.startswith("grads.") and t.is_floating_point() and not all_finite([t])
        ]
        r.zero_grads(names)
        if poisoned:
            r.restart_stream()  # clean state and traces for the steps that follow
        else:
            r.clear_nonfinite()  # reported (or skipped): the record starts afresh
        if self.nonfinite == "raise":
            where = f"at step {self.steps} (update {self.updates + 1})"
            if cause is not None:
                msg = f"{cause}: expected finite values, found NaN or Inf"
            else:
                state = f"; non-finite rule state: {', '.join(poisoned[:5])}" if poisoned else ""
                msg = f"non-finite gradient {where} of {', '.join(bad)}{state}"
            raise NonFiniteError(
                f"{msg}. The weights were not updated (the stream state was restarted). "
                "Learner(nonfinite='skip') skips such updates instead."
            )
        self.skipped += 1
        return False

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
            "since_update": self._since_update,
            "pending": self._pending,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a learner built the same way (net, rule, options).

        Raises:
            CheckpointError: the state is not a learner's, or belongs to another set-up.
        """
        if not isinstance(state, dict) or "runner" not in state or "net" not in state:
            raise CheckpointError("not a Learner state_dict (keys net, optimizer, runner, ...)")
        for key in ("update_every", "unlocked"):
            if state[key] != getattr(self, key):
                raise CheckpointError(
                    f"the saved learner had {key}={state[key]!r}, this one {getattr(self, key)!r}: "
                    "build the learner with the same options to continue"
                )
        try:
            self.net.load_state_dict(state["net"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"the saved weights or optimizer do not fit: {e}") from None
        self.runner.load_state_dict(state["runner"], self.loss_fn)
        self.steps, self.updates = int(state["steps"]), int(state["updates"])
        self.skipped = int(state["skipped"])
        self._since_update, self._pending = int(state["since_update"]), bool(state["pending"])

    @property
    def mean_loss(self) -> float:
        """Mean per-step loss since the last reset (nan if no target was seen)."""
        r = self.runner
        return r.loss_sum / r.n_losses if r.n_losses else float("nan")

    def state_bytes(self) -> int:
        """Bytes of every tensor the rule holds (state, traces, gradients)."""
        return self.runner.state_bytes()


def _check_unlockable(runner: Runner) -> Runner:
    """The runner, if its rule can run the update-unlocked schedule; else a clear error."""
    if getattr(runner.rule, "signal", None) != "target":
        raise UnsupportedError(
            f"{runner.rule!r} is update-locked: its learning signals need the whole forward pass "
            "at step t (and a backward sweep across layers, or through time); only OSTTP's hidden "
            "updates need nothing from the layers above. Use ostl.rules.OSTTP, or unlocked=False."
        )
    return runner


def _check_options(
    loss_fn: Any,
    optimizer: Any,
    update_every: int | None,
    nonfinite: str,
    unlocked: bool,
    compile: bool,
) -> None:
    """The Learner's options, each with an error that says what was expected."""
    if update_every is not None and (
        not isinstance(update_every, int) or isinstance(update_every, bool) or update_every <= 0
    ):
        raise OptionError(f"update_every must be a positive int or None, got {update_every!r}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(y_t, target_t) -> scalar")
    if nonfinite not in NONFINITE:
        raise OptionError(f"nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if unlocked and update_every != 1:
        raise OptionError(
            "unlocked=True applies each layer's update right after its own step: it "
            f"needs update_every=1, got {update_every!r}"
        )
    if unlocked and compile:
        raise OptionError(
            "compile=True compiles the whole step; unlocked=True applies updates in the "
            "middle of it: choose one"
        )
