"""Shared data helpers of the tasks: batches, spike codes, splits, caches, optional imports,
and the message of a one-time data preparation (:func:`preparing`).

Time-major tensors everywhere: a batch of inputs is ``xs`` (T, B, N) and its targets ``(T, B, K)``
(float: one-hot vectors for classes, so target-projection rules such as OSTTP can use them), or a
length-T list whose entries are ``(B, K)`` tensors or ``None`` at steps without a target.

Tasks yield their batches on the CPU; :meth:`Batch.to` puts one where the network lives (the
one place a batch is moved: training, evaluation and the metrics all go through it).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple, TextIO, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..errors import OSTLError

__all__ = [
    "Batch",
    "MissingDependencyError",
    "DataNotFoundError",
    "require",
    "cache_dir",
    "preparing",
    "is_terminal",
    "one_hot",
    "rate_code",
    "latency_code",
    "split_indices",
    "batch_slices",
    "step_targets",
    "OneHotSteps",
    "transfer",
]


class OneHotSteps(Sequence[Tensor]):
    """Per-step float one-hot targets built on access from labels (T, B).

    Saves holding a (T, B, V) float tensor for large vocabularies; ``labels`` stays available
    to metrics that need only the class.
    """

    def __init__(self, labels: Tensor, n: int, dtype: torch.dtype = torch.float32) -> None:
        self.labels, self.n, self.dtype = labels, n, dtype

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, t: int) -> Tensor:  # type: ignore[override]
        return one_hot(self.labels[t], self.n, self.dtype)

    def to(self, device: torch.device | str) -> OneHotSteps:
        """The same targets with their labels on ``device`` (see :func:`transfer`)."""
        labels = transfer(self.labels, device)
        return self if labels is self.labels else OneHotSteps(labels, self.n, self.dtype)


Targets = Tensor | Sequence[Tensor | None]


class MissingDependencyError(OSTLError, ImportError):
    """A task needs a package that is not installed."""


class DataNotFoundError(OSTLError, FileNotFoundError):
    """A task's data files are not where it looks: the message names the files, the folders
    searched and where to get them (nothing is ever downloaded)."""


class Batch(NamedTuple):
    """One batch of sequences.

    Attributes:
        xs: inputs (T, B, N).
        targets: (T, B, K) float tensor, or a length-T list of (B, K) tensors / None.
        mask: (T, B) bool, the (step, sample) pairs that count in the metric; None: every
            step with a target counts. Padded steps of variable-length sequences are False.
        reset: start new sequences before this batch (resting state, zero traces). False for
            a stream cut into consecutive chunks (language modelling): the state carries over.
    """

    xs: Tensor
    targets: Targets
    mask: Tensor | None = None
    reset: bool = True

    def to(self, device: torch.device | str) -> Batch:
        """This batch with its inputs, targets and mask on ``device`` (``reset`` kept).

        Targets keep their form: a tensor, a list with its None entries, or
        :class:`OneHotSteps` (its labels moved). Tensors already on ``device`` are not copied
        (a batch already there keeps its tensors). On CUDA, every copy is asynchronous
        (``non_blocking``) from pinned memory: see :func:`transfer`.
        """
        device = torch.device(device)
        targets: Targets
        if isinstance(self.targets, Tensor):
            targets = transfer(self.targets, device)
        elif isinstance(self.targets, OneHotSteps):
            targets = self.targets.to(device)
        else:
            targets = [None if t is None else transfer(t, device) for t in self.targets]
        mask = None if self.mask is None else transfer(self.mask, device)
        return Batch(transfer(self.xs, device), targets, mask, self.reset)


def transfer(t: Tensor, device: torch.device | str) -> Tensor:
    """``t`` on ``device``: ``t`` itself if it is there already, else a copy.

    From the CPU to a CUDA device the copy is asynchronous (``non_blocking=True``) from pinned
    (page-locked) memory: ``t`` is first copied to pinned memory unless it is pinned already
    (e.g. by a DataLoader with ``pin_memory=True``), so that the host goes on queueing work
    while the copy runs, and the pinned buffer stays valid until the copy is done (PyTorch's
    pinned-memory allocator keeps it until then). Other moves are ordinary copies.
    """
    device = torch.device(device)
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        pinned = t if t.is_pinned() else t.pin_memory()
        return pinned.to(device, non_blocking=True)
    return t.to(device)


def require(module: str, package: str) -> ModuleType:
    """Import an optional dependency, or raise :class:`MissingDependencyError` saying how."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"this task needs the package {package!r} (import name {module!r}), which is not "
            f"installed: run `make install` or `pip install {package}` ({e})"
        ) from None


