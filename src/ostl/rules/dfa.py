"""Direct feedback alignment with eligibility traces: the example rule of ``docs/extending.md``.

A variant of OSTTP whose hidden layers receive a fixed random projection of the output *error*
instead of the target (DFA, Nøkland 2016, on OSTL's traces)::

    L_t^L = e_t = ∂E_t/∂ŷ_t                 output layer: its true error
    L_t^l = B_l e_t                          hidden layer l: the error through a fixed B_l

``B_l`` (n_l, n_out) are OSTTP's projections (:func:`ostl.rules.osttp.draw_projections`): with
the same seed, the target part of DFA's signal is the negative of OSTTP's (see the sign
convention in :mod:`ostl.rules.osttp`). Unlike OSTTP, any target and loss work (the error is
∂E_t/∂ŷ_t), but a hidden layer needs the output of the whole forward pass: DFA has no weight
transport, yet it is update-locked (``Learner(unlocked=True)`` refuses it).

Approximate w.r.t. BPTT except for the output layer. Memory and compute per step: OSTL's traces
plus one (n_l × n_out) matrix-vector product per hidden layer.

The whole rule is this file: a :class:`~ostl.rules.osttp.ProjectionRule` (its options), a
runner that subclasses :class:`~ostl.rules.ostl.OSTLRunner` and overrides ``_signals``, and one
registry line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor

from ..layer import Network
from ..traces import NeuronJacobians
from .base import LossFn
from .ostl import OSTLRunner, _fixed, _load_fixed
from .osttp import ProjectionRule, draw_projections

__all__ = ["DFA", "DFARunner"]


class DFA(ProjectionRule):
    """OSTL traces × a fixed random projection of the output error for every hidden layer.

    Args:
        recurrence: ``"diagonal"`` (default) or ``"exact"``: OSTL's trace of layers with H.
        scale: scale of B_l (uniform in ±scale, or normal with std scale); None: 1/√n_out.
        distribution: ``"uniform"`` or ``"normal"``.
        seed: seed of B_l.
        max_trace_bytes: memory limit of one exact trace.
    """

    name = "dfa"

    def bind(self, net: Network) -> DFARunner:
        return DFARunner(self, net)


class DFARunner(OSTLRunner):
    """DFA bound to a network: OSTL's runner with its own learning signals."""

    rule: DFA

    def __init__(self, rule: DFA, net: Network) -> None:
        super().__init__(rule, net)
        self.projections = draw_projections(net, rule.seed, rule.scale, rule.distribution)

    def _signals(
        self, L_out: Tensor, target: Any, inputs: list[Tensor], jacs: list[NeuronJacobians | None]
    ) -> list[Tensor]:
        return [L_out @ B.T for B in self.projections if B is not None] + [L_out]

    def _state_extra(self) -> dict[str, Any]:
        return {**super()._state_extra(), "projections": _fixed(self.projections)}

    def _load_extra(self, extra: dict[str, Any], loss_fn: LossFn | None) -> None:
        super()._load_extra(extra, loss_fn)
        self.projections = _load_fixed(self.projections, extra["projections"], "projections")

    def state_tensors(self) -> Iterator[Tensor]:
        yield from super().state_tensors()
        yield from (B for B in self.projections if B is not None)
