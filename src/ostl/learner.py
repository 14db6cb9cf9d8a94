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
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .layer import Network
from .rules import LossFn, Rule, get_rule

__all__ = ["Learner"]


class Learner:
    """Drives a rule over a stream and updates the weights with a ``torch.optim`` optimizer.

    Args:
        net: the network.
        rule: a rule object or its name.
        loss_fn: ``loss_fn(y_t, target_t)`` -> scalar loss of one step (mean over the batch).
        optimizer: any ``torch.optim.Optimizer`` over the network's parameters.
        update_every: 1 (every step), k (every k steps) or None (at ``end_sequence``).
    """

    def __init__(
        self,
        net: Network,
        rule: Rule | str,
        *,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        update_every: int | None = 1,
    ) -> None:
        if update_every is not None and (
            not isinstance(update_every, int) or isinstance(update_every, bool) or update_every <= 0
        ):
            raise ValueError(f"update_every must be a positive int or None, got {update_every!r}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable: loss_fn(y_t, target_t) -> scalar")
        self.net = net
        self.rule = get_rule(rule)
        self.runner = self.rule.bind(net)
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.update_every = update_every
        self.updates = 0  # optimizer steps taken since construction
        self._since_update = 0
        self._pending = False  # a target was seen since the last update

    def reset(self, batch_size: int) -> None:
        """Start new sequences: resting state and zero traces (weights are kept)."""
        self.runner.reset(batch_size)
        self.runner.zero_grads()
        self._since_update = 0
        self._pending = False

    def step(self, x_t: Tensor, target_t: Any = None) -> Tensor:
        """One time step; updates the weights when the schedule says so. Returns y_t."""
        y = self.runner.step(x_t, target_t, self.loss_fn)
        self._since_update += 1
        self._pending = self._pending or target_t is not None
        if self.update_every is not None and self._since_update >= self.update_every:
            self.update()
        return y

    def end_sequence(self) -> None:
        """Apply what is still pending (always needed for BPTT with update_every=None)."""
        self.update()

    def update(self) -> None:
        """Finish pending work, write the gradients into ``.grad`` and step the optimizer."""
        self.runner.flush()
        self._since_update = 0
        if not self._pending:
            return
        for name, p in self.runner.params.items():
            p.grad = self.runner.grads[name].clone()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.runner.zero_grads()
        self._pending = False
        self.updates += 1

    @property
    def mean_loss(self) -> float:
        """Mean per-step loss since the last reset (nan if no target was seen)."""
        r = self.runner
        return r.loss_sum / r.n_losses if r.n_losses else float("nan")

    def state_bytes(self) -> int:
        """Bytes of every tensor the rule holds (state, traces, gradients)."""
        return self.runner.state_bytes()
