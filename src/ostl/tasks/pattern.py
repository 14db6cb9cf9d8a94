"""pattern: e-prop-style pattern generation (Bellec et al. 2020, Fig. 2).

Frozen Poisson spike trains in (``inputs`` channels firing with probability ``rate`` per step),
and at every step a target for each of ``outputs`` linear readouts: a sum of four sinusoids of
periods T, T/2, T/3 and T/5 with random amplitudes in [0.5, 2] and phases (as in e-prop), scaled
to unit peak. The same ``patterns`` sequences are used for training and evaluation: the task is
to generate them, not to generalise. Loss and metric: mean squared error per step.

Default network: SNU(100) without recurrent weights, input weights ×2 and the SNU threshold
lowered (b = -0.5) so neurons fire from the start, and a linear readout.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import Defaults, Task
from .data import Batch
from .losses import mse
from .metrics import MeanSquaredError, Metric

__all__ = ["Pattern", "make_patterns"]


def make_patterns(
    patterns: int, steps: int, inputs: int, outputs: int, rate: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Inputs (steps, patterns, inputs) of frozen Poisson spikes and targets (steps, patterns,
    outputs) of sums of sinusoids."""
    g = torch.Generator().manual_seed(seed)
    xs = (torch.rand(steps, patterns, inputs, generator=g) < rate).float()
    t = torch.arange(steps, dtype=torch.float64).view(steps, 1, 1) / steps
    target = torch.zeros(steps, patterns, outputs, dtype=torch.float64)
    for period in (1, 2, 3, 5):
        amp = 0.5 + 1.5 * torch.rand(1, patterns, outputs, generator=g, dtype=torch.float64)
        phase = 2 * math.pi * torch.rand(1, patterns, outputs, generator=g, dtype=torch.float64)
        target += amp * torch.sin(2 * math.pi * period * t + phase)
    target /= target.abs().amax(dim=0, keepdim=True)
    return xs, target.float()


@dataclass
class Pattern(Task):
    """Pattern generation from frozen Poisson input; see the module docstring.

    Args:
        steps: sequence length T.
        inputs: input channels.
        outputs: target signals (readout units).
        patterns: number of (input, target) pairs.
        rate: firing probability per input and step.
        data_seed: seed of the inputs and targets.
    """

    name = "pattern"
    summary = "e-prop pattern generation: frozen Poisson input -> sum of sinusoids (MSE)"
    defaults = Defaults(cell="snu", hidden=(100,), epochs=200, batch_size=1, lr=3e-3)
    spiking_input = True
    input_gain = 2.0
    quick = {"epochs": 30}

    steps: int = 200
    inputs: int = 50
    outputs: int = 1
    patterns: int = 1
    rate: float = 0.05
    data_seed: int = 0
    _xs: Tensor = field(default_factory=lambda: torch.empty(0), init=False, repr=False)
    _ys: Tensor = field(default_factory=lambda: torch.empty(0), init=False, repr=False)

    def __post_init__(self) -> None:
        for k in ("steps", "inputs", "outputs", "patterns"):
            if getattr(self, k) <= 0:
                raise ValueError(f"pattern: {k} must be positive, got {getattr(self, k)}")
        if not 0 < self.rate <= 1:
            raise ValueError(f"pattern: rate must be in (0, 1], got {self.rate}")
        self._xs, self._ys = make_patterns(
            self.patterns, self.steps, self.inputs, self.outputs, self.rate, self.data_seed
        )

    @property
    def n_in(self) -> int:
        return self.inputs

    @property
    def n_out(self) -> int:
        return self.outputs

    #: the per-step loss (closed-form output error for the online rules)
    loss_fn = mse

    def metric(self) -> Metric:
        return MeanSquaredError()

    def _batches(self, batch_size: int) -> Iterator[Batch]:
        for i in range(0, self.patterns, batch_size):
            yield Batch(self._xs[:, i : i + batch_size], self._ys[:, i : i + batch_size])

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        return self._batches(batch_size)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        self.check_split(split)
        return self._batches(batch_size)

    def num_train_batches(self, batch_size: int) -> int:
        return math.ceil(self.patterns / batch_size)
