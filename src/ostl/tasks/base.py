"""The task contract: data as time-major batches, a default network, a per-step loss, a metric.

A task is a dataclass whose fields are its options (sequence length, data-set slice, seeds of
the frozen parts of the data); :func:`ostl.tasks.get_task` builds one by name. ``asdict(task)``
plus the task name reproduce the data exactly.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..cells import CELLS
from ..layer import Layer, Network, Readout
from ..losses import Loss
from .data import Batch, batch_slices
from .metrics import Metric

__all__ = ["Task", "IndexedTask", "Defaults", "SPIKING_CELLS", "build_network"]

#: Registry names of the cells whose output is a spike train (``Cell.spiking``): a raster plot
#: shows them, and the layers above them take spike input. Derived from the cell registry.
SPIKING_CELLS = frozenset(name for name, cls in CELLS.items() if cls.spiking)


@dataclass(frozen=True)
class Defaults:
    """A task's default network and training budget (the same for every rule)."""

    cell: str
    hidden: tuple[int, ...]
    epochs: int
    batch_size: int
    lr: float


def _cell_kwargs(cell: str, spiking_input: bool) -> dict[str, Any]:
    """Per-cell options of the default networks (documented in each task)."""
    if cell == "snu" and spiking_input:
        # A lower SNU threshold (b = -0.5 instead of -1) so hidden neurons fire from the start.
        return {"b": -0.5}
    return {}


def build_network(
    n_in: int,
    hidden: Sequence[int],
    n_out: int,
    cell: str = "snu",
    recurrent: bool = False,
    *,
    input_gain: float = 1.0,
    forget_bias: float = 1.0,
    spiking_input: bool = False,
    seed: int = 0,
) -> Network:
    """Stateful layers of ``hidden`` sizes and a linear readout.

    Args:
        n_in: input size.
        hidden: sizes of the stateful layers, bottom first (at least one).
        n_out: readout size.
        cell: registry name of the cell of every stateful layer.
        recurrent: give every stateful layer recurrent weights H.
        input_gain: factor on the initial weights W of every stateful layer (spiking cells
            need larger weights than the 1/√fan_in default to fire on sparse spike input).
        forget_bias: initial bias of the LSTM forget gates (1 is the usual choice, Gers et al.
            2000; larger keeps memories longer at the start of training).
        spiking_input: the inputs are spikes (chooses the spiking cells' defaults).
        seed: seed of the initial weights.
    """
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}: expected one of {sorted(CELLS)}")
    if not hidden:
        raise ValueError("the network needs at least one hidden layer")
    torch.manual_seed(seed)
    layers: list[Layer | Readout] = []
    n = n_in
    for h in hidden:
        layer = Layer(n, h, cell, recurrent=recurrent, **_cell_kwargs(cell, spiking_input))
        with torch.no_grad():
            layer.W.mul_(input_gain)
            if cell == "lstm" and layer.b is not None:
                layer.b[h : 2 * h] = forget_bias  # gate order (i, f, g, o)
        layers.append(layer)
        n = h
        spiking_input = spiking_input or cell in SPIKING_CELLS
    layers.append(Readout(n, n_out))
    return Network(layers)


@dataclass
class Task(abc.ABC):
    """Base class of every task; subclasses are dataclasses whose fields are the options.

    Class attributes:
        name: registry name.
        summary: one line for ``ostl list``.
        defaults: default network and budget.
        spiking_input: the inputs are spike trains.
        input_gain: factor on the default network's initial input weights.
        forget_bias: initial LSTM forget-gate bias of the default network.
        quick: overrides of a ``--quick`` run: budget fields (``epochs``, ``batch_size``, ...)
            and task options (e.g. ``train_size``), for a run of a minute or so.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    defaults: ClassVar[Defaults]
    spiking_input: ClassVar[bool] = False
    input_gain: ClassVar[float] = 1.0
    forget_bias: ClassVar[float] = 1.0
    quick: ClassVar[dict[str, Any]] = {"epochs": 1}

    @property
    @abc.abstractmethod
    def n_in(self) -> int:
        """Input size per step."""

    @property
    @abc.abstractmethod
    def n_out(self) -> int:
        """Output (readout) size per step."""

    #: ``loss_fn(y_t, target_t)``: the scalar loss of one step, mean over the batch (a loss of
    #: :mod:`ostl.losses`, so that the online rules take its output error in closed form).
    loss_fn: ClassVar[Loss]

    @abc.abstractmethod
    def metric(self) -> Metric:
        """A fresh accumulator of the task's evaluation metric."""

    @abc.abstractmethod
    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One epoch of training batches, shuffled and (re)encoded with ``generator``."""

    @abc.abstractmethod
    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """Batches of ``split`` ("valid" or "test"), the same on every call."""

    @abc.abstractmethod
    def num_train_batches(self, batch_size: int) -> int:
        """How many batches :meth:`train_batches` yields (for progress bars)."""

    def network(
        self,
        hidden: Sequence[int] | None = None,
        cell: str | None = None,
        recurrent: bool = False,
        seed: int = 0,
    ) -> Network:
        """The default network (or the given hidden sizes and cell) for this task."""
        return build_network(
            self.n_in,
            tuple(hidden) if hidden is not None else self.defaults.hidden,
            self.n_out,
            cell or self.defaults.cell,
            recurrent,
            input_gain=self.input_gain,
            forget_bias=self.forget_bias,
            spiking_input=self.spiking_input,
            seed=seed,
        )

    @staticmethod
    def check_split(split: str) -> str:
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        return split


@dataclass
class IndexedTask(Task):
    """A task whose splits are held in memory and batched by index: a subclass gives the size
    of each split and the batch of some of its samples; shuffling and batching are here."""

    @abc.abstractmethod
    def split_size(self, split: str) -> int:
        """Samples in ``split`` ("train", "valid" or "test")."""

    @abc.abstractmethod
    def make_batch(self, split: str, idx: torch.Tensor) -> Batch:
        """The batch of the samples ``idx`` (int64 indices) of ``split``."""

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        for idx in batch_slices(self.split_size("train"), batch_size, generator):
            yield self.make_batch("train", idx)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        for idx in batch_slices(self.split_size(self.check_split(split)), batch_size):
            yield self.make_batch(split, idx)

    def num_train_batches(self, batch_size: int) -> int:
        return math.ceil(self.split_size("train") / batch_size)
