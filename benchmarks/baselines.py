"""Reference BPTT implementations outside ostl: hand-written autograd LIF, and snnTorch.

Both build the LIF network of a :class:`~benchmarks.workload.NetSpec` with ostl's LIF constants
(decay α = 0.9, threshold ϑ = 1, reset to zero, fast-sigmoid surrogate of slope 5) and train it
with full BPTT over the sequence: forward every step, the per-step losses summed, one backward
pass and one Adam step at the end: the same work as ``Learner(net, "bptt", update_every=None)``.

- ``"torch"``: the LIF step written out with tensors (``v = α v (1 - z) + W x``, ``z =
  spike(v - ϑ)``); the surrogate is ostl's spike function. It shows ostl's own overhead.
- ``"ostl-direct"``: OSTL written directly for the same hand-written network (feed-forward
  only): the closed-form LIF derivatives inline, the diagonal trace of each layer updated and
  contracted by the fused kernel (:func:`ostl.kernels.trace_step`), the learning signal swept
  down through the weights, an Adam step after every step. No input checks, no non-finite
  record, no loss value, no generic per-layer code: the maths of an OSTL step and nothing else,
  so the gap to ``"ostl"`` is what the library's generality costs. Its gradients equal
  ``ostl.gradients(..., OSTL())``'s (tested).
- ``"snntorch"``: ``snn.Leaky`` (``RLeaky`` with ``all_to_all=True`` for the recurrent layer,
  whose recurrent ``nn.Linear`` has a bias) with ``reset_mechanism="zero"`` and
  ``surrogate.fast_sigmoid(slope=5)``. snnTorch detaches its reset (ostl differentiates it):
  the work per step is the same, the gradients differ slightly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ostl import kernels
from ostl.errors import UnsupportedError
from ostl.surrogate import FastSigmoid, spike

from .workload import LIF_DECAY, LIF_THRESHOLD, SURROGATE_SLOPE, NetSpec, loss_fn

__all__ = ["TorchLIFNet", "SnnTorchNet", "make_baseline", "bptt_sequence", "direct_ostl_sequence"]


def _check_lif(spec: NetSpec, who: str) -> None:
    if spec.cell != "lif":
        raise UnsupportedError(f"the {who} baseline implements LIF networks only, not {spec.cell}")


class TorchLIFNet(nn.Module):
    """The LIF network of a spec written with plain tensors (no ostl layers, no checks)."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        _check_lif(spec, "hand-written torch")
        sizes = [spec.n_in] + [spec.hidden] * spec.layers
        self.W = nn.ParameterList(
            nn.Parameter(torch.empty(o, i).uniform_(-(i**-0.5), i**-0.5))
            for i, o in zip(sizes[:-1], sizes[1:])
        )
        h = spec.hidden
        self.H: nn.Parameter | None = None
        if spec.recurrent:
            self.H = nn.Parameter(torch.empty(h, h).uniform_(-(h**-0.5), h**-0.5))
        self.readout = nn.Linear(spec.hidden, spec.classes)
        self.surrogate = FastSigmoid(SURROGATE_SLOPE)
        self.hidden = spec.hidden

    def init_state(self, batch: int) -> list[tuple[Tensor, Tensor]]:
        z = self.W[0].new_zeros(batch, self.hidden)
        return [(z, z) for _ in self.W]

    def step(self, x: Tensor, state: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Any]:
        new = []
        for i, (W, (v, z)) in enumerate(zip(self.W, state)):
            a = x @ W.T
            if i == 0 and self.H is not None:
                a = a + z @ self.H.T
            v = LIF_DECAY * v * (1 - z) + a
            z = spike(v - LIF_THRESHOLD, self.surrogate)
            new.append((v, z))
            x = z
        return self.readout(x), new


