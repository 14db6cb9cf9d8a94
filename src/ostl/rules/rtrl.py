"""Real-time recurrent learning (RTRL): one influence matrix over the whole network.

With S_t the concatenated states of every stateful layer and θ every trainable parameter::

    M_t = ∂S_t/∂θ + (∂S_t/∂S_{t-1}) M_{t-1}                 (influence matrix dS_t/dθ)
    dE_t/dθ = ∂E_t/∂ŷ_t · (∂ŷ_t/∂θ + (∂ŷ_t/∂S_{t-1}) M_{t-1})

Both Jacobians come from ``torch.func.jacrev`` of the network's one-step function, vmapped over
the batch, so RTRL shares no code with the trace engine: it is the second, independent oracle.

- Exact for any depth and any cell (accumulated over a sequence with fixed weights).
- Memory per sample: |S|·|θ| for M (O(N³) for a recurrent layer of N neurons), checked against
  ``max_bytes`` before allocation. Compute per step: O(|S|²·|θ|) (O(N⁴)). Meant for
  small networks (tests, diagnostics), not for training at scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..engine.carry import Stats, advance_stats, init_stats
from ..errors import TraceTooLargeError
from ..layer import Network
from ..losses import LossFn, value_and_grad
from .base import Rule

__all__ = ["RTRL", "RTRLCarry", "RTRLEngine"]


class RTRL(Rule):
    """Exact real-time recurrent learning with one influence matrix over all layers.

    Exact for any depth and cell. Memory |S|·|θ| per sample, O(|S|²·|θ|) compute per step;
    raises :class:`~ostl.errors.TraceTooLargeError` above ``max_bytes`` (before allocating).
    """

    name = "rtrl"

    def __init__(self, max_bytes: int = 2**30) -> None:
        self.max_bytes = max_bytes

    def engine(self, net: Network) -> RTRLEngine:
        return RTRLEngine(self, net)


class RTRLCarry(NamedTuple):
    S: Tensor  # (B, |S|) every layer's state, concatenated
    M: Tensor  # (B, |S|, |θ|) the influence matrix dS_t/dθ
    stats: Stats


class _Step(nn.Module):
    """net.step as a module's forward, so ``torch.func.functional_call`` can run it."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        return self.net.step(x, state)


class RTRLEngine:
    """RTRL bound to a network (see the module docstring)."""

    #: an oracle: it checks each input as it comes
    eager_checks = True

    def __init__(self, rule: RTRL, net: Network) -> None:
        self.rule, self.net = rule, net
        self.params = {n: p for n, p in net.named_parameters() if p.requires_grad}
        self.consts: dict[str, list[Tensor | None]] = {}
        self._module = _Step(net)
        self._names = list(self.params)
        self._sizes = [p.numel() for p in self.params.values()]
        self._template = net.init_state(1)

    def init(self, batch_size: int) -> RTRLCarry:
        net = self.net
        state = net.init_state(batch_size)
        self._template = state
        fields = [t for s in state for t in s]
        S = (
            torch.cat(fields, dim=-1)
            if fields
            else torch.zeros(batch_size, 0, dtype=net.dtype, device=net.device)
        )
        n_s, n_p = S.shape[-1], sum(self._sizes)
        need = batch_size * (n_s + net.n_out) * (n_p + n_s) * S.element_size()
        if need > self.rule.max_bytes:
            raise TraceTooLargeError(
                f"RTRL needs about {need / 2**30:.2f} GiB for its influence matrix and Jacobians "
                f"({n_s} state variables × {n_p} parameters × batch {batch_size}); the limit is "
                f"{self.rule.max_bytes / 2**30:.2f} GiB (RTRL(max_bytes=...)). RTRL is an oracle "
                "for small networks: use OSTL for training."
            )
        M = torch.zeros(batch_size, n_s, n_p, dtype=S.dtype, device=S.device)
        return RTRLCarry(S, M, init_stats(net.dtype, net.device))

    def _unflatten_state(self, flat: Tensor) -> tuple[Any, ...]:
        out, i = [], 0
        for s in self._template:
            fields = []
            for t in s:
                n = t.shape[-1]
                fields.append(flat[..., i : i + n])
                i += n
            out.append(type(s)(*fields))
        return tuple(out)

    def _step_fn(self, theta: Tensor, S: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """One sample's step as a function of (flat θ, flat S_{t-1}, x): returns [S_t, ŷ_t]."""
        views = (c.view_as(p) for c, p in zip(theta.split(self._sizes), self.params.values()))
        y, new = torch.func.functional_call(
            self._module,
            {f"net.{n}": v for n, v in zip(self._names, views)},
            (x, self._unflatten_state(S)),
            strict=False,
        )
        out = torch.cat([t for s in new for t in s] + [y], dim=-1)
        return out, out.detach()

    def step(
        self,
        params: Mapping[str, Tensor] | None,
        carry: RTRLCarry,
        x: Tensor,
        target: Any,
        loss_fn: LossFn,
    ) -> tuple[Tensor, dict[str, Tensor] | None, RTRLCarry]:
        src = self.params if params is None else {**self.params, **params}
        theta = torch.cat([src[n].detach().reshape(-1) for n in self._names])
        jac = torch.func.jacrev(self._step_fn, argnums=(0, 1), has_aux=True)
        (J_theta, J_S), out = torch.func.vmap(jac, in_dims=(None, 0, 0))(theta, carry.S, x)
        n_s = carry.S.shape[-1]
        total = J_theta + J_S @ carry.M  # (B, n_s + n_out, n_p): d[S_t, ŷ_t]/dθ
        S_new, y = out[:, :n_s], out[:, n_s:]
        grads = None
        e = L = None
        if target is not None:
            e, L = value_and_grad(loss_fn, y, target)
            g = torch.einsum("bo,bop->p", L, total[:, n_s:])
            grads = {
                n: gi.view_as(self.params[n]) for n, gi in zip(self._names, g.split(self._sizes))
            }
        stats = advance_stats(carry.stats, x, target, L, e)
        return y, grads, RTRLCarry(S_new, total[:, :n_s], stats)

    def finish(
        self, params: Mapping[str, Tensor] | None, carry: RTRLCarry
    ) -> tuple[None, RTRLCarry]:
        return None, carry

    def restore(self, carry: RTRLCarry, loss_fn: LossFn | None) -> RTRLCarry:
        return carry