def cache_dir() -> Path:
    """Where parsed data sets are cached: ``$OSTL_CACHE`` or ``~/.cache/ostl`` (never the repo).

    Falls back to a folder under the system's temporary directory when the home directory is
    not writable (some CI runners).
    """
    root = os.environ.get("OSTL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ostl")
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = Path(tempfile.gettempdir()) / "ostl-cache"
        path.mkdir(parents=True, exist_ok=True)
    return path


T = TypeVar("T")


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (False for a closed or replaced stream): progress bars
    only there, plain lines elsewhere."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def preparing(
    what: str,
    items: Sequence[T],
    cache: Path | None = None,
    *,
    unit: str = "item",
    stream: TextIO | None = None,
) -> Iterator[T]:
    """``items``, one by one, while telling the user that a one-time data preparation runs.

    A task that builds its data once and caches it (chorales parses music21's corpus, about a
    minute and a half) calls this instead of waiting in silence. On ``stream`` (default:
    stderr) it prints ``preparing <what> data (one time, cached in <cache>)...``, then a
    progress bar over the items on a terminal (nothing more elsewhere, so a log stays short),
    and when the items are done ``<what> data ready: <n> <unit>s in <s> s``. In a torchrun
    group only the first process prints (each prepares its own copy).
    """
    from ..distributed import launched_as_main

    if not launched_as_main():
        yield from items
        return
    stream = stream or sys.stderr
    where = f" (one time, cached in {cache})" if cache is not None else ""
    print(f"preparing {what} data{where}...", file=stream, flush=True)
    t0 = time.perf_counter()
    if is_terminal(stream):
        from tqdm import tqdm

        yield from tqdm(items, desc=what, unit=unit, leave=False, file=stream)
    else:
        yield from items
    seconds = time.perf_counter() - t0
    print(f"{what} data ready: {len(items)} {unit}s in {seconds:.0f} s", file=stream, flush=True)


def one_hot(labels: Tensor, n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Float one-hot vectors (..., n) of integer labels (...)."""
    return torch.nn.functional.one_hot(labels.long(), n).to(dtype)


def rate_code(x: Tensor, steps: int, generator: torch.Generator, max_rate: float = 1.0) -> Tensor:
    """Bernoulli rate code: intensities x (B, N) in [0, 1] -> spikes (steps, B, N).

    Each input spikes at every step with probability ``max_rate * x``, independently.
    """
    p = (x.clamp(0, 1) * max_rate).expand(steps, *x.shape)
    return (torch.rand(p.shape, generator=generator, dtype=x.dtype) < p).to(x.dtype)


def latency_code(x: Tensor, steps: int, threshold: float = 0.1) -> Tensor:
    """Latency code: one spike per input at step round((1 - x)(steps - 1)); none if x < threshold.

    Brighter inputs spike earlier. x (B, N) in [0, 1] -> spikes (steps, B, N).
    """
    t = ((1 - x.clamp(0, 1)) * (steps - 1)).round().long()
    out = torch.zeros(steps, *x.shape, dtype=x.dtype)
    out.scatter_(0, t.unsqueeze(0), 1.0)
    return out * (x >= threshold).to(x.dtype)


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """A seeded random partition of range(n) into len(fractions) + 1 parts (the rest last)."""
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum([round(f * n) for f in fractions])
    return np.split(perm, cuts)


def batch_slices(
    n: int, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[Tensor]:
    """Index tensors of consecutive batches over range(n), shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


def step_targets(target: Tensor, steps: int, when: str) -> Targets:
    """Per-step targets from one target per sample (B, K).

    ``when="every"``: the target at every step, a (steps, B, K) tensor; ``"last"``: only at the
    last step, None elsewhere.
    """
    if when == "every":
        return target.expand(steps, *target.shape)
    if when == "last":
        out: list[Tensor | None] = [None] * steps
        out[-1] = target
        return out
    raise ValueError(f"targets must be given at 'every' step or the 'last' one, got {when!r}")


def as_list(targets: Targets) -> list[Any]:
    """The targets of a batch as a length-T list (tensor rows or None)."""
    return list(targets.unbind(0)) if isinstance(targets, Tensor) else list(targets)
