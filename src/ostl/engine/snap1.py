"""SnAp-1's trace: the diagonal trace propagated with the diagonal of the *full* Jacobian.

SnAp-n (Menick et al., ICLR 2021) keeps, of the influence matrix dS_t/dθ, the entries of the
states that θ reaches within n steps. For n = 1 a weight row p reaches neuron p's own state
only: the diagonal trace's entries, but propagated with the self-connection H_pp included::

    ∂s_t[p]/∂y_{t-1}[p]  +=  Σ_g ∂s_t[p]/∂a_rec[g, p] · H_g[p, p]

(the path y_{t-1}[p] → H_pp → a_rec[p] → s_t[p], which the plain diagonal trace drops). The
rest is :mod:`.diagonal`: same memory, O(N·k·G) more work per step.
"""

from __future__ import annotations

from torch import Tensor

from ..cells.base import Entry, NeuronJacobians

__all__ = ["with_self_recurrence"]


def with_self_recurrence(J: NeuronJacobians, H: Tensor, o: int) -> NeuronJacobians:
    """J with H's diagonal added to the column of the output variable ``o`` of ``J.state``."""
    assert J.a_rec is not None
    G = H.shape[0] // H.shape[1]
    N = H.shape[1]
    H_pp = H.detach().view(G, N, N).diagonal(dim1=1, dim2=2)  # (G, N): H_g[p, p]
    state: list[tuple[Entry, ...] | None] = []
    for kappa, row in enumerate(J.state):
        if row is None:  # an implied output row (see NeuronJacobians.complete)
            state.append(None)
            continue
        rec = J.a_rec[kappa]
        self_term = (rec * H_pp).sum(-2)  # (B, N) (or (G, N) summed when rec is a number)
        state.append(tuple(e + self_term if j == o else e for j, e in enumerate(row)))
    return J._replace(state=tuple(state))
