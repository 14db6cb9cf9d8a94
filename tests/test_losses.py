"""Closed-form output errors equal autograd's; other losses take autograd; errors are clear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import ostl
from ostl.losses import bernoulli_nll, cross_entropy, mse, value_and_grad

DT = torch.float64


def autograd(loss_fn: object, y: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    yy = y.detach().clone().requires_grad_(True)
    e = loss_fn(yy, target)  # type: ignore[operator]
    (g,) = torch.autograd.grad(e, yy)
    return e.detach(), g


def _data(B: int = 5, K: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randn(B, K, generator=g, dtype=DT) * 3
    labels = torch.randint(0, K, (B,), generator=g)
    probs = torch.rand(B, K, generator=g, dtype=DT)  # not normalised: the general formula
    return y, labels, probs


@pytest.mark.parametrize(
    "case",
    ["ce-labels", "ce-ignored", "ce-one-hot", "ce-probs", "mse", "bce", "F.ce", "F.ce-probs",
     "F.mse"],
)  # fmt: skip
def test_closed_forms_equal_autograd(case: str) -> None:
    y, labels, probs = _data()
    ignored = labels.clone()
    ignored[1] = -100
    one_hot = F.one_hot(labels, 4).to(DT)
    loss, target, reference = {
        "ce-labels": (cross_entropy, labels, F.cross_entropy),
        "ce-ignored": (cross_entropy, ignored, F.cross_entropy),
        "ce-one-hot": (cross_entropy, one_hot, F.cross_entropy),
        "ce-probs": (cross_entropy, probs, lambda y, t: -(t * y.log_softmax(-1)).sum(-1).mean()),
        "mse": (mse, probs, F.mse_loss),
        "bce": (
            bernoulli_nll,
            (probs > 0.5).to(DT),
            lambda y, t: F.binary_cross_entropy_with_logits(y, t, reduction="none").sum(-1).mean(),
        ),
        "F.ce": (F.cross_entropy, labels, F.cross_entropy),
        "F.ce-probs": (F.cross_entropy, one_hot, F.cross_entropy),
        "F.mse": (F.mse_loss, probs, F.mse_loss),
    }[case]
    calls = [0]
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: calls.__setitem__(0, 1) or t, lambda t: t
    ):
        e, L = value_and_grad(loss, y, target)
    assert calls[0] == 0, "the closed form must not build an autograd graph"
    want_e, want_L = autograd(reference, y, target)
    torch.testing.assert_close(e, want_e, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(L, want_L, rtol=1e-12, atol=1e-14)
    assert float(want_L.abs().sum()) > 0
    torch.testing.assert_close(loss(y, target), want_e, rtol=1e-12, atol=1e-14)


def test_any_other_loss_goes_through_autograd() -> None:
    y, _, probs = _data()

    def huber(y: Tensor, t: Tensor) -> Tensor:
        return F.smooth_l1_loss(y, t)

    e, L = value_and_grad(huber, y, probs)
    want_e, want_L = autograd(huber, y, probs)
    torch.testing.assert_close(L, want_L)
    torch.testing.assert_close(e, want_e)
    e, L = value_and_grad(lambda y, t: torch.zeros((), dtype=DT), y, probs)  # no dependence
    assert float(L.abs().sum()) == 0


def test_bad_targets_are_named() -> None:
    y, labels, _ = _data()
    with pytest.raises(ostl.TargetError, match="class indices of shape"):
        value_and_grad(cross_entropy, y, labels[:3])
    with pytest.raises(ostl.TargetError, match="float target of the output's shape"):
        value_and_grad(mse, y, labels)
    with pytest.raises(ostl.TargetError, match="float target of the output's shape"):
        mse(y, y[:, :2])  # nothing is broadcast
    with pytest.raises(ostl.ShapeError, match="scalar loss"):
        value_and_grad(lambda y, t: (y - t) ** 2, y, y)
