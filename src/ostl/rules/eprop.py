"""e-prop (eligibility propagation; Bellec et al., Nature Communications 11, 2020).

e-prop factorises the gradient into a learning signal times an eligibility trace::

    dE/dW_ji ≈ Σ_t L_j^t e_ji^t          L_j^t = Σ_k B_jk ∂E_t/∂y_k^t
    e_ji^t = ∂z_j^t/∂h_j^t · ε_ji^t      ε_ji^t = ∂h_j^t/∂h_j^{t-1} ε_ji^{t-1} + ∂h_j^t/∂W_ji

``h_j`` is neuron j's own state and ``∂h_j^t/∂h_j^{t-1}`` its own dynamics only: the recurrent
weights' contribution is dropped. This is OSTL's diagonal trace
(:mod:`ostl.engine.diagonal`): for LIF ε^t = α ε^{t-1} + z_i^{t-1} (x_i^t for input
weights) and e^t = ψ^t ε^t with ψ the surrogate derivative; for ALIF it carries the paper's
second, adaptation component, because the adaptation variable is part of the neuron's state.

The learning signal comes from the readout error: ``feedback="symmetric"`` sends it through the
readout weights (B = W_outᵀ, the paper's symmetric e-prop), ``"random"`` through a fixed random
matrix of the same shape (random e-prop, uniform in ±1/√fan_in, drawn from ``seed``).

Relation to OSTL, stated precisely:

- The network must end with an :class:`ostl.Readout`. Ours is memoryless (y_t = W_out z_t + b),
  i.e. the paper's leaky readout with κ = 0, so e-prop's low-pass filter of the eligibility traces
  is the identity; a leaky readout is not provided.
- Bellec et al. do not differentiate the reset. Build LIF/ALIF layers with ``detach_reset=True``
  to get the paper's traces exactly; this is an option of the cell, so every rule (BPTT too)
  then sees the same model. With the default (reset differentiated) e-prop's traces keep the
  reset path, like OSTL's.
- With one stateful layer under the readout, e-prop(symmetric) *is* OSTL(recurrence="diagonal"),
  and e-prop(random) is OSTL(recurrence="diagonal", feedback="random"): the same traces and the
  same signal L^t = ∂E_t/∂ŷ_t · B. Without H (and with its reset convention) it equals BPTT.
- Deeper networks: the paper defines L_j^t as the partial derivative ∂E_t/∂z_j^t at time t; for
  a neuron below the top stateful layer that is the sweep across layers at step t, through the
  forward weights (symmetric) or fixed random matrices (random), as in OSTL.

Approximate w.r.t. BPTT whenever a layer has H (the recurrent path is dropped from the traces).
Memory per sample and layer: N·k·G·(n_in + N) (the size of W and H times k); compute O(N²) per
step.
"""

from __future__ import annotations

import torch

from ..errors import OptionError
from .trace import TraceRule

__all__ = ["EProp"]

FEEDBACK = ("symmetric", "random")


class EProp(TraceRule):
    """e-prop: diagonal eligibility traces × the readout error through W_outᵀ or a random B.

    Args:
        feedback: ``"symmetric"`` (the readout weights, the paper's symmetric e-prop) or
            ``"random"`` (fixed random matrices, random e-prop).
        seed: seed of the random matrices.
        jacobians: see :class:`~ostl.rules.trace.TraceRule`.
        trace_dtype: see :class:`~ostl.rules.trace.TraceRule`.

    Exact (equals BPTT) for one stateful layer without H under a Readout; approximate with H.
    See the module docstring for the relation to OSTL and the reset convention.
    """

    name = "eprop"

    def __init__(
        self,
        feedback: str = "symmetric",
        seed: int = 0,
        *,
        jacobians: str = "auto",
        trace_dtype: torch.dtype | None = None,
    ) -> None:
        if feedback not in FEEDBACK:
            raise OptionError(f"feedback must be one of {FEEDBACK}, got {feedback!r}")
        signal = "backprop" if feedback == "symmetric" else "random"
        super().__init__(
            "diagonal", signal, seed=seed, jacobians=jacobians, trace_dtype=trace_dtype,
            needs_readout=True,
        )  # fmt: skip
        self._published(feedback=feedback, seed=seed, jacobians=jacobians, trace_dtype=trace_dtype)