class SnnTorchNet(nn.Module):
    """The LIF network of a spec built from snnTorch 1.0 ``Leaky`` / ``RLeaky`` neurons."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        _check_lif(spec, "snnTorch")
        try:
            import snntorch as snn
            from snntorch import surrogate
        except ImportError as e:
            raise UnsupportedError(
                "snnTorch is not installed (pip install 'ostl[bench]' or snntorch==1.0.0)"
            ) from e
        grad = surrogate.fast_sigmoid(slope=SURROGATE_SLOPE)
        sizes = [spec.n_in] + [spec.hidden] * spec.layers
        self.fc = nn.ModuleList(nn.Linear(i, o, bias=False) for i, o in zip(sizes, sizes[1:]))
        neurons: list[nn.Module] = []
        self.recurrent = tuple(spec.recurrent and i == 0 for i in range(spec.layers))
        for rec in self.recurrent:
            opts: dict[str, Any] = dict(beta=LIF_DECAY, threshold=LIF_THRESHOLD, spike_grad=grad)
            if rec:
                neurons.append(
                    snn.RLeaky(
                        **opts, all_to_all=True, linear_features=spec.hidden, reset_mechanism="zero"
                    )
                )
            else:
                neurons.append(snn.Leaky(**opts, reset_mechanism="zero"))
        self.lif = nn.ModuleList(neurons)
        self.readout = nn.Linear(spec.hidden, spec.classes)
        self.hidden = spec.hidden

    def init_state(self, batch: int) -> list[tuple[Tensor, Tensor]]:
        z = self.readout.weight.new_zeros(batch, self.hidden)
        return [(z, z) for _ in self.lif]

    def step(self, x: Tensor, state: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Any]:
        new = []
        for fc, lif, rec, (mem, spk) in zip(self.fc, self.lif, self.recurrent, state):
            cur = fc(x)
            if rec:
                spk, mem = lif(cur, spk, mem)
            else:
                spk, mem = lif(cur, mem)
            new.append((mem, spk))
            x = spk
        return self.readout(x), new


def make_baseline(method: str, spec: NetSpec, *, seed: int = 0) -> TorchLIFNet | SnnTorchNet:
    """The ``"torch"``, ``"ostl-direct"`` or ``"snntorch"`` network of a spec, weights drawn
    from ``seed``."""
    torch.manual_seed(seed)
    if method == "ostl-direct" and spec.recurrent:
        raise UnsupportedError("the hand-written OSTL is written for feed-forward LIF layers")
    if method in ("torch", "ostl-direct"):
        return TorchLIFNet(spec)
    if method == "snntorch":
        return SnnTorchNet(spec)
    raise ValueError(f"unknown baseline {method!r}: expected 'torch' or 'snntorch'")


def bptt_sequence(
    net: TorchLIFNet | SnnTorchNet,
    optimizer: torch.optim.Optimizer,
    pool: Tensor,
    target: Tensor,
    steps: int,
) -> None:
    """Full BPTT over one sequence: Σ_t loss, one backward pass, one optimizer step."""
    state = net.init_state(target.shape[0])
    total: Tensor | None = None
    for t in range(steps):
        y, state = net.step(pool[t % len(pool)], state)
        e = loss_fn(y, target)
        total = e if total is None else total + e
    assert total is not None
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()


@torch.no_grad()
def direct_ostl_sequence(
    net: TorchLIFNet,
    optimizer: torch.optim.Optimizer,
    pool: Tensor,
    target: Tensor,
    steps: int,
    grads_out: list[Tensor] | None = None,
) -> None:
    """OSTL written directly (see the module docstring): ``steps`` steps from rest, an optimizer
    step after each. ``grads_out`` (tests): accumulate every step's gradients there instead,
    one per parameter in the order ``W[0], …, W[L-1], readout.weight, readout.bias``."""
    B, N, beta = target.shape[0], net.hidden, SURROGATE_SLOPE
    Ws, readout = list(net.W), net.readout
    zeros = Ws[0].new_zeros(B, N)
    v, z, D = [zeros] * len(Ws), [zeros] * len(Ws), [zeros] * len(Ws)
    eps = [W.new_zeros(1, N, B, W.shape[1]) for W in Ws]
    params = [*Ws, readout.weight, readout.bias]
    for t in range(steps):
        x = pool[t % len(pool)]
        ins, sgs, As = [], [], []
        for i, W in enumerate(Ws):
            ins.append(x)
            A = LIF_DECAY * (1 - z[i])  # ∂v_t/∂v_{t-1} directly, then the reset through z
            v_new = A * v[i] + x @ W.T
            u = v_new - LIF_THRESHOLD
            sg = (u.abs() * beta + 1).pow(-2)
            As.append((A - LIF_DECAY * v[i] * D[i]).view(1, 1, B, N))
            v[i], z[i], D[i] = v_new, (u > 0).to(u.dtype), sg
            sgs.append(sg)
            x = z[i]
        y = readout(x)
        L = (torch.softmax(y, -1) - target) / B  # one-hot targets: ∂E_t/∂y_t
        grads = [L.T @ x, L.sum(0)]
        for i in range(len(Ws) - 1, -1, -1):
            L = L @ (readout.weight if i == len(Ws) - 1 else Ws[i + 1])
            delta = L * sgs[i]
            g = kernels.trace_step(eps[i], As[i], None, ins[i], delta.view(1, B, N))
            assert g is not None
            grads.insert(0, g)
            L = delta
        if grads_out is not None:
            if not grads_out:
                grads_out.extend(torch.zeros_like(p) for p in params)
            for acc, g in zip(grads_out, grads):
                acc.add_(g)
            continue
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
