"""Evaluation of a network on a split, and model selection on the validation metric.

Model selection is the same for every rule: the weights of the epoch with the best validation
metric (the first of equal bests) are kept and evaluated on the test split; the last epoch's
test metric is reported too.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import distributed as dist
from ..layer import Network
from ..tasks import Task

__all__ = ["evaluate", "better", "ModelSelection"]


@torch.no_grad()
def evaluate(net: Network, task: Task, split: str, batch_size: int) -> float:
    """The task's metric of ``net`` on ``split`` (a plain forward pass, the same for all rules).

    Each batch is one :meth:`Network.unroll`; the state carries over to the next batch where
    the task's batches continue a stream (``batch.reset`` false). Each batch goes to the
    network's device first (:meth:`~ostl.tasks.data.Batch.to`: on CUDA, asynchronous copies
    from pinned memory), so the metric meets outputs and targets on the same device.

    In a process group it is a collective: every rank must call it; each evaluates its shard
    of every batch and the metric's sums are all-reduced.
    """
    metric = task.metric()
    state: tuple[Any, ...] | None = None
    for batch in task.eval_batches(split, batch_size):
        batch = dist.shard_batch(batch)
        if batch.xs.shape[1] == 0:  # fewer sequences than processes: nothing on this rank
            continue
        if batch.reset:
            state = None  # unroll starts from the resting state
        batch = batch.to(net.device)
        ys, state = net.unroll(batch.xs, state)
        metric.update(ys, batch)
    dist.reduce_metric(metric)
    return metric.value()


def better(value: float, best: float | None, higher_is_better: bool) -> bool:
    """Whether ``value`` beats ``best`` (None: nothing yet); NaN never beats a number."""
    if math.isnan(value):
        return best is None
    if best is None or math.isnan(best):
        return True
    return value > best if higher_is_better else value < best


class ModelSelection:
    """The weights of the epoch with the best validation metric.

    Attributes:
        best_valid: the best validation metric so far (None before the first epoch).
        best_epoch: its epoch (0: none yet; the initial weights are held).
        best_state: a copy of the network's weights at that epoch.
    """

    def __init__(self, net: Network, higher_is_better: bool) -> None:
        self.higher_is_better = higher_is_better
        self.best_valid: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, Tensor] = copy.deepcopy(net.state_dict())

    def offer(self, epoch: int, valid: float, net: Network) -> bool:
        """The validation metric of ``epoch``: keep a copy of ``net``'s weights if it is best."""
        if not better(valid, self.best_valid, self.higher_is_better):
            return False
        self.best_valid, self.best_epoch = valid, epoch
        self.best_state = copy.deepcopy(net.state_dict())
        return True

    def keep_last(self, epoch: int, net: Network) -> None:
        """Select the weights ``net`` holds now (PCM in the loop: there is no going back)."""
        self.best_epoch, self.best_state = epoch, net.state_dict()

    def select(
        self, net: Network, last_epoch: int, test: Callable[[Network], float]
    ) -> tuple[float, float]:
        """After the last epoch: load the best weights into ``net``.

        Returns:
            (test metric of the best weights, test metric of the last epoch's weights).
        """
        final = test(net)
        net.load_state_dict(self.best_state)
        return (test(net) if self.best_epoch < last_epoch else final), final

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_valid": self.best_valid,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_valid = state["best_valid"]
        self.best_epoch = int(state["best_epoch"])
        self.best_state = state["best_state"]
