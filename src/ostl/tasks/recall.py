"""recall: delayed recall (a copy task) that needs memory over many steps.

A sequence shows ``length`` symbols (one-hot over ``symbols`` channels, one per step), then
``delay`` silent steps, then ``length`` recall steps; recall step i turns on cue channel i and
asks for the i-th symbol. T = 2·length + delay. Targets (one-hot) exist only at the recall steps
(None elsewhere): the network must hold the symbols for at least ``delay`` steps. Loss:
cross-entropy at the recall steps. Metric: accuracy per recalled symbol (chance 1/symbols).

Inputs are binary (spike-like), so spiking cells can be used as they are. Training sequences
are drawn fresh every epoch (``train_size`` per epoch, from the run's seed); valid and test
sets are fixed (``test_size`` each, from ``data_seed``).

Default network: LSTM(64) without recurrent weights (each unit holds its own memory in its cell
state c; OSTL is exact for it) and a linear readout.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import Defaults, Task
from .data import Batch, one_hot
from .losses import cross_entropy
from .metrics import Metric, StepAccuracy

__all__ = ["Recall"]


@dataclass
class Recall(Task):
    """Delayed recall; see the module docstring.

    Args:
        symbols: alphabet size.
        length: symbols to remember per sequence.
        delay: silent steps between presentation and recall.
        train_size: training sequences per epoch.
        test_size: sequences in each of valid and test.
        data_seed: seed of the valid and test sets.
    """

    name = "recall"
    summary = "delayed recall: remember symbols over a delay, then recall them (accuracy)"
    defaults = Defaults(cell="lstm", hidden=(64,), epochs=10, batch_size=32, lr=5e-3)
    quick = {"epochs": 3, "train_size": 640}
    forget_bias = 3.0

    symbols: int = 4
    length: int = 3
    delay: int = 20
    train_size: int = 2048
    test_size: int = 512
    data_seed: int = 0
    _fixed: dict[str, Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for k in ("symbols", "length", "train_size", "test_size"):
            if getattr(self, k) <= 0:
                raise ValueError(f"recall: {k} must be positive, got {getattr(self, k)}")
        if self.delay < 0:
            raise ValueError(f"recall: delay must be non-negative, got {self.delay}")
        g = torch.Generator().manual_seed(self.data_seed)
        for split in ("valid", "test"):
            self._fixed[split] = self.draw(self.test_size, g)

    @property
    def steps(self) -> int:
        return 2 * self.length + self.delay

    @property
    def n_in(self) -> int:
        return self.symbols + self.length

    @property
    def n_out(self) -> int:
        return self.symbols

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """n random symbol sequences (n, length)."""
        return torch.randint(0, self.symbols, (n, self.length), generator=generator)

    def batch(self, seqs: Tensor) -> Batch:
        """The inputs and per-step targets of symbol sequences (B, length)."""
        B, K, n = len(seqs), self.symbols, self.length
        xs = torch.zeros(self.steps, B, self.n_in)
        xs[:n, :, :K] = one_hot(seqs.T, K)
        recall = n + self.delay
        targets: list[Tensor | None] = [None] * self.steps
        for i in range(n):
            xs[recall + i, :, K + i] = 1.0
            targets[recall + i] = one_hot(seqs[:, i], K)
        return Batch(xs, targets)

    #: the per-step loss (closed-form output error for the online rules)
    loss_fn = cross_entropy

    def metric(self) -> Metric:
        return StepAccuracy()

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        seqs = self.draw(self.train_size, generator)
        for i in range(0, self.train_size, batch_size):
            yield self.batch(seqs[i : i + batch_size])

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        seqs = self._fixed[self.check_split(split)]
        for i in range(0, len(seqs), batch_size):
            yield self.batch(seqs[i : i + batch_size])

    def num_train_batches(self, batch_size: int) -> int:
        return math.ceil(self.train_size / batch_size)
