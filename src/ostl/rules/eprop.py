"""e-prop (eligibility propagation; Bellec et al., Nature Communications 11, 2020).

e-prop factorises the gradient into a learning signal times an eligibility trace::

    dE/dW_ji ≈ Σ_t L_j^t e_ji^t          L_j^t = Σ_k B_jk ∂E_t/∂y_k^t
    e_ji^t = ∂z_j^t/∂h_j^t · ε_ji^t      ε_ji^t = ∂h_j^t/∂h_j^{t-1} ε_ji^{t-1} + ∂h_j^t/∂W_ji

``h_j`` is neuron j's own state and ``∂h_j^t/∂h_j^{t-1}`` its own dynamics only: the recurrent
weights' contribution is dropped. This is OSTL's diagonal trace
(:class:`ostl.traces.DiagonalTrace`): for LIF ε^t = α ε^{t-1} + z_i^{t-1} (x_i^t for input
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

from torch import Tensor

from ..errors import OptionError, UnsupportedError
from ..layer import Network, Readout
from .ostl import OSTLRunner, TraceRule, random_feedback

__all__ = ["EProp", "EPropRunner"]

FEEDBACK = ("symmetric", "random")


class EProp(TraceRule):
    """e-prop: diagonal eligibility traces × the readout error through W_outᵀ or a random B.

    Args:
        feedback: ``"symmetric"`` (the readout weights, the paper's symmetric e-prop) or
            ``"random"`` (fixed random matrices, random e-prop).
        seed: seed of the random matrices.

    Exact (equals BPTT) for one stateful layer without H under a Readout; approximate with H.
    See the module docstring for the relation to OSTL and the reset convention.
    """

    name = "eprop"
    recurrence = "diagonal"  # e-prop's traces: each neuron's own dynamics only
    max_trace_bytes = 0  # no exact trace is ever built

    def __init__(self, feedback: str = "symmetric", seed: int = 0) -> None:
        if feedback not in FEEDBACK:
            raise OptionError(f"feedback must be one of {FEEDBACK}, got {feedback!r}")
        self.feedback = feedback
        self.seed = seed

    def bind(self, net: Network) -> EPropRunner:
        return EPropRunner(self, net)


class EPropRunner(OSTLRunner):
    """e-prop bound to a network (one that ends with a Readout)."""

    rule: EProp

    def __init__(self, rule: EProp, net: Network) -> None:
        if isinstance(net, Network) and not isinstance(net.layers[-1], Readout):
            raise UnsupportedError(
                f"{rule!r}: e-prop's learning signal is the readout error sent back through the "
                f"readout weights; the network must end with an ostl.Readout, but its last layer "
                f"is a {type(net.layers[-1]).__name__}. Add ostl.Readout(n, n_out) on top, or use "
                "OSTL (any output layer)."
            )
        super().__init__(rule, net)

    def _make_feedback(self) -> list[Tensor | None]:
        if self.rule.feedback == "random":
            return random_feedback(self.net, self.rule.seed)
        return [None] * len(self.net.layers)  # the live forward weights
