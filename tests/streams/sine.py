"""A small stream of the tests' own: a noisy sine whose frequency switches at known steps.

A real implementation of the :class:`ostl.streams.Stream` contract: input the current value,
target the next one (squared error), the frequency redrawn at every drift.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ostl.layer import Network
from ostl.losses import LossFn, mse
from ostl.streams.base import Stream, StreamDefaults
from ostl.tasks.base import build_network
from ostl.tasks.data import Targets


@dataclass
class Sine(Stream):
    """sin(ω_k t) + noise, ω_k switching at ``drift_every`` steps; target: the next value.

    ``target_every``: a target only at every k-th step (the others have None).
    """

    name = "sine"
    kind = "regression"
    metric = "squared error"
    defaults = StreamDefaults(cell="lstm", hidden=(8,), lr=1e-2)

    steps: int = 600
    drift_every: int = 200
    noise: float = 0.05
    target_every: int = 1
    data_seed: int = 0

    @property
    def n_in(self) -> int:
        return 1

    @property
    def n_out(self) -> int:
        return 1

    @property
    def length(self) -> int | None:
        return self.steps

    @property
    def drifts(self) -> tuple[int, ...]:
        return tuple(range(self.drift_every, self.steps, self.drift_every))

    @property
    def loss_fn(self) -> LossFn:
        return mse

    def error(self, y: Tensor, target: Tensor) -> Tensor:
        return ((y.detach() - target) ** 2).mean()

    def values(self, seed: int = 0) -> Tensor:
        """The whole signal, steps + 1 values (the last one is the last target)."""
        g = torch.Generator().manual_seed(self.data_seed * 1000 + seed)
        n = self.steps + 1
        regimes = math.ceil(n / self.drift_every)
        omega = 0.1 + 0.5 * torch.rand(regimes, generator=g, dtype=torch.float64)
        step = omega.repeat_interleave(self.drift_every)[:n]
        phase = torch.cumsum(step, 0)
        noise = self.noise * torch.randn(n, generator=g, dtype=torch.float64)
        return (torch.sin(phase) + noise).float()

    def chunks(self, seed: int = 0, size: int = 1000) -> Iterator[tuple[Tensor, Targets]]:
        v = self.values(seed)
        for start in range(0, self.steps, size):
            stop = min(start + size, self.steps)
            xs = v[start:stop].view(-1, 1, 1)
            ys = v[start + 1 : stop + 1].view(-1, 1, 1)
            if self.target_every == 1:
                yield xs, ys
            else:
                every = self.target_every
                yield xs, [y if (start + i) % every == 0 else None for i, y in enumerate(ys)]

    def network(
        self, cell: str | None = None, hidden: tuple[int, ...] | None = None, seed: int = 0
    ) -> Network:
        d = self.defaults
        return build_network(1, hidden or d.hidden, 1, cell or d.cell, d.recurrent, seed=seed)
