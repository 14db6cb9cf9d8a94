"""Per-step losses and their output error ∂E_t/∂y_t, in closed form where we know it.

A loss is any callable ``loss_fn(y_t, target_t)`` returning the scalar loss of one step (mean
over the batch). Online rules need its gradient with respect to the output at every step with
a target; :func:`value_and_grad` computes both:

- the losses here (:data:`cross_entropy`, :data:`mse`, :data:`bernoulli_nll`, or any object
  with a ``value_and_grad(y, target)`` method) and ``torch.nn.functional.cross_entropy`` /
  ``mse_loss`` called with their defaults take a closed form (a few elementwise operations);
- every other callable goes through autograd (``torch.autograd.grad`` of the loss at y).

The closed forms are tested equal to autograd. Targets: :data:`cross_entropy` takes class
indices (B,) or probability vectors (B, K) (one-hot for classes, as target-projection rules
need); :data:`mse` and :data:`bernoulli_nll` take float targets of y's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import OSTLError, ShapeError, TargetError

__all__ = [
    "LossFn",
    "Loss",
    "CrossEntropy",
    "MSE",
    "BernoulliNLL",
    "cross_entropy",
    "mse",
    "bernoulli_nll",
    "value_and_grad",
    "call_loss",
]

LossFn = Callable[[Tensor, Any], Tensor]


class Loss(Protocol):
    """A loss with a closed-form output error (the losses of this module)."""

    def __call__(self, y: Tensor, target: Any) -> Tensor: ...

    def value_and_grad(self, y: Tensor, target: Any) -> tuple[Tensor, Tensor]: ...


def _float_target(name: str, y: Tensor, target: Any) -> Tensor:
    if not isinstance(target, Tensor) or not target.is_floating_point() or target.shape != y.shape:
        got = _describe(target)
        raise TargetError(
            f"{name}: expected a float target of the output's shape {tuple(y.shape)}, got {got}"
        )
    return target


def _describe(target: Any) -> str:
    if isinstance(target, Tensor):
        return f"{tuple(target.shape)} {target.dtype}"
    return type(target).__name__


class CrossEntropy:
    """Softmax cross-entropy (nats) of logits y (B, K), mean over the batch.

    Targets: class indices (B,) of an integer dtype (entries equal to ``ignore_index`` are left
    out of the mean, as in ``torch.nn.functional.cross_entropy``) or probabilities (B, K).
    """

    def __init__(self, ignore_index: int = -100) -> None:
        self.ignore_index = ignore_index

    def __call__(self, y: Tensor, target: Any) -> Tensor:
        if isinstance(target, Tensor) and not target.is_floating_point():
            self._check_labels(y, target)
            return F.cross_entropy(y, target, ignore_index=self.ignore_index)
        t = _float_target("cross_entropy", y, target)
        return -(t * torch.log_softmax(y, dim=-1)).sum() / y.shape[0]

    def check_target(self, y: Tensor, target: Any) -> None:
        """Raise :class:`~ostl.errors.TargetError` unless ``target`` fits logits ``y``."""
        if isinstance(target, Tensor) and not target.is_floating_point():
            self._check_labels(y, target)
        else:
            _float_target("cross_entropy", y, target)

    def _check_labels(self, y: Tensor, target: Tensor) -> None:
        if y.dim() != 2 or target.shape != y.shape[:1]:
            raise TargetError(
                f"cross_entropy: expected class indices of shape {tuple(y.shape[:1])} for "
                f"logits {tuple(y.shape)}, got {_describe(target)}"
            )

    def value_and_grad(self, y: Tensor, target: Any) -> tuple[Tensor, Tensor]:
        logp = torch.log_softmax(y, dim=-1)
        if isinstance(target, Tensor) and not target.is_floating_point():
            self._check_labels(y, target)
            keep = target != self.ignore_index
            idx = torch.where(keep, target, 0).unsqueeze(-1)
            n = keep.sum().to(y.dtype)
            w = keep.to(y.dtype) / n  # the mean over the targets that are not ignored
            value = -(logp.gather(-1, idx).squeeze(-1) * w).sum()
            grad = logp.exp().mul_(w.unsqueeze(-1))
            grad.scatter_add_(-1, idx, -w.unsqueeze(-1))
            return value, grad
        t = _float_target("cross_entropy", y, target)
        B = y.shape[0]
        value = (t * logp).sum() * (-1.0 / B)
        grad = logp.exp_().mul_(t.sum(-1, keepdim=True)).sub_(t).mul_(1.0 / B)
        return value, grad


class MSE:
    """Mean squared error over outputs and batch: mean((y - target)²)."""

    def __call__(self, y: Tensor, target: Any) -> Tensor:
        t = _float_target("mse", y, target)
        return ((y - t) ** 2).mean()

    def check_target(self, y: Tensor, target: Any) -> None:
        """Raise :class:`~ostl.errors.TargetError` unless ``target`` is a float tensor of y's
        shape (nothing is broadcast)."""
        _float_target("mse", y, target)

    def value_and_grad(self, y: Tensor, target: Any) -> tuple[Tensor, Tensor]:
        d = y - _float_target("mse", y, target)
        return (d * d).mean(), d * (2.0 / d.numel())


class BernoulliNLL:
    """Frame NLL (nats): independent Bernoulli units with logits y (B, K), summed over the
    units, mean over the batch. A uniform predictor (y = 0) scores K·log 2 per frame."""

    def __call__(self, y: Tensor, target: Any) -> Tensor:
        t = _float_target("bernoulli_nll", y, target)
        return F.binary_cross_entropy_with_logits(y, t, reduction="sum") / y.shape[0]

    def value_and_grad(self, y: Tensor, target: Any) -> tuple[Tensor, Tensor]:
        t = _float_target("bernoulli_nll", y, target)
        B = y.shape[0]
        value = F.binary_cross_entropy_with_logits(y, t, reduction="sum") / B
        return value, (torch.sigmoid(y) - t) / B


cross_entropy = CrossEntropy()
mse = MSE()
bernoulli_nll = BernoulliNLL()

#: torch's own functions whose default call we know the gradient of.
_KNOWN: dict[Any, Any] = {F.cross_entropy: cross_entropy, F.mse_loss: mse}


def call_loss(loss_fn: LossFn, y: Tensor, target: Any) -> Tensor:
    """``loss_fn(y, target)``, checked: a loss that fails on the target is the user's error.

    The target of a torch loss with a closed form here (``F.mse_loss``, ``F.cross_entropy``)
    is checked as the closed form checks it: torch would broadcast a target of another shape
    (with only a warning), ostl raises :class:`~ostl.errors.TargetError`.
    """
    known = _KNOWN.get(loss_fn)
    if known is not None:
        known.check_target(y, target)
    try:
        e = loss_fn(y, target)
    except OSTLError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise _target_error(y, target, err) from err
    _check_scalar(e)
    return e


def value_and_grad(loss_fn: LossFn, y: Tensor, target: Any) -> tuple[Tensor, Tensor]:
    """(E_t, ∂E_t/∂y_t) for the output y (B, n_out), both detached; see the module docstring."""
    closed = _KNOWN.get(loss_fn, loss_fn)
    vg = getattr(closed, "value_and_grad", None)
    if vg is not None:
        try:
            e, L = vg(y, target)
        except OSTLError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            raise _target_error(y, target, err) from err
        _check_scalar(e)
        return e, L
    # plain autograd: a third of torch.func.grad_and_value's per-call overhead here
    with torch.enable_grad():
        yy = y.detach().requires_grad_(True)
        e = call_loss(loss_fn, yy, target)
        if e.requires_grad:
            (L,) = torch.autograd.grad(e, yy, allow_unused=True, materialize_grads=True)
        else:  # a loss that does not depend on y (a constant): no signal
            L = torch.zeros_like(y)
    return e.detach(), L


def _target_error(y: Tensor, target: Any, err: Exception) -> TargetError:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return TargetError(
        f"loss_fn(y_t, target_t) failed for y_t {tuple(y.shape)} {y.dtype} and target_t "
        f"{_describe(target)}: {msg}. Check that the targets are of the kind the loss expects "
        "(e.g. class indices or one-hot vectors of the network's output size)."
    )


def _check_scalar(e: Any) -> None:
    if not isinstance(e, Tensor) or e.dim() != 0:
        shape = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
        raise ShapeError(
            f"loss_fn must return the scalar loss of one step (mean over the batch), got {shape}"
        )
