"""Backpropagation through time (BPTT) and truncated BPTT: the reference.

Computes dE/dθ for E = Σ_t E_t by plain autograd over the unrolled network.

- Exact by definition: it *is* the oracle the other rules are tested against.
- ``truncation=k`` (TBPTT): the network state is detached every k steps and the loss of each
  chunk is back-propagated when the chunk ends; gradients then ignore paths longer than the
  chunk. The :class:`~ostl.Learner` also cuts the graph at every optimizer update.
- ``detach_above=l``: every layer above index l receives its previous state detached. This is
  the network in which deep OSTL is exact for layer l (see ``docs/theory.md``); it exists for
  tests and diagnostics.

Memory: the autograd graph of every step since the last cut, O(T·(activations)); compute per
step about twice the forward. It stores all activations, unrolls the sequence and halts to
propagate backwards: the three problems the online rules avoid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..engine.carry import Stats, advance_stats, init_stats
from ..errors import OptionError, UnsupportedError
from ..layer import Network
from ..losses import LossFn, call_loss
from .base import Rule

__all__ = ["BPTT", "BPTTCarry", "BPTTEngine"]

Grads = dict[str, Tensor]


class BPTT(Rule):
    """Backpropagation through time; ``truncation=k`` gives truncated BPTT.

    The reference (exact by definition). Memory grows with the steps since the last cut (every
    activation is kept for the backward pass); compute about twice the forward per step.
    """

    name = "bptt"

    def __init__(self, truncation: int | None = None, detach_above: int | None = None) -> None:
        if truncation is not None and (not isinstance(truncation, int) or truncation <= 0):
            raise OptionError(f"truncation must be a positive int or None, got {truncation!r}")
        self.truncation = truncation
        self.detach_above = detach_above

    def engine(self, net: Network) -> BPTTEngine:
        return BPTTEngine(self, net)


class BPTTCarry(NamedTuple):
    """BPTT's carry: the open window since the last cut, and its autograd graph."""

    state: tuple[Any, ...]  # the network state, on the graph since the last cut
    loss: Tensor | None  # Σ E_t since the last cut, on the graph (None: no target yet)
    start: tuple[Any, ...]  # the state at the last cut (detached)
    window: list[tuple[Tensor, Any]]  # (x_t, target_t) since the last cut: replayed on load
    stats: Stats


class BPTTEngine:
    """BPTT bound to a network: an autograd unroll, back-propagated at every cut."""

    #: BPTT checks each input as it comes: its update comes only at the end of the window.
    eager_checks = True

    def __init__(self, rule: BPTT, net: Network) -> None:
        if rule.detach_above is not None and not 0 <= rule.detach_above < len(net.layers):
            raise UnsupportedError(
                f"detach_above={rule.detach_above}: the network has layers 0..{len(net.layers) - 1}"
            )
        self.rule, self.net = rule, net
        self.params = {n: p for n, p in net.named_parameters() if p.requires_grad}
        self.consts: dict[str, list[Tensor | None]] = {}

    def init(self, batch_size: int) -> BPTTCarry:
        state = self.net.init_state(batch_size)
        return BPTTCarry(state, None, state, [], init_stats(self.net.dtype, self.net.device))

    def step(
        self,
        params: Mapping[str, Tensor] | None,
        carry: BPTTCarry,
        x: Tensor,
        target: Any,
        loss_fn: LossFn,
    ) -> tuple[Tensor, Grads | None, BPTTCarry]:
        """Forward one step on the graph; back-propagate when a truncation window ends."""
        y, carry = self._advance(carry, x, target, loss_fn)
        k = self.rule.truncation
        if k is not None and len(carry.window) >= k:
            grads, carry = self.finish(params, carry)
            return y, grads, carry
        return y, None, carry

    def _advance(
        self, carry: BPTTCarry, x: Tensor, target: Any, loss_fn: LossFn
    ) -> tuple[Tensor, BPTTCarry]:
        cut = self.rule.detach_above
        with torch.enable_grad():
            h, new = x, []
            for i, (layer, s) in enumerate(zip(self.net.layers, carry.state)):
                if cut is not None and i > cut:
                    s = type(s)(*(t.detach() for t in s))
                h, s = layer(h, s)
                new.append(s)
            loss = carry.loss
            e = None
            if target is not None:
                e = call_loss(loss_fn, h, target)
                loss = e if loss is None else loss + e
        carry.window.append((x, target))  # the carry is donated: the window grows in place
        stats = advance_stats(carry.stats, x, target, None, None if e is None else e.detach())
        return h.detach(), BPTTCarry(tuple(new), loss, carry.start, carry.window, stats)

    def finish(
        self, params: Mapping[str, Tensor] | None, carry: BPTTCarry
    ) -> tuple[Grads | None, BPTTCarry]:
        """Back-propagate the loss since the last cut, then detach the state (cut the graph)."""
        grads = None
        if carry.loss is not None and carry.loss.requires_grad:
            names = list(self.params)
            gs = torch.autograd.grad(carry.loss, [self.params[n] for n in names], allow_unused=True)
            grads = {n: g for n, g in zip(names, gs) if g is not None}
        state = tuple(type(s)(*(t.detach() for t in s)) for s in carry.state)
        return grads, BPTTCarry(state, None, state, [], carry.stats)

    def restore(self, carry: BPTTCarry, loss_fn: LossFn | None) -> BPTTCarry:
        """Rebuild the open window's graph by replaying it from its start state."""
        if carry.window and loss_fn is None:
            raise UnsupportedError("BPTT replays its open window on load: pass loss_fn")
        dev = self.net.device
        stats = carry.stats
        replay = BPTTCarry(carry.start, None, carry.start, [], stats)
        for x, t in carry.window:
            assert loss_fn is not None
            _, replay = self._advance(replay, x.to(dev), None if t is None else t.to(dev), loss_fn)
        return replay._replace(stats=stats)  # the counters as saved, not counted twice
