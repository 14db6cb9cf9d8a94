"""Event data sets read through Tonic from files you download: what shd, ssc
(:mod:`ostl.tasks.heidelberg`) and nmnist (:mod:`ostl.tasks.nmnist`) share.

Files: ostl never downloads them (each task's module says which files, and where to get them).
Give their folder as the task option ``root`` or in the environment variable ``$OSTL_DATA``. A
task looks in ``<root>/<NAME>`` (``SHD``, ``SSC``, ``NMNIST``: Tonic's own layout, the folder
``tonic.datasets.SHD(save_to=<root>)`` reads) and then in ``<root>`` itself, and takes the first
that holds every file; if neither does, a one-line :class:`~ostl.tasks.data.DataNotFoundError`
names the files, both folders and where to get them. The downloaded archives need not be kept.
Tonic's own loaders read the events, with its downloading switched off (Tonic would otherwise
also want the archives); they need the ``events`` extra (``pip install "ostl[events]"``: Tonic
and h5py).

Binning (``tonic.transforms.ToFrame`` with a fixed time window): the first ``duration_ms``
milliseconds of every sample (later events are dropped) in ``steps`` equal bins, the same clock
for every sample. Input per step: 1 where an input had an event in the bin (``binary=True``, the
default: counts are clipped to 1), or the event count (``binary=False``).

Cache: the conversion runs once (a few milliseconds a sample; a message and a progress bar say
so) and its counts (uint8, clipped at 255) are cached under :func:`ostl.tasks.data.cache_dir` in
compressed ``.npz`` files keyed by the binning options, the source files' size and modification
time and the samples used (a run with ``train_size`` converts only its samples). In memory the
counts are held sparsely: 5 bytes per non-empty (sample, step, input) bin, so at most 5 bytes per
event of the samples used, plus one dense float32 batch (T, B, N) at a time.

Splits: train and test are the data set's own; validation is its own file where it has one, else
a seeded 10 % (``data_seed``) of the training samples. Every split is shuffled with
``data_seed`` before ``train_size`` / ``test_size`` keep its first samples (so a subset holds
every class even if the files are sorted by class).

Targets, loss, metric: as digits: the class as a float one-hot vector at every step, softmax
cross-entropy per step, accuracy of the logits summed over the steps.
"""

from __future__ import annotations

import abc
import hashlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..errors import OptionError, TargetError
from .base import IndexedTask
from .data import (
    Batch,
    DataNotFoundError,
    cache_dir,
    one_hot,
    preparing,
    require,
    split_indices,
)
from .losses import cross_entropy
from .metrics import Metric, SequenceAccuracy

__all__ = ["EventFrames", "EventTask", "DATA_ENV", "open_offline"]

#: The environment variable naming the data folder when the task option ``root`` is None.
DATA_ENV = "OSTL_DATA"
#: Share of the train file kept for validation when a data set has no validation file.
VALID_FRACTION = 0.1
#: Version of the cache files' layout (part of their names).
CACHE_VERSION = 1


class _Offline:
    """Mixin for a Tonic data set class: read the unpacked files in ``folder``, never download.

    Tonic looks in ``<save_to>/<class name>`` and, unless it also finds the downloaded archive
    there, downloads it; ostl has already found the unpacked files itself.
    """

    folder = ""

    @property
    def location_on_system(self) -> str:
        return self.folder

    @location_on_system.setter
    def location_on_system(self, value: str) -> None:
        pass  # Tonic's <save_to>/<class name>: the files are in `folder` instead

    def _check_exists(self) -> bool:
        return True

    def download(self) -> None:
        raise DataNotFoundError(f"the data files are not in {self.folder} (ostl never downloads)")


def open_offline(cls: type, folder: Path, **kwargs: Any) -> Any:
    """Tonic's data set ``cls`` (e.g. ``tonic.datasets.SHD``) on the unpacked files in
    ``folder``; ``kwargs`` go to its constructor (``train``, ``split``, ``transform``)."""
    offline = type(cls.__name__, (_Offline, cls), {"folder": str(folder)})
    return offline(str(folder), **kwargs)


class EventFrames(NamedTuple):
    """Binned spike counts of some samples of one file, held sparsely.

    Sample ``i``'s non-empty bins are ``bins[offsets[i]:offsets[i + 1]]`` (flat positions
    ``step * n_in + input``) with their counts in ``counts`` (clipped at 255).
    """

    offsets: np.ndarray  # (S + 1,) int64
    bins: np.ndarray  # (nnz,) int32
    counts: np.ndarray  # (nnz,) uint8
    labels: np.ndarray  # (S,) int64

    def dense(self, samples: np.ndarray, steps: int, n_in: int, binary: bool) -> Tensor:
        """Inputs (steps, B, n_in) float32 of the samples at positions ``samples`` (B,)."""
        starts, ends = self.offsets[samples], self.offsets[samples + 1]
        pos = np.concatenate([np.zeros(0, np.int64), *map(np.arange, starts, ends)])
        rows = np.repeat(np.arange(len(samples)), ends - starts)
        out = np.zeros((len(samples), steps * n_in), np.float32)
        out[rows, self.bins[pos]] = 1.0 if binary else self.counts[pos]
        return torch.from_numpy(out.reshape(len(samples), steps, n_in).transpose(1, 0, 2).copy())


