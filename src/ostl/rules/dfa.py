"""Direct feedback alignment with eligibility traces: the example rule of ``docs/extending.md``.

A variant of OSTTP whose hidden layers receive a fixed random projection of the output *error*
instead of the target (DFA, Nøkland 2016, on OSTL's traces)::

    L_t^L = e_t = ∂E_t/∂ŷ_t                 output layer: its true error
    L_t^l = B_l e_t                          hidden layer l: the error through a fixed B_l

``B_l`` (n_l, n_out) are OSTTP's projections (:func:`ostl.engine.signals.draw_projections`): with
the same seed, the target part of DFA's signal is the negative of OSTTP's (see the sign
convention in :mod:`ostl.engine.signals`). Unlike OSTTP, any target and loss work (the error is
∂E_t/∂ŷ_t), but a hidden layer needs the output of the whole forward pass: DFA has no weight
transport, yet it is update-locked (``Learner(unlocked=True)`` refuses it).

Approximate w.r.t. BPTT except for the output layer. Memory and compute per step: OSTL's traces
plus one (n_l × n_out) matrix-vector product per hidden layer.

The whole rule is this preset: OSTTP's options with the ``"error"`` signal, and one registry
line (:mod:`ostl.rules`).
"""

from __future__ import annotations

from .osttp import ProjectionRule

__all__ = ["DFA"]


class DFA(ProjectionRule):
    """OSTL traces × a fixed random projection of the output error for every hidden layer.

    Options: see :class:`~ostl.rules.osttp.ProjectionRule` (OSTTP's; only the signal differs).
    """

    name = "dfa"
    signal_kind = "error"
