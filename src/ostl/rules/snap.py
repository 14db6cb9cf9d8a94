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

from ..errors import OptionError
from .trace import TraceRule

__all__ = ["SnAp"]


class SnAp(TraceRule):
    """SnAp-1 traces × OSTL's learning signals. See the module docstring.

    Args:
        feedback: ``"weights"`` (the sweep through the forward weights) or ``"random"``.
        seed: seed of the random feedback matrices.
        jacobians: see :class:`~ostl.rules.trace.TraceRule`.
        trace_dtype: see :class:`~ostl.rules.trace.TraceRule`.
    """

    name = "snap"

    def __init__(
        self,
        feedback: str = "weights",
        seed: int = 0,
        *,
        jacobians: str = "auto",
        trace_dtype: torch.dtype | None = None,
    ) -> None:
        if feedback not in ("weights", "random"):
            raise OptionError(f"feedback must be 'weights' or 'random', got {feedback!r}")
        signal = "backprop" if feedback == "weights" else "random"
        super().__init__("snap1", signal, seed=seed, jacobians=jacobians, trace_dtype=trace_dtype)
        self._published(feedback=feedback, seed=seed, jacobians=jacobians, trace_dtype=trace_dtype)
