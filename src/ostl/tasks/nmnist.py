"""nmnist: N-MNIST (MNIST digits seen by an event camera in three saccades), read through Tonic.

Data: Orchard et al. (2015), "Converting static image datasets to spiking neuromorphic datasets
using saccades": 60,000 training and 10,000 test recordings of a 34×34 sensor with two
polarities (ON/OFF), one ``.bin`` file each, in the folders ``Train/<digit>/`` and
``Test/<digit>/`` of the published archives. ostl never downloads them: get them from
https://www.garrickorchard.com/datasets/n-mnist (the files are on
https://data.mendeley.com/datasets/468j46mzdv/1), unpack both archives, and give the folder as
the task option ``root`` or in the environment variable ``$OSTL_DATA``. Accepted layouts (the
first that holds both folders wins): ``<root>/NMNIST/Train`` and ``<root>/NMNIST/Test`` (Tonic's
own layout, what ``tonic.datasets.NMNIST(save_to=<root>)`` reads), or ``<root>/Train`` and
``<root>/Test``. Tonic's loader (``tonic.datasets.NMNIST``, downloading switched off) reads the
events; the class of a recording is its folder's digit.

Binning, cache, memory, splits and targets: :mod:`ostl.tasks.events`. Here: the first
``duration_ms`` = 300 ms of every recording (its three saccades of about 100 ms each) in
``steps`` = 30 bins (10 ms). A frame is flattened as (polarity, y, x): 2 × 34 × 34 = 2312
inputs; ``pool`` sums pool × pool pixel blocks per polarity (2: 2 × 17 × 17 = 578 inputs).
Validation: a seeded 10 % of the training recordings (Tonic lists them sorted by class; the
shuffle before ``train_size`` keeps every class in a subset). Held in memory: at most 5 bytes
per event of the recordings used, no more than their ``.bin`` files take (5 bytes an event).

Default network: 2312 → SNU(128) → 10, input weights ×2 (as mnist).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import Defaults
from .data import require
from .events import EventTask, open_offline

__all__ = ["NMNIST"]

SIDE = 34  # pixels per side of the sensor
POOLS = (1, 2, 17, 34)  # the divisors of SIDE


def _recordings(folder: Path) -> Iterator[Path]:
    """The recordings under ``folder``, as Tonic finds them (files whose name ends in "bin")."""
    for path, _, files in os.walk(folder):
        for name in files:
            if name.endswith("bin"):
                yield Path(path, name)


@dataclass
class NMNIST(EventTask):
    """N-MNIST through Tonic, binned; see the module docstring.

    Args:
        steps: time steps per recording (T): equal bins of the first duration_ms milliseconds.
        duration_ms: milliseconds of every recording that are binned (later events are dropped).
        pool: sum pool × pool pixel blocks: 1 (2312 inputs), 2 (578), 17 (8) or 34 (2).
    """

    name = "nmnist"
    summary = "N-MNIST (files + Tonic), 34x34x2 event camera binned to frames (accuracy)"
    defaults = Defaults(cell="snu", hidden=(128,), epochs=3, batch_size=32, lr=2e-3)
    tonic_name = "NMNIST"
    files = {"train": "Train", "test": "Test"}
    n_classes = 10
    sensor_size = (SIDE, SIDE, 2)
    url = "https://www.garrickorchard.com/datasets/n-mnist"

    steps: int = 30
    duration_ms: float = 300.0
    pool: int = 1

    def _check_options(self) -> None:
        self._check(self.pool in POOLS and isinstance(self.pool, int), "pool", "1, 2, 17 or 34")
        super()._check_options()

    @property
    def n_in(self) -> int:
        return 2 * (SIDE // self.pool) ** 2

    def open(self, folder: Path, split: str, transform: Callable[[Any], Any]) -> Any:
        tonic = require("tonic", "tonic")
        train = split == "train"
        return open_offline(tonic.datasets.NMNIST, folder, train=train, transform=transform)

    def count(self, path: Path) -> int:
        return sum(1 for _ in _recordings(path))

    def fingerprint(self, path: Path) -> str:
        stats = [p.stat() for p in _recordings(path)]
        size = sum(s.st_size for s in stats)
        newest = max((s.st_mtime_ns for s in stats), default=0)
        return f"{len(stats)}-{size}-{newest}"

    def pool_frames(self, frames: np.ndarray) -> np.ndarray:
        side, k = SIDE // self.pool, self.pool
        blocks = frames.reshape(len(frames), 2, side, k, side, k)
        return blocks.sum((3, 5)).reshape(len(frames), -1)
