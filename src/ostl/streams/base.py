"""The stream contract: one long input sequence, no episodes, no resets, test-then-train.

A :class:`Stream` is a dataclass whose fields are its options (length, seeds of the frozen
parts of the data); :func:`ostl.streams.get_stream` builds one by name. ``asdict(stream)`` plus
the name reproduce the data exactly.

Unlike a :class:`ostl.tasks.Task`, a stream has no epochs, no splits and no sequence
boundaries: the network state and the online rules' traces carry over the whole stream, and
every prediction is scored *before* the learner sees its target (prequential evaluation,
:mod:`ostl.streams.prequential`). The stream may change under the model: ``drifts`` lists the
steps where the generating process changes, known to the evaluation only (no learner reads
it).

Shapes: one stream, batch 1, time-major: :meth:`Stream.chunks` yields ``xs`` of shape
``(C, 1, n_in)`` and targets of shape ``(C, 1, n_out)`` (float; one-hot for classes, so that
target-projection rules get the same target as the others), or a list of length C whose
entries are ``(1, n_out)`` tensors or None at steps without a target.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ..layer import Network
from ..losses import LossFn
from ..tasks.data import Targets

__all__ = ["Stream", "StreamDefaults"]


@dataclass(frozen=True)
class StreamDefaults:
    """A stream's default network and step size (the same for every rule)."""

    cell: str
    hidden: tuple[int, ...]
    lr: float
    recurrent: bool = False


class Stream(abc.ABC):
    """One long input sequence for learning while processing (see the module docstring).

    Class attributes: ``name`` (the registry name), ``kind`` (``"regression"`` or
    ``"classification"``), ``metric`` (what :meth:`error` measures, lower is better, e.g.
    ``"squared error"``, ``"error rate"``, ``"bits per character"``), ``defaults``.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    metric: ClassVar[str]
    defaults: ClassVar[StreamDefaults]

    @property
    @abc.abstractmethod
    def n_in(self) -> int:
        """Inputs per step."""

    @property
    @abc.abstractmethod
    def n_out(self) -> int:
        """Outputs per step (the readout's width)."""

    @property
    @abc.abstractmethod
    def length(self) -> int | None:
        """Steps in the stream; None: endless (the caller decides where to stop)."""

    @property
    def drifts(self) -> tuple[int, ...]:
        """Steps at which the generating process changes (evaluation only); () by default."""
        return ()

    @property
    @abc.abstractmethod
    def loss_fn(self) -> LossFn:
        """The per-step loss the learners minimise: ``loss_fn(y_t, target_t)``."""

    @abc.abstractmethod
    def error(self, y: Tensor, target: Tensor) -> Tensor:
        """The prequential score of one step: the error of prediction ``y`` (1, n_out) against
        ``target`` (1, n_out), a 0-d tensor (no grad, lower is better, in units of
        :attr:`metric`)."""

    @abc.abstractmethod
    def chunks(self, seed: int = 0, size: int = 1000) -> Iterator[tuple[Tensor, Targets]]:
        """The stream in consecutive chunks of at most ``size`` steps: ``(xs, targets)`` as in
        the module docstring. The same ``seed`` gives the same stream (the seed of anything
        random in the stream's order; the data's own frozen parts are fields)."""

    @abc.abstractmethod
    def network(
        self, cell: str | None = None, hidden: tuple[int, ...] | None = None, seed: int = 0
    ) -> Network:
        """The default network (float32, weights from ``seed``), or with ``cell``/``hidden``."""
