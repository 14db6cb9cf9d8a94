"""shd, ssc: the Spiking Heidelberg Digits and Spiking Speech Commands, read through Tonic.

Data: the HDF5 files of Cramer et al. (2020), "The Heidelberg Spiking Data Sets for the
Systematic Evaluation of Spiking Neural Networks": spikes of an artificial cochlea in 700
channels; 20 classes for SHD (the digits 0–9 spoken in English and German), 35 for SSC (words of
Google's Speech Commands). ostl never downloads them: get them from
https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/ , unpack them, and give their
folder as the task option ``root`` or in the environment variable ``$OSTL_DATA``. Accepted
layouts (the first that holds every file wins):

- shd: ``<root>/SHD/shd_train.h5`` and ``<root>/SHD/shd_test.h5`` (Tonic's own layout), or
  ``<root>/shd_train.h5`` and ``<root>/shd_test.h5``;
- ssc: ``ssc_train.h5``, ``ssc_valid.h5`` and ``ssc_test.h5`` in ``<root>/SSC/`` or in ``<root>/``.

Tonic's loaders ``tonic.datasets.SHD`` and ``SSC`` read them. Binning, cache, memory, splits and
targets: :mod:`ostl.tasks.events`. Here: the first ``duration_ms`` = 1000 ms of every sample in
``steps`` = 100 bins (10 ms); ``channels`` below 700 sums groups of 700 / channels neighbouring
channels (140: five each). The conversion takes roughly a minute for SHD and ten for SSC, once.
Validation: a seeded 10 % of ``shd_train.h5``; ``ssc_valid.h5`` for ssc.

Default networks: 700 → SNU(128) → 20 (shd) and 700 → SNU(256) → 35 (ssc), the SNU threshold
lowered to b = -0.5 and the input weights ×2 so hidden neurons fire on the sparse input from
the start; ``--recurrent`` adds recurrent weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import Defaults
from .data import require
from .events import EventTask, open_offline

__all__ = ["SHD", "SSC"]

#: Where the SHD and SSC files are published.
ZENKE_URL = "https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/"


@dataclass
class _Heidelberg(EventTask):
    """SHD and SSC: one HDF5 file per split, 700 channels.

    Args:
        channels: input channels: 700, or a divisor of 700 (sums 700 / channels neighbours).
    """

    sensor_size = (700, 1, 1)
    url = ZENKE_URL

    channels: int = 700

    def _check_options(self) -> None:
        ok = isinstance(self.channels, int) and self.channels > 0 and 700 % self.channels == 0
        self._check(ok, "channels", "a divisor of 700 (700, 350, 175, 140, 100, 70, ...)")
        super()._check_options()

    @property
    def n_in(self) -> int:
        return self.channels

    def count(self, path: Path) -> int:
        h5py = require("h5py", "h5py")
        with h5py.File(path, "r") as f:
            return len(f["labels"])

    def pool_frames(self, frames: np.ndarray) -> np.ndarray:
        return frames.reshape(len(frames), self.channels, -1).sum(-1)


@dataclass
class SHD(_Heidelberg):
    """Spiking Heidelberg Digits through Tonic, binned; see the module docstring."""

    name = "shd"
    summary = "Spiking Heidelberg Digits (files + Tonic), 700 channels, 20 classes (accuracy)"
    defaults = Defaults(cell="snu", hidden=(128,), epochs=10, batch_size=32, lr=2e-3)
    tonic_name = "SHD"
    files = {"train": "shd_train.h5", "test": "shd_test.h5"}
    n_classes = 20

    def open(self, folder: Path, split: str, transform: Callable[[Any], Any]) -> Any:
        tonic = require("tonic", "tonic")
        return open_offline(tonic.datasets.SHD, folder, train=split == "train", transform=transform)


@dataclass
class SSC(_Heidelberg):
    """Spiking Speech Commands through Tonic, binned; see the module docstring."""

    name = "ssc"
    summary = "Spiking Speech Commands (files + Tonic), 700 channels, 35 classes (accuracy)"
    defaults = Defaults(cell="snu", hidden=(256,), epochs=5, batch_size=64, lr=2e-3)
    tonic_name = "SSC"
    files = {"train": "ssc_train.h5", "valid": "ssc_valid.h5", "test": "ssc_test.h5"}
    n_classes = 35

    def open(self, folder: Path, split: str, transform: Callable[[Any], Any]) -> Any:
        tonic = require("tonic", "tonic")
        return open_offline(tonic.datasets.SSC, folder, split=split, transform=transform)
