"""SnAp-1: the sparse n-step approximation of RTRL with n = 1 (Menick et al., ICLR 2021).

SnAp-n keeps, of the influence matrix dS_t/dθ, only the entries of the states that θ reaches
within n steps. For n = 1 a weight row p (W[p, :], H[p, :], b[p], φ[p]) reaches neuron p's own
state only, so SnAp-1 keeps OSTL's diagonal trace ε[b, p, κ, c] but propagates it with the
*diagonal of the full one-step Jacobian*, which includes the self-connection H_pp::

    ε_t[p] = (J_s[p] + J_rec[p] · diag_g(H_g[p, p]) · e_oᵀ) ε_{t-1}[p] + ∂s_t[p]/∂θ[p]

``J_s[p]`` (k×k) is the neuron's own dynamics (leak, reset), ``J_rec[p]`` (k×G) its Jacobian
w.r.t. the recurrent currents and ``e_o`` selects the output variable: the added term is the
path y_{t-1}[p] → (H_pp) → a_rec[p] → s_t[p]. OSTL's diagonal trace drops it, so SnAp-1 is
never further from RTRL than OSTL(recurrence="diagonal") on its kept entries.

- Exact (equals BPTT) for one stateful layer whose H is diagonal (no off-diagonal entries): each
  neuron then only sees its own past, and the self term is the whole recurrent Jacobian. Without
  H it equals OSTL(recurrence="diagonal"), exact too. Approximate with a dense H.
- Deep networks: the learning signals are OSTL's sweep across layers at step t, through the
  forward weights (``feedback="weights"``) or fixed random matrices (``"random"``).
- Memory: the diagonal trace, N·k·G·(n_in + N) per sample and layer; compute O(N²) per step
  (the diagonal trace plus an O(N·k·G) correction).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import OptionError
from ..layer import Layer, Network
from ..traces import DiagonalTrace, LayerTrace, NeuronJacobians
from .ostl import OSTLRunner, TraceRule, random_feedback

__all__ = ["SnAp", "SnApRunner", "SnApTrace"]


class SnApTrace(DiagonalTrace):
    """The diagonal trace propagated with the diagonal of the full Jacobian (H_pp included)."""

    def update(self, J: NeuronJacobians, x: Tensor, y_prev: Tensor) -> None:
        H = self.layer.H
        if H is not None and J.a_rec is not None:
            G, N = self.layer.n_gates, self.layer.n_out
            H_pp = H.detach().view(G, N, N).diagonal(dim1=1, dim2=2)  # (G, N): H_g[p, p]
            state = J.state.clone()
            # ∂s_t[p]/∂y_{t-1}[p] through the self-connection, added to the output's column.
            state[..., self.o] += torch.einsum("bnkg,gn->bnk", J.a_rec, H_pp)
            J = J._replace(state=state)
        super().update(J, x, y_prev)


class SnAp(TraceRule):
    """SnAp-1 traces × OSTL's learning signals. See the module docstring.

    Args:
        feedback: ``"weights"`` (the sweep through the forward weights) or ``"random"``.
        seed: seed of the random feedback matrices.
    """

    name = "snap"
    recurrence = "snap1"
    max_trace_bytes = 0  # no exact trace is ever built

    def __init__(self, feedback: str = "weights", seed: int = 0) -> None:
        if feedback not in ("weights", "random"):
            raise OptionError(f"feedback must be 'weights' or 'random', got {feedback!r}")
        self.feedback = feedback
        self.seed = seed

    def bind(self, net: Network) -> SnApRunner:
        return SnApRunner(self, net)


class SnApRunner(OSTLRunner):
    """SnAp-1 bound to a network: OSTL's runner with :class:`SnApTrace` in every layer."""

    rule: SnAp

    def _make_trace(self, layer: Layer, batch_size: int) -> LayerTrace:
        return SnApTrace(layer, batch_size, self.net.dtype, self.net.device)

    def _make_feedback(self) -> list[Tensor | None]:
        if self.rule.feedback == "random":
            return random_feedback(self.net, self.rule.seed)
        return [None] * len(self.net.layers)