def convert(
    dataset: Any,
    samples: np.ndarray,
    frame: Callable[[np.ndarray], np.ndarray],
    what: str,
    cache: Path,
) -> EventFrames:
    """``dataset[i]`` for every ``i`` in ``samples`` (Tonic reads and bins the events), each
    frame array made (steps, n_in) by ``frame``, gathered sparsely; ``what`` and ``cache`` name
    the preparation in the message the user sees."""
    offsets = np.zeros(len(samples) + 1, np.int64)
    labels = np.zeros(len(samples), np.int64)
    bins, counts = [np.zeros(0, np.int32)], [np.zeros(0, np.uint8)]
    for k in preparing(what, range(len(samples)), cache, unit="sample"):
        frames, label = dataset[int(samples[k])]
        flat = np.minimum(frame(np.asarray(frames)).reshape(-1), 255)
        nonzero = np.flatnonzero(flat)
        bins.append(nonzero.astype(np.int32))
        counts.append(flat[nonzero].astype(np.uint8))
        offsets[k + 1] = offsets[k] + len(nonzero)
        labels[k] = int(label)
    return EventFrames(offsets, np.concatenate(bins), np.concatenate(counts), labels)


def cached(path: Path, build: Callable[[Path], EventFrames]) -> EventFrames:
    """The frames cached at ``path``, or ``build(path)`` written there (atomically)."""
    if path.exists():
        with np.load(path) as z:
            return EventFrames(*(z[name] for name in EventFrames._fields))
    frames = build(path)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    # An .npz (np.load reads it) at zlib level 1: as small as np.savez_compressed's level 6
    # on these arrays, and several times faster to write.
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, array in frames._asdict().items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)
    tmp.replace(path)  # atomic: concurrent runs never read half a file
    return frames


