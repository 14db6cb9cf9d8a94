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

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, TraceTooLargeError
from ..layer import Network
from .base import LossFn, Rule, Runner

__all__ = ["RTRL"]


class RTRL(Rule):
    """Exact real-time recurrent learning with one influence matrix over all layers.

    Exact for any depth and cell. Memory |S|·|θ| per sample, O(|S|²·|θ|) compute per step;
    raises :class:`~ostl.errors.TraceTooLargeError` above ``max_bytes`` (before allocating).
    """

    name = "rtrl"

    def __init__(self, max_bytes: int = 2**30) -> None:
        self.max_bytes = max_bytes

    def bind(self, net: Network) -> RTRLRunner:
        return RTRLRunner(self, net)


class _Step(nn.Module):
    """net.step as a module's forward, so ``torch.func.functional_call`` can run it."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        return self.net.step(x, state)


class RTRLRunner(Runner):
    rule: RTRL

    def __init__(self, rule: RTRL, net: Network) -> None:
        super().__init__(rule, net)
        self._module = _Step(net)
        self._names = list(self.params)
        self._sizes = [p.numel() for p in self.params.values()]
        self._S = torch.empty(0)
        self._M = torch.empty(0)

    def _reset(self, batch_size: int) -> None:
        state = self.net.init_state(batch_size)
        self._template = state
        self._S = (
            torch.cat([t for s in state for t in s], dim=-1)
            if self._n_state(state)
            else (torch.zeros(batch_size, 0, dtype=self.net.dtype, device=self.net.device))
        )
        n_s, n_p = self._S.shape[-1], sum(self._sizes)
        need = batch_size * (n_s + self.net.n_out) * (n_p + n_s) * self._S.element_size()
        if need > self.rule.max_bytes:
            raise TraceTooLargeError(
                f"RTRL needs about {need / 2**30:.2f} GiB for its influence matrix and Jacobians "
                f"({n_s} state variables × {n_p} parameters × batch {batch_size}); the limit is "
                f"{self.rule.max_bytes / 2**30:.2f} GiB (RTRL(max_bytes=...)). RTRL is an oracle "
                "for small networks: use OSTL for training."
            )
        self._M = torch.zeros(batch_size, n_s, n_p, dtype=self._S.dtype, device=self._S.device)

    @staticmethod
    def _n_state(state: tuple[Any, ...]) -> int:
        return sum(len(s) for s in state)

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
        params = dict(
            zip(
                self._names,
                (c.view_as(p) for c, p in zip(theta.split(self._sizes), self.params.values())),
            )
        )
        y, new = torch.func.functional_call(
            self._module,
            {f"net.{n}": v for n, v in params.items()},
            (x, self._unflatten_state(S)),
            strict=False,
        )
        out = torch.cat([t for s in new for t in s] + [y], dim=-1)
        return out, out.detach()

    def _step(self, x_t: Tensor, target_t: Any, loss_fn: LossFn) -> Tensor:
        theta = torch.cat([p.detach().reshape(-1) for p in self.params.values()])
        jac = torch.func.jacrev(self._step_fn, argnums=(0, 1), has_aux=True)
        (J_theta, J_S), out = torch.func.vmap(jac, in_dims=(None, 0, 0))(theta, self._S, x_t)
        n_s = self._S.shape[-1]
        total = J_theta + J_S @ self._M  # (B, n_s + n_out, n_p): d[S_t, ŷ_t]/dθ
        S_new, y = out[:, :n_s], out[:, n_s:]
        if target_t is not None:
            L = self._loss_signal(y, target_t, loss_fn)
            g = torch.einsum("bo,bop->p", L, total[:, n_s:])
            for n, gi in zip(self._names, g.split(self._sizes)):
                self.grads[n] += gi.view_as(self.grads[n])
        self._M = total[:, :n_s]
        self._S = S_new
        return y

    def _state_extra(self) -> dict[str, Any]:
        return {"S": self._S.detach().clone(), "M": self._M.detach().clone()}

    def _load_extra(self, extra: dict[str, Any], loss_fn: LossFn | None) -> None:
        for key, cur in (("S", self._S), ("M", self._M)):
            if extra[key].shape != cur.shape:
                raise CheckpointError(f"RTRL {key}: the checkpoint's shape does not match")
        self._S = extra["S"].to(self._S).clone()
        self._M = extra["M"].to(self._M).clone()

    def state_tensors(self) -> Iterator[Tensor]:
        yield from super().state_tensors()
        yield self._S
        yield self._M
