"""Evaluation metrics: accumulators fed with whole batches of outputs ``ys`` (T, B, K).

A metric counts the (step, sample) pairs that have a target and, when the batch has a mask,
are inside it (padded steps of variable-length sequences are not).
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from .data import Batch, OneHotSteps, as_list

__all__ = ["Metric", "SequenceAccuracy", "StepAccuracy", "MeanSquaredError", "FrameNLL", "TokenNLL"]


def _weights(batch: Batch, T: int, B: int) -> tuple[Tensor, list[Tensor | None]]:
    """(T, B) float weights of the pairs that count, and the per-step targets."""
    targets = as_list(batch.targets)
    has = torch.tensor([t is not None for t in targets], dtype=torch.float64)
    w = has.view(T, 1).expand(T, B).clone()
    if batch.mask is not None:
        w = w * batch.mask.to(torch.float64).cpu()
    return w, targets


def _stack(targets: list[Tensor | None], like: Tensor) -> Tensor:
    """Targets as one (T, B, K) tensor, zeros where a step has none."""
    return torch.stack([torch.zeros_like(like[0]) if t is None else t for t in targets])


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
        w, targets = _weights(batch, T, B)
        tg = _stack(targets, ys).double().cpu()
        w = w.unsqueeze(-1)
        logits = (ys.double().cpu() * w).sum(0)
        labels = (tg * w).sum(0).argmax(-1)
        counted = w.sum(0).squeeze(-1) > 0
        self.correct += int(((logits.argmax(-1) == labels) & counted).sum())
        self.total += int(counted.sum())

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
        w, targets = _weights(batch, T, B)
        tg = _stack(targets, ys).cpu()
        hit = (ys.cpu().argmax(-1) == tg.argmax(-1)).double()
        self.correct += float((hit * w).sum())
        self.total += float(w.sum())

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
        T, B, K = ys.shape
        w, targets = _weights(batch, T, B)
        err = ((ys.double() - _stack(targets, ys).double()) ** 2).mean(-1).cpu()
        self.sum += float((err * w).sum())
        self.count += float(w.sum())

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
        w, targets = _weights(batch, T, B)
        tg = _stack(targets, ys)
        nll = torch.nn.functional.binary_cross_entropy_with_logits(
            ys.double(), tg.double(), reduction="none"
        )
        self.sum += float((nll.sum(-1).cpu() * w).sum())
        self.count += float(w.sum())

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
        logp = torch.log_softmax(ys.double(), -1)
        if isinstance(batch.targets, OneHotSteps):  # labels at every step: no one-hot needed
            labels = batch.targets.labels.to(ys.device)
            nll = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).cpu()
            w = torch.ones(T, B, dtype=torch.float64)
            if batch.mask is not None:
                w = w * batch.mask.to(torch.float64).cpu()
        else:
            w, targets = _weights(batch, T, B)
            nll = -(_stack(targets, ys).double() * logp).sum(-1).cpu()
        self.sum += float((nll * w).sum())
        self.count += float(w.sum())

    def value(self) -> float:
        if not self.count:
            return math.nan
        mean = self.sum / self.count
        return math.exp(mean) if self.name == "perplexity" else mean / math.log(2)