@dataclass
class EventTask(IndexedTask):
    """An event data set binned into ``steps`` frames, one class per sample (see the module
    docstring); subclasses name the files and read them through Tonic.

    Args:
        steps: time steps per sample (T): equal bins of the first duration_ms milliseconds.
        duration_ms: milliseconds of every sample that are binned (later spikes are dropped).
        binary: input 1 where a channel spiked in a bin (True) or the spike count (False).
        train_size: use only the first ``train_size`` (shuffled) training samples (None: all).
        test_size: use only the first ``test_size`` (shuffled) valid/test samples (None: all).
        data_seed: seed of the validation split and of the order of every split.
        root: folder holding the files, or Tonic's subfolder of them (SHD/, SSC/, NMNIST/);
            None: the environment variable OSTL_DATA.
    """

    #: Tonic's class and folder name (``tonic.datasets.SHD``, ``<root>/SHD``).
    tonic_name: ClassVar[str]
    #: The files (or folders) of the data set: split -> name; "valid" may be missing.
    files: ClassVar[dict[str, str]]
    n_classes: ClassVar[int]
    #: Tonic's (x, y, polarities) size of the sensor.
    sensor_size: ClassVar[tuple[int, int, int]]
    #: Where the files are published.
    url: ClassVar[str]
    spiking_input = True
    input_gain = 2.0
    quick = {"epochs": 1, "train_size": 1000, "test_size": 300}

    steps: int = 100
    duration_ms: float = 1000.0
    binary: bool = True
    train_size: int | None = None
    test_size: int | None = None
    data_seed: int = 0
    root: str | None = None
    _data: dict[str, tuple[EventFrames, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        self._check_options()
        self._load(self.find_folder())

    def _check(self, ok: bool, option: str, expected: str) -> None:
        if not ok:
            value = getattr(self, option)
            raise OptionError(f"{self.name}: {option} must be {expected}, got {value!r}")

    def _check_options(self) -> None:
        def whole(v: object, least: int = 1) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= least

        self._check(whole(self.steps), "steps", "a positive integer")
        self._check(
            isinstance(self.duration_ms, int | float) and self.duration_ms > 0,
            "duration_ms",
            "a positive number of milliseconds",
        )
        for option in ("train_size", "test_size"):
            value = getattr(self, option)
            self._check(value is None or whole(value), option, "None or a positive integer")
        self._check(whole(self.data_seed, 0), "data_seed", "a non-negative integer")
        self._check(self.root is None or isinstance(self.root, str), "root", "a folder or None")
        # flat bin positions are int32 in the cache
        self._check(self.steps * self.n_in < 2**31, "steps", f"below {2**31 // self.n_in}")

    def find_folder(self) -> Path:
        """The folder holding every file of :attr:`files` (see the module docstring)."""
        names = list(self.files.values())
        root = self.root if self.root is not None else os.environ.get(DATA_ENV)
        if not root:
            where = ", ".join(f"{self.tonic_name}/{n}" for n in names)
            raise DataNotFoundError(
                f"{self.name}: no data folder: set the task option root=FOLDER or ${DATA_ENV} "
                f"to a folder holding {where} (get them from {self.url}; ostl never downloads)"
            )
        base = Path(root).expanduser()
        candidates = (base / self.tonic_name, base)
        for folder in candidates:
            if all((folder / n).exists() for n in names):
                return folder
        raise DataNotFoundError(
            f"{self.name}: expected {', '.join(names)} in {candidates[0]} or {candidates[1]}: "
            f"get them from {self.url} and unpack them there (ostl never downloads)"
        )

    @property
    def n_out(self) -> int:
        return self.n_classes

    @abc.abstractmethod
    def open(self, folder: Path, split: str, transform: Callable[[Any], Any]) -> Any:
        """Tonic's data set of ``files[split]`` in ``folder`` (see :func:`open_offline`)."""

    @abc.abstractmethod
    def count(self, path: Path) -> int:
        """How many samples the file (or folder) ``path`` holds."""

    def fingerprint(self, path: Path) -> str:
        """Changes when the file ``path`` does (part of the cache key)."""
        stat = path.stat()
        return f"{stat.st_size}-{stat.st_mtime_ns}"

    @abc.abstractmethod
    def pool_frames(self, frames: np.ndarray) -> np.ndarray:
        """(steps, raw inputs) counts, as Tonic's frames flatten -> (steps, n_in)."""

    def _frame(self, frames: np.ndarray) -> np.ndarray:
        """Tonic's frames of one sample -> exactly ``steps`` rows of pooled counts."""
        x = frames.reshape(len(frames), -1)[: self.steps]
        if len(x) < self.steps:  # a sample without events: Tonic returns a single frame
            x = np.concatenate([x, np.zeros((self.steps - len(x), x.shape[1]), x.dtype)])
        return self.pool_frames(x)

    def _transform(self) -> Any:
        tonic = require("tonic", "tonic")
        end = self.duration_ms * 1000.0  # Tonic's timestamps are in microseconds
        return tonic.transforms.ToFrame(
            sensor_size=self.sensor_size,
            time_window=end / self.steps,
            start_time=0,
            end_time=end,
            include_incomplete=True,  # float rounding may lose the last bin otherwise
        )

    def _frames(self, folder: Path, split: str, samples: np.ndarray) -> EventFrames:
        """The binned samples (sorted indices) of the file of ``split``, cached."""
        path = folder / self.files[split]
        key = hashlib.sha1(self.fingerprint(path).encode() + samples.tobytes()).hexdigest()[:16]
        name = f"{self.name}-v{CACHE_VERSION}-{split}-{self.steps}x{self.n_in}"
        name += f"-{self.duration_ms:g}ms-{key}.npz"

        def build(cache: Path) -> EventFrames:
            dataset = self.open(folder, split, self._transform())
            return convert(dataset, samples, self._frame, f"{self.name} {split}", cache)

        return cached(cache_dir() / name, build)

    def _load(self, folder: Path) -> None:
        limits = {"train": self.train_size, "valid": self.test_size, "test": self.test_size}
        for source, filename in self.files.items():
            n = self.count(folder / filename)
            if n == 0:
                raise DataNotFoundError(f"{self.name}: {folder / filename} holds no samples")
            if source == "train" and "valid" not in self.files:
                valid, train = split_indices(n, (VALID_FRACTION,), self.data_seed)
                parts = {"train": train, "valid": valid}
            else:
                parts = {source: split_indices(n, (), self.data_seed)[0]}
            parts = {s: idx[: limits[s]] for s, idx in parts.items()}
            needed = np.unique(np.concatenate(list(parts.values())))
            frames = self._frames(folder, source, needed)
            if not 0 <= frames.labels.min() <= frames.labels.max() < self.n_classes:
                raise TargetError(
                    f"{self.name}: {folder / filename} holds labels {frames.labels.min()}.."
                    f"{frames.labels.max()}, expected 0..{self.n_classes - 1}: is it the "
                    f"{self.tonic_name} data set?"
                )
            for s, idx in parts.items():
                self._data[s] = (frames, np.searchsorted(needed, idx))

    def split_size(self, split: str) -> int:
        """How many samples ``split`` ("train", "valid" or "test") holds."""
        return len(self._data[split][1])

    def labels(self, split: str) -> Tensor:
        """The classes (int64) of ``split``'s samples, in the order of its batches."""
        frames, pos = self._data[split]
        return torch.from_numpy(frames.labels[pos])

    #: the per-step loss (closed-form output error for the online rules)
    loss_fn = cross_entropy

    def metric(self) -> Metric:
        return SequenceAccuracy()

    def make_batch(self, split: str, idx: Tensor) -> Batch:
        frames, pos = self._data[split]
        chosen = pos[idx.numpy()]
        xs = frames.dense(chosen, self.steps, self.n_in, self.binary)
        labels = torch.from_numpy(frames.labels[chosen])
        k = self.n_classes
        return Batch(xs, one_hot(labels, k).expand(self.steps, len(labels), k))
