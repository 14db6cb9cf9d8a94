"""Backpropagation through time (BPTT) and truncated BPTT: the reference.

Computes dE/dθ for E = Σ_t E_t by plain autograd over the unrolled network.

- Exact by definition: it *is* the oracle the other rules are tested against.
- ``truncation=k`` (TBPTT): the network state is detached every k steps and the loss of each
  chunk is back-propagated when the chunk ends; gradients then ignore paths longer than the
  chunk. The :class:`~ostl.Learner` also cuts the graph at every optimizer update.
- ``detach_above=l``: every layer above index l receives its previous state detached. This is
  the network in which deep OSTL is exact for layer l (see ``DESIGN.md`` §2); it exists for
  tests and diagnostics.

Memory: the autograd graph of every step since the last cut, O(T·(activations)); compute per
step about twice the forward. It stores all activations, unrolls the sequence and halts to
propagate backwards: the three problems the online rules avoid.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ..errors import OptionError, UnsupportedError
from ..layer import Network
from .base import LossFn, Rule, Runner, call_loss, pack_state, unpack_state

__all__ = ["BPTT"]


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

    def bind(self, net: Network) -> BPTTRunner:
        return BPTTRunner(self, net)


class BPTTRunner(Runner):
    rule: BPTT

    def __init__(self, rule: BPTT, net: Network) -> None:
        super().__init__(rule, net)
        if rule.detach_above is not None and not 0 <= rule.detach_above < len(net.layers):
            raise UnsupportedError(
                f"detach_above={rule.detach_above}: the network has layers 0..{len(net.layers) - 1}"
            )
        self._names = list(self.params)
        self._state: tuple[Any, ...] = ()
        self._loss: Tensor | None = None
        self._since_cut = 0
        # The open window (since the last cut): its start state and its inputs and targets.
        # The graph holds them anyway; a checkpoint stores them and replays the window on load.
        self._start: tuple[Any, ...] = ()
        self._window: list[tuple[Tensor, Any]] = []

    def _reset(self, batch_size: int) -> None:
        self._state = self.net.init_state(batch_size)
        self._loss = None
        self._since_cut = 0
        self._start, self._window = self._state, []

    def _step(self, x_t: Tensor, target_t: Any, loss_fn: LossFn) -> Tensor:
        y = self._advance(x_t, target_t, loss_fn, record=True)
        if self.rule.truncation is not None and self._since_cut >= self.rule.truncation:
            self.flush()
        return y

    def _advance(self, x_t: Tensor, target_t: Any, loss_fn: LossFn, record: bool) -> Tensor:
        """Forward one step on the graph and add its loss to the open window."""
        with torch.enable_grad():
            y, self._state = self._forward(x_t, self._state)
            if target_t is not None:
                e = call_loss(loss_fn, y, target_t)
                if record:
                    self._record_loss(e.detach())
                self._loss = e if self._loss is None else self._loss + e
        self._window.append((x_t, target_t))
        self._since_cut += 1
        return y.detach()

    def _forward(self, x: Tensor, state: tuple[Any, ...]) -> tuple[Tensor, tuple[Any, ...]]:
        cut = self.rule.detach_above
        new = []
        for i, (layer, s) in enumerate(zip(self.net.layers, state)):
            if cut is not None and i > cut:
                s = type(s)(*(t.detach() for t in s))
            x, s = layer(x, s)
            new.append(s)
        return x, tuple(new)

    def flush(self) -> None:
        """Back-propagate the loss since the last cut, then detach the state (cut the graph)."""
        if self._loss is not None and self._loss.requires_grad:
            gs = torch.autograd.grad(
                self._loss, [self.params[n] for n in self._names], allow_unused=True
            )
            for n, g in zip(self._names, gs):
                if g is not None:
                    self.grads[n] += g
        self._loss = None
        self._since_cut = 0
        self._state = tuple(type(s)(*(t.detach() for t in s)) for s in self._state)
        self._start, self._window = self._state, []

    def _state_extra(self) -> dict[str, Any]:
        return {
            "start": pack_state(self._start),
            "window_x": [x.detach().clone() for x, _ in self._window],
            "window_targets": [None if t is None else t.detach().clone() for _, t in self._window],
        }

    def _load_extra(self, extra: dict[str, Any], loss_fn: LossFn | None) -> None:
        """Rebuild the open window's graph by replaying it from its start state."""
        self._state = self._start = unpack_state(self._state, extra["start"])
        window = list(zip(extra["window_x"], extra["window_targets"]))
        if window and loss_fn is None:
            raise UnsupportedError("BPTT replays its open window on load: pass loss_fn")
        dev = self.net.device
        for x, t in window:
            assert loss_fn is not None
            self._advance(x.to(dev), None if t is None else t.to(dev), loss_fn, record=False)

    def state_tensors(self) -> Iterator[Tensor]:
        yield from super().state_tensors()
        for s in self._state:
            yield from s
