"""Per-step losses ``loss_fn(y_t, target_t)``: the scalar loss of one step, mean over the batch.

Targets are float tensors (one-hot for classes, multi-hot for piano rolls), so every rule,
including target-projection ones (OSTTP), receives the same target.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cross_entropy", "mse", "bernoulli_nll"]


def cross_entropy(y: Tensor, target: Tensor) -> Tensor:
    """Softmax cross-entropy (nats) of logits y (B, K) against float one-hot targets (B, K)."""
    return -(target * torch.log_softmax(y, dim=-1)).sum(-1).mean()


def mse(y: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over outputs and batch."""
    return ((y - target) ** 2).mean()


def bernoulli_nll(y: Tensor, target: Tensor) -> Tensor:
    """Frame NLL (nats): independent Bernoulli units with logits y (B, K), summed over the K units.

    A uniform predictor (y = 0) scores K·log 2 per frame.
    """
    nll = torch.nn.functional.binary_cross_entropy_with_logits(y, target, reduction="none")
    return nll.sum(-1).mean()
