"""digits: the 8×8 handwritten digits (as in scikit-learn), spike-encoded: the fast default task.

Data: the 1,797 images of 8×8 pixels (integers 0–16) and their labels (10 classes) of the UCI
"Optical Recognition of Handwritten Digits" test set (E. Alpaydin, C. Kaynak, 1998), in the
copy that scikit-learn distributes as ``sklearn.datasets.load_digits``. They ship with ostl in
``digits.npz`` next to this module (45 KB, read with numpy; the licence and attribution are in
``digits-LICENSE.txt``), so the default task needs neither scikit-learn nor a download; the
test suite checks the file against ``load_digits()`` when scikit-learn is installed. A seeded
split (``data_seed``) keeps 20 % for test and 10 % for validation, the rest for training.

Encoding: pixels (0–16) are scaled to [0, 1] and encoded over ``steps`` time steps, either as a
Bernoulli rate code (each pixel spikes with probability ``max_rate · x`` at every step; fresh
noise every training epoch, frozen noise for valid/test) or a latency code (one spike per pixel,
brighter earlier).

Targets and loss: the class as a float one-hot vector at *every* step, softmax cross-entropy per
step. A target at every step gives the online rules a learning signal at every step and works
for all rules alike (BPTT, OSTL, and OSTTP's target projection). Metric: accuracy of the logits
summed over the steps. ``targets_at="last"`` gives the class at the last step only (loss and
metric there): the setting where OSTTP's hidden layers get one signal per sequence.

Default network: 64 → SNU(128) → linear readout 10, the SNU threshold lowered to b = -0.5 and
input weights ×2 so hidden neurons fire from the first epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import torch
from torch import Tensor

from .base import Defaults, Task
from .data import (
    Batch,
    batch_slices,
    latency_code,
    one_hot,
    rate_code,
    split_indices,
    step_targets,
)
from .losses import cross_entropy
from .metrics import Metric, SequenceAccuracy

__all__ = ["Digits", "load_digits"]


#: The data file shipped with the package: ``images`` (1797, 8, 8) and ``labels`` (1797,),
#: both uint8, in scikit-learn's order.
DATA_FILE = "digits.npz"


def load_raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """The shipped data as stored: images (1797, 8, 8) uint8 in 0..16, labels (1797,) uint8."""
    with resources.files("ostl.tasks").joinpath(DATA_FILE).open("rb") as f, np.load(f) as d:
        return d["images"], d["labels"]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Images (1797, 64) float32 in [0, 1] (pixel / 16) and labels (1797,) int64."""
    images, labels = load_raw_digits()
    return (images.reshape(len(images), 64) / 16.0).astype(np.float32), labels.astype(np.int64)


@dataclass
class Digits(Task):
    """8×8 digits, rate- or latency-coded over ``steps`` steps; see the module docstring.

    Args:
        steps: time steps per image (T).
        encoding: ``"rate"`` or ``"latency"``.
        max_rate: spike probability per step of a white pixel (rate code).
        train_size: use only the first ``train_size`` training images (None: all).
        test_size: use only the first ``test_size`` valid/test images (None: all).
        data_seed: seed of the split and of the frozen valid/test encodings.
        targets_at: the class at ``"every"`` step (default) or at the ``"last"`` one only.
    """

    name = "digits"
    summary = "8x8 handwritten digits (UCI), rate/latency spike code, classification (accuracy)"
    defaults = Defaults(cell="snu", hidden=(128,), epochs=10, batch_size=32, lr=2e-3)
    spiking_input = True
    input_gain = 2.0
    quick = {"epochs": 3, "train_size": 600}

    steps: int = 20
    encoding: str = "rate"
    max_rate: float = 1.0
    train_size: int | None = None
    test_size: int | None = None
    data_seed: int = 0
    targets_at: str = "every"
    _data: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, init=False, repr=False)
    _frozen: dict[str, Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"digits: steps must be positive, got {self.steps}")
        if self.encoding not in ("rate", "latency"):
            raise ValueError(f"digits: encoding must be 'rate' or 'latency', got {self.encoding!r}")
        if not 0 < self.max_rate <= 1:
            raise ValueError(f"digits: max_rate must be in (0, 1], got {self.max_rate}")
        if self.targets_at not in ("every", "last"):
            raise ValueError(
                f"digits: targets_at must be 'every' or 'last', got {self.targets_at!r}"
            )
        x, y = load_digits()
        test, valid, train = split_indices(len(x), (0.2, 0.1), self.data_seed)
        limits = {"train": self.train_size, "valid": self.test_size, "test": self.test_size}
        for split, idx in (("train", train), ("valid", valid), ("test", test)):
            idx = idx[: limits[split]] if limits[split] is not None else idx
            self._data[split] = (torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))
        g = torch.Generator().manual_seed(self.data_seed + 1)
        for split in ("valid", "test"):
            self._frozen[split] = self.encode(self._data[split][0], g)

    @property
    def n_in(self) -> int:
        return 64

    @property
    def n_out(self) -> int:
        return 10

    def split_size(self, split: str) -> int:
        return len(self._data[split][1])

    def encode(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Images (B, 64) in [0, 1] -> spikes (steps, B, 64)."""
        if self.encoding == "rate":
            return rate_code(images, self.steps, generator, self.max_rate)
        return latency_code(images, self.steps)

    #: the per-step loss (closed-form output error for the online rules)
    loss_fn = cross_entropy

    def metric(self) -> Metric:
        return SequenceAccuracy()

    def _batch(self, xs: Tensor, labels: Tensor) -> Batch:
        return Batch(xs, step_targets(one_hot(labels, 10), self.steps, self.targets_at))

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        images, labels = self._data["train"]
        for idx in batch_slices(len(labels), batch_size, generator):
            yield self._batch(self.encode(images[idx], generator), labels[idx])

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        spikes, labels = self._frozen[self.check_split(split)], self._data[split][1]
        for idx in batch_slices(len(labels), batch_size):
            yield self._batch(spikes[:, idx], labels[idx])

    def num_train_batches(self, batch_size: int) -> int:
        return math.ceil(self.split_size("train") / batch_size)
