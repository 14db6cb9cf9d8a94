"""Online spatio-temporal learning (OSTL; Bohnstingl et al., IEEE TNNLS 2023).

dE/dθ^l = Σ_t L_t^l · e_t^l: eligibility traces e^l carried forward in time inside each layer
(:mod:`ostl.traces`) times learning signals L^l computed by one sweep *across layers at the
current step*: ``L_t^L = ∂E_t/∂ŷ_t`` and ``L_t^l = L_t^{l+1} · ∂y_t^{l+1}/∂y_t^l`` with the upper
layers' previous states held fixed.

Options:
    recurrence: ``"diagonal"`` (default) keeps each neuron's own dynamics and drops the H term:
        O(N²) memory and compute per step, exact without H; ``"exact"`` keeps the H term:
        O(N³) memory and O(N⁴) compute per step (RTRL cost within a layer), exact with H.
        Layers without H use the diagonal trace either way (there it is exact).
    feedback: ``"weights"`` sweeps the signal down through the transposed forward weights
        (W^{l+1})ᵀ; ``"random"`` through fixed random matrices of the same shapes ("OSTL rnd",
        approximate; drawn once per bind from ``seed``, uniform in ±1/√fan_in like W).

When exact (float64, weights fixed over the sequence): one stateful layer plus memoryless
layers (Readouts) above it, with recurrence="exact" (or without H). In deeper networks the
gradient of θ^l equals BPTT's in the network where every layer above l receives its previous
state detached (``BPTT(detach_above=l)``): OSTL drops the paths through the upper layers' past.
"""

from __future__ import annotations

import torch

from ..errors import OptionError
from .trace import TraceRule

__all__ = ["OSTL"]


class OSTL(TraceRule):
    """OSTL: eligibility traces × learning signals from a sweep across layers at step t.

    Exact (equals BPTT) for one stateful layer plus memoryless layers above it, with
    ``recurrence="exact"`` or without H; deeper, it equals ``BPTT(detach_above=l)`` for layer l.
    Per sample and layer of N neurons (k state variables, G gates): memory N·k·G·(n_in + N)
    and O(N²) compute per step (diagonal), or N times that memory and O(N⁴) compute (exact).

    Args:
        recurrence: ``"diagonal"`` or ``"exact"`` (the trace of layers with H).
        feedback: ``"weights"`` (the transposed forward weights) or ``"random"`` (OSTL rnd).
        seed: seed of the random feedback matrices.
        max_trace_bytes: memory limit of one exact trace.
        jacobians: see :class:`~ostl.rules.trace.TraceRule`.
        trace_dtype: see :class:`~ostl.rules.trace.TraceRule`.
    """

    name = "ostl"

    def __init__(
        self,
        recurrence: str = "diagonal",
        feedback: str = "weights",
        seed: int = 0,
        max_trace_bytes: int = 2**30,
        *,
        jacobians: str = "auto",
        trace_dtype: torch.dtype | None = None,
    ) -> None:
        if recurrence not in ("exact", "diagonal"):
            raise OptionError(f"recurrence must be 'exact' or 'diagonal', got {recurrence!r}")
        if feedback not in ("weights", "random"):
            raise OptionError(f"feedback must be 'weights' or 'random', got {feedback!r}")
        signal = "backprop" if feedback == "weights" else "random"
        super().__init__(
            recurrence, signal, seed=seed, max_trace_bytes=max_trace_bytes,
            jacobians=jacobians, trace_dtype=trace_dtype,
        )  # fmt: skip
        self._published(
            recurrence=recurrence, feedback=feedback, seed=seed, max_trace_bytes=max_trace_bytes,
            jacobians=jacobians, trace_dtype=trace_dtype,
        )  # fmt: skip
