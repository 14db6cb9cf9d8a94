"""Evaluation metrics: accumulators fed with whole batches of outputs ``ys`` (T, B, K).

A metric counts the (step, sample) pairs that have a target and, when the batch has a mask,
are inside it (padded steps of variable-length sequences are not).

A metric is computed where the outputs are: a batch on another device (the CPU batches of a
task, against a network on a GPU) is moved there first (:meth:`~.data.Batch.to`), and each
update reads its sums back once (one host synchronisation per batch), in float64.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from .data import Batch, OneHotSteps, as_list, transfer

__all__ = ["Metric", "SequenceAccuracy", "StepAccuracy", "MeanSquaredError", "FrameNLL", "TokenNLL"]


def _weights(batch: Batch, T: int, B: int, device: torch.device) -> Tensor:
    """(T, B) float64 weights on ``device`` of the pairs that count."""
    if isinstance(batch.targets, Tensor | OneHotSteps):  # a target at every step
        w = torch.ones(T, B, dtype=torch.float64, device=device)
    else:
        has = torch.tensor([t is not None for t in batch.targets], dtype=torch.float64)
        w = transfer(has, device).view(T, 1).expand(T, B)
    if batch.mask is not None:
        w = w * batch.mask.to(torch.float64)
    return w


def _stack(batch: Batch, like: Tensor) -> Tensor:
    """The targets as one (T, B, K) tensor on ``like``'s device, zeros where a step has none."""
    targets = batch.targets
    if isinstance(targets, Tensor):
        return targets
    return torch.stack([torch.zeros_like(like[0]) if t is None else t for t in as_list(targets)])


def _read(*sums: Tensor) -> list[float]:
    """The values of 0-dim tensors, read back together (one host synchronisation)."""
    return [float(v) for v in torch.stack([s.double() for s in sums]).tolist()]


class Metric(abc.ABC):
    """Accumulates a metric over batches. ``name`` names it; ``higher_is_better`` orders it."""

    name: str = "metric"
    higher_is_better: bool = True

    @abc.abstractmethod
    def update(self, ys: Tensor, batch: Batch) -> None:
        """Add one batch of network outputs ys (T, B, K)."""

    @abc.abstractmethod
    def value(self) -> float:
        """The metric over everything added so far (nan if nothing was)."""


class SequenceAccuracy(Metric):
    """Classification of whole sequences: argmax of the logits summed over the target steps."""

    name = "accuracy"

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, ys: Tensor, batch: Batch) -> None:
        T, B, _ = ys.shape
        batch = batch.to(ys.device)
        w = _weights(batch, T, B, ys.device).unsqueeze(-1)
        logits = (ys.double() * w).sum(0)
        labels = (_stack(batch, ys).double() * w).sum(0).argmax(-1)
        counted = w.sum(0).squeeze(-1) > 0
        correct, total = _read(((logits.argmax(-1) == labels) & counted).sum(), counted.sum())
        self.correct += int(correct)
        self.total += int(total)

    def value(self) -> float:
        return self.correct / self.total if self.total else math.nan


class StepAccuracy(Metric):
    """Classification at every step with a target (e.g. the recall steps of a copy task)."""

    name = "accuracy"

    def __init__(self) -> None:
        self.correct = 0.0
        self.total = 0.0

    def update(self, ys: Tensor, batch: Batch) -> None:
        T, B, _ = ys.shape
        batch = batch.to(ys.device)
        w = _weights(batch, T, B, ys.device)
        hit = (ys.argmax(-1) == _stack(batch, ys).argmax(-1)).double()
        correct, total = _read((hit * w).sum(), w.sum())
        self.correct += correct
        self.total += total

    def value(self) -> float:
        return self.correct / self.total if self.total else math.nan


class MeanSquaredError(Metric):
    """Mean squared error per output unit over the steps with a target."""

    name = "mse"
    higher_is_better = False

    def __init__(self) -> None:
        self.sum = 0.0
        self.count = 0.0

    def update(self, ys: Tensor, batch: Batch) -> None:
        T, B, _ = ys.shape
        batch = batch.to(ys.device)
        w = _weights(batch, T, B, ys.device)
        err = ((ys.double() - _stack(batch, ys).double()) ** 2).mean(-1)
        total, count = _read((err * w).sum(), w.sum())
        self.sum += total
        self.count += count

    def value(self) -> float:
        return self.sum / self.count if self.count else math.nan


class FrameNLL(Metric):
    """Frame-level negative log-likelihood (nats per frame) of independent Bernoulli units.

    Summed over the units of a frame, averaged over frames: a uniform predictor scores K·log 2.
    """

    name = "nll"
    higher_is_better = False

    def __init__(self) -> None:
        self.sum = 0.0
        self.count = 0.0

    def update(self, ys: Tensor, batch: Batch) -> None:
        T, B, _ = ys.shape
        batch = batch.to(ys.device)
        w = _weights(batch, T, B, ys.device)
        nll = torch.nn.functional.binary_cross_entropy_with_logits(
            ys.double(), _stack(batch, ys).double(), reduction="none"
        )
        total, count = _read((nll.sum(-1) * w).sum(), w.sum())
        self.sum += total
        self.count += count

    def value(self) -> float:
        return self.sum / self.count if self.count else math.nan


class TokenNLL(Metric):
    """Next-token prediction: word perplexity exp(mean NLL) or bits per character mean NLL / ln 2.

    A uniform predictor over V tokens has perplexity V and log2(V) bits per character.
    """

    higher_is_better = False

    def __init__(self, unit: str = "perplexity") -> None:
        if unit not in ("perplexity", "bpc"):
            raise ValueError(f"unit must be 'perplexity' or 'bpc', got {unit!r}")
        self.name = unit
        self.sum = 0.0
        self.count = 0.0

    def update(self, ys: Tensor, batch: Batch) -> None:
        T, B, _ = ys.shape
        batch = batch.to(ys.device)
        logp = torch.log_softmax(ys.double(), -1)
        w = _weights(batch, T, B, ys.device)
        if isinstance(batch.targets, OneHotSteps):  # labels at every step: no one-hot needed
            labels = batch.targets.labels.long()
            nll = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        else:
            nll = -(_stack(batch, ys).double() * logp).sum(-1)
        total, count = _read((nll * w).sum(), w.sum())
        self.sum += total
        self.count += count

    def value(self) -> float:
        if not self.count:
            return math.nan
        mean = self.sum / self.count
        return math.exp(mean) if self.name == "perplexity" else mean / math.log(2)
