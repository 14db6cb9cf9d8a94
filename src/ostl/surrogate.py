"""Spike nonlinearity with surrogate derivatives.

A spiking neuron emits ``z = Θ(x)`` (Heaviside step, ``Θ(x) = 1`` for ``x > 0``), whose true
derivative is zero almost everywhere. Training uses a *surrogate* (pseudo-) derivative
``σ'(x)`` in its place. Each surrogate here is the derivative of a smooth *proxy* function
``σ(x)``; the spike function's backward uses ``σ'`` while its forward stays the exact step.

The spike is one :class:`torch.autograd.Function` (:class:`SpikeFunction`) parametrised by a
:class:`Surrogate`. It supports ``torch.func`` transforms (``vjp``, ``vmap``, ``jacrev``), which
the trace engine relies on. Called with ``smooth=True`` its forward returns the proxy instead of
the step: the backward code is the same, so ``torch.autograd.gradcheck`` on the smooth form
proves the surrogate derivative is the true derivative of its proxy.

| name | proxy σ(x) | surrogate σ'(x) | source |
|---|---|---|---|
| ``fast_sigmoid`` | x / (1 + β|x|) | 1 / (1 + β|x|)² | SuperSpike (Zenke & Ganguli 2018) |
| ``sigmoid`` | sigmoid(βx) | β s (1 - s) | soft-SNU / common choice |
| ``triangle`` | piecewise quadratic | γ max(0, 1 - |x|/w) | e-prop (Bellec et al. 2020) |
| ``arctan`` | arctan(π α x / 2) / π | (α/2) / (1 + (π α x/2)²) | Fang et al. 2021 |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .errors import OptionError

__all__ = [
    "Surrogate",
    "FastSigmoid",
    "Sigmoid",
    "Triangle",
    "Arctan",
    "SpikeFunction",
    "spike",
    "get_surrogate",
    "SURROGATES",
]


class Surrogate:
    """A smooth proxy σ and its derivative σ'; the spike's backward uses σ'."""

    name: str = ""

    def proxy(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def derivative(self, x: Tensor) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """SuperSpike's fast sigmoid: σ'(x) = 1 / (1 + β|x|)²."""

    beta: float = 5.0
    name = "fast_sigmoid"

    def proxy(self, x: Tensor) -> Tensor:
        return x / (1 + self.beta * x.abs())

    def derivative(self, x: Tensor) -> Tensor:
        return (x.abs() * self.beta + 1).pow(-2)


@dataclass(frozen=True)
class Sigmoid(Surrogate):
    """Logistic sigmoid of slope β: σ'(x) = β s (1 - s), s = sigmoid(βx)."""

    beta: float = 5.0
    name = "sigmoid"

    def proxy(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.beta * x)

    def derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.beta * x)
        return self.beta * s * (1 - s)


@dataclass(frozen=True)
class Triangle(Surrogate):
    """e-prop's piecewise-linear pseudo-derivative: σ'(x) = γ max(0, 1 - |x|/w)."""

    gamma: float = 0.3
    width: float = 1.0
    name = "triangle"

    def proxy(self, x: Tensor) -> Tensor:
        xc = x.clamp(-self.width, self.width)
        return self.gamma * (xc - xc * xc.abs() / (2 * self.width))

    def derivative(self, x: Tensor) -> Tensor:
        return self.gamma * (1 - x.abs() / self.width).clamp(min=0)


@dataclass(frozen=True)
class Arctan(Surrogate):
    """Arctan surrogate: σ'(x) = (α/2) / (1 + (π α x / 2)²)."""

    alpha: float = 2.0
    name = "arctan"

    def proxy(self, x: Tensor) -> Tensor:
        return torch.atan(math.pi * self.alpha * x / 2) / math.pi

    def derivative(self, x: Tensor) -> Tensor:
        return (self.alpha / 2) / (1 + (math.pi * self.alpha * x / 2) ** 2)


SURROGATES: dict[str, type[Surrogate]] = {
    "fast_sigmoid": FastSigmoid,
    "sigmoid": Sigmoid,
    "triangle": Triangle,
    "arctan": Arctan,
}


def get_surrogate(surrogate: str | Surrogate) -> Surrogate:
    """Resolve a surrogate given by name (with default parameters) or as an instance."""
    if isinstance(surrogate, Surrogate):
        return surrogate
    if isinstance(surrogate, str) and surrogate in SURROGATES:
        return SURROGATES[surrogate]()
    raise OptionError(
        f"unknown surrogate {surrogate!r}: expected one of {sorted(SURROGATES)} "
        "or a Surrogate instance"
    )


class SpikeFunction(torch.autograd.Function):
    """Θ(x) forward, surrogate σ'(x) backward. ``smooth=True`` returns σ(x) forward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, surrogate: Surrogate, smooth: bool = False) -> Tensor:
        if smooth:
            return surrogate.proxy(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, surrogate, _ = inputs
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(x), None, None


def spike(x: Tensor, surrogate: Surrogate) -> Tensor:
    """Heaviside spike Θ(x) whose gradient is the surrogate derivative σ'(x)."""
    return SpikeFunction.apply(x, surrogate, False)
