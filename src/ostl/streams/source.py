"""What the streams of this package share: reading a stream window by window, the default
network, option checks, and the three per-step scores (squared error, bits, error rate).

A :class:`Source` computes any window ``[start, stop)`` of its stream on demand
(:meth:`Source.window`); :meth:`Source.chunks` cuts the stream into windows of ``size`` steps, so
the chunks of any size concatenate to the same stream.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..errors import OptionError, ShapeError
from ..layer import Network
from ..tasks.base import build_network
from ..tasks.data import Targets
from .base import Stream

__all__ = [
    "Source",
    "squared_error",
    "bits",
    "error_rate",
    "check_int",
    "check_number",
]


def check_int(stream: str, name: str, value: object, low: int, none: bool = False) -> None:
    """Raise :class:`OptionError` unless ``value`` is an int >= ``low`` (or None if ``none``)."""
    if none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        extra = " or None" if none else ""
        raise OptionError(f"{stream}: {name} must be an integer >= {low}{extra}, got {value!r}")


def check_number(stream: str, name: str, value: object, low: float, high: float) -> None:
    """Raise :class:`OptionError` unless ``value`` is a finite number in [low, high]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise OptionError(
            f"{stream}: {name} must be a finite number "
            + (f">= {low:g}" if math.isinf(high) else f"in [{low:g}, {high:g}]")
            + f", got {value!r}"
        )


def _pair(what: str, y: Tensor, target: Tensor, n_out: int) -> None:
    """Refuse a prediction and target that are not both (B, n_out) (nothing is broadcast)."""
    for name, t in (("prediction", y), ("target", target)):
        if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[1] != n_out:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ShapeError(f"{what}: expected a {name} of shape (1, {n_out}), got {got}")
    if y.shape != target.shape:
        raise ShapeError(
            f"{what}: prediction {tuple(y.shape)} and target {tuple(target.shape)} differ"
        )


def squared_error(y: Tensor, target: Tensor, n_out: int) -> Tensor:
    """mean((y - target)²) over the outputs (and the batch): a 0-d tensor."""
    _pair("squared error", y, target, n_out)
    with torch.no_grad():
        return ((y.float() - target.float()) ** 2).mean()


def bits(y: Tensor, target: Tensor, n_out: int) -> Tensor:
    """-log2 softmax(y)[k] of the true class k (the target one-hot): bits of the true next
    symbol, a 0-d tensor (mean over the batch)."""
    _pair("bits", y, target, n_out)
    with torch.no_grad():
        log_p = torch.log_softmax(y.float(), dim=-1)
        return -(target.float() * log_p).sum(-1).mean() / math.log(2)


def error_rate(y: Tensor, target: Tensor, n_out: int) -> Tensor:
    """1 where argmax(y) is not the target's class, else 0 (mean over the batch): 0-d."""
    _pair("error rate", y, target, n_out)
    with torch.no_grad():
        return (y.argmax(-1) != target.argmax(-1)).float().mean()


@dataclass
class Source(Stream):
    """A stream of finite length computed window by window (see the module docstring).

    Class attributes (besides :class:`~ostl.streams.base.Stream`'s): ``summary``, one line for
    listings; ``spiking_input``, the inputs are spikes (the default network's spiking cells take
    their defaults for spike input); ``input_gain``, a factor on the default network's initial
    input weights.
    """

    summary: ClassVar[str]
    spiking_input: ClassVar[bool] = False
    input_gain: ClassVar[float] = 1.0

    @property
    @abc.abstractmethod
    def length(self) -> int:
        """Steps in the stream."""

    @abc.abstractmethod
    def window(self, start: int, stop: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Steps ``start`` to ``stop - 1``: inputs (C, n_in) and targets (C, n_out), float32."""

    def chunks(self, seed: int = 0, size: int = 1000) -> Iterator[tuple[Tensor, Targets]]:
        check_int(self.name, "the chunk size", size, 1)
        check_int(self.name, "the seed", seed, 0)
        for start in range(0, self.length, size):
            xs, targets = self.window(start, min(start + size, self.length), seed)
            yield xs.unsqueeze(1), targets.unsqueeze(1)

    def network(
        self, cell: str | None = None, hidden: tuple[int, ...] | None = None, seed: int = 0
    ) -> Network:
        d = self.defaults
        return build_network(
            self.n_in,
            tuple(hidden) if hidden is not None else d.hidden,
            self.n_out,
            cell or d.cell,
            d.recurrent,
            input_gain=self.input_gain,
            spiking_input=self.spiking_input,
            seed=seed,
        )

    def _check_window(self, start: int, stop: int) -> None:
        if not 0 <= start < stop <= self.length:
            raise OptionError(
                f"{self.name}: a window must satisfy 0 <= start < stop <= {self.length}, got "
                f"[{start}, {stop})"
            )
