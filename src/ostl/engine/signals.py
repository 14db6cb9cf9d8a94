"""Learning signals: what each layer's traces are contracted with, L_t^l = ∂E_t/∂y_t^l or a
stand-in for it.

Four kinds, one function each, all computed at step t only:

- ``"backprop"`` (OSTL, e-prop, SnAp-1): the output error swept down across layers through the
  transposed forward weights, ``L^l = L^{l+1} · ∂y^{l+1}/∂y^l``, the upper layers' previous
  states held fixed. No backward pass through time.
- ``"random"`` (OSTL rnd, random e-prop): the same sweep through fixed random matrices of the
  forward weights' shapes (no weight transport; still update-locked).
- ``"target"`` (OSTTP, as in DRTP): every hidden layer gets ``B_l y*_t / n_batch``, a fixed
  random projection of the target; the output layer its true error. No weight transport, no
  update locking: a hidden layer's signal needs only the target.
- ``"error"`` (DFA): every hidden layer gets ``B_l e_t``, a fixed random projection of the
  output error. No weight transport, but update-locked (it needs the whole forward pass).

Sign convention of ``"target"``: ``L^l = +B_l y*``, as written in the OSTTP and DRTP papers. For
a one-hot target the output error e = ŷ - y* has a sign fixed by the target alone, so -y* carries
the error's sign and B y* = (-B)(-y*) is that surrogate sent through -B; B is symmetric about
zero, so the sign is a convention absorbed by the random matrix. With the same seed, ``"error"``
therefore sends -B y* as the target part of its signal.

The random matrices are drawn once, when a rule is bound, in float64 from a seed (the same
numbers for every dtype and device), then cast to the network's dtype and device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells.base import NeuronJacobians
from ..errors import OptionError
from ..layer import Network

__all__ = [
    "SIGNALS",
    "DISTRIBUTIONS",
    "draw_feedback",
    "draw_projections",
    "check_projection_options",
    "input_signal",
    "projected_target",
    "projected_error",
]

#: The kinds of learning signal (see the module docstring).
SIGNALS = ("backprop", "random", "target", "error")
DISTRIBUTIONS = ("uniform", "normal")


def draw_feedback(net: Network, seed: int) -> list[Tensor | None]:
    """Fixed random matrices of the shapes of every layer's W but the first (None for layer 0).

    Uniform in ±1/√fan_in like W, drawn in float64 from ``seed``.
    """
    fb: list[Tensor | None] = [None]
    gen = torch.Generator().manual_seed(seed)
    for layer in net.typed_layers[1:]:
        W = layer.W
        bound = W.shape[1] ** -0.5
        r = (torch.rand(W.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        fb.append(r.to(dtype=W.dtype, device=W.device))
    return fb


def check_projection_options(scale: float | None, distribution: str) -> None:
    """Raise OptionError unless ``distribution`` is known and ``scale`` is None or positive."""
    if distribution not in DISTRIBUTIONS:
        raise OptionError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0
    ):
        raise OptionError(f"scale must be a positive float or None, got {scale!r}")


def draw_projections(
    net: Network, seed: int, scale: float | None = None, distribution: str = "uniform"
) -> list[Tensor | None]:
    """Fixed random matrices B_l (n_l, n_out) for every layer but the last (None for the last).

    Args:
        net: the network; n_out is its output size.
        seed: seed of the generator.
        scale: uniform in ±scale or normal with std scale; None: 1/√n_out (like W's init).
        distribution: ``"uniform"`` or ``"normal"``.
    """
    check_projection_options(scale, distribution)
    s = net.n_out**-0.5 if scale is None else float(scale)
    gen = torch.Generator().manual_seed(seed)
    out: list[Tensor | None] = []
    for layer in net.typed_layers[:-1]:
        shape = (layer.n_out, net.n_out)
        if distribution == "uniform":
            B = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * s
        else:
            B = torch.randn(shape, generator=gen, dtype=torch.float64) * s
        out.append(B.to(dtype=net.dtype, device=net.device))
    out.append(None)
    return out


def input_signal(L: Tensor, J: NeuronJacobians | None, F: Tensor, n_gates: int, o: int) -> Tensor:
    """The signal for the layer below: L · ∂y_t/∂x_t through the current step only.

    ``F`` is the layer's W (the exact sweep) or a fixed random matrix of its shape; ``J`` the
    layer's Jacobians (None for a memoryless Readout, y = W x + b). L (B, N) -> (B, n_in).
    """
    if J is None:
        return L @ F
    d = J.a_in[o]  # ∂y_t/∂a_in: (B, G, N) or a number
    delta = L.unsqueeze(1) * d  # (B, G, N)
    B, N = L.shape
    if n_gates == 1:
        return delta.reshape(B, N) @ F
    return delta.expand(B, n_gates, N).reshape(B, n_gates * N) @ F


def projected_target(B_l: Tensor, target: Tensor) -> Tensor:
    """OSTTP's hidden signal ``B_l y*_t / n_batch`` (B, n_l): a batch mean like the loss."""
    return target @ B_l.T / target.shape[0]


def projected_error(B_l: Tensor, L_out: Tensor) -> Tensor:
    """DFA's hidden signal ``B_l e_t`` (B, n_l) for the output error e_t = ∂E_t/∂ŷ_t."""
    return L_out @ B_l.T
