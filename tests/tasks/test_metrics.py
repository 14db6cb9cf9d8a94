"""Metrics against hand-computed values, and the uniform-predictor identities."""

from __future__ import annotations

import math

import pytest
import torch

from ostl.tasks.data import Batch, OneHotSteps, one_hot
from ostl.tasks.losses import bernoulli_nll, cross_entropy, mse
from ostl.tasks.metrics import (
    FrameNLL,
    MeanSquaredError,
    SequenceAccuracy,
    StepAccuracy,
    TokenNLL,
)


def test_sequence_accuracy_sums_logits_over_target_steps() -> None:
    tg = one_hot(torch.tensor([0, 1]), 2)
    ys = torch.tensor([[[5.0, 0.0], [5.0, 0.0]], [[0.0, 1.0], [0.0, 9.0]]])  # (T=2, B=2, 2)
    m = SequenceAccuracy()
    m.update(ys, Batch(ys, tg.expand(2, 2, 2)))
    assert m.value() == 1.0  # sample 0: 5 vs 1 -> class 0; sample 1: 5 vs 9 -> class 1
    m = SequenceAccuracy()
    m.update(ys, Batch(ys, [None, tg]))  # only the last step counts
    assert m.value() == 0.5


def test_step_accuracy_counts_target_steps_inside_the_mask() -> None:
    tg = one_hot(torch.tensor([0, 1]), 2)
    ys = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]])
    m = StepAccuracy()
    m.update(ys, Batch(ys, [None, tg]))
    assert m.value() == 0.5
    m = StepAccuracy()
    m.update(ys, Batch(ys, [tg, tg], mask=torch.tensor([[True, False], [True, False]])))
    assert m.value() == 1.0


def test_mse_and_loss() -> None:
    ys, tg = torch.zeros(3, 2, 1), torch.ones(3, 2, 1)
    m = MeanSquaredError()
    m.update(ys, Batch(ys, tg))
    assert m.value() == 1.0 and float(mse(ys[0], tg[0])) == 1.0
    assert not m.higher_is_better


def test_uniform_predictor_scores_k_log_2_per_frame() -> None:
    tg = (torch.rand(5, 3, 88) < 0.1).float()
    ys = torch.zeros(5, 3, 88)
    m = FrameNLL()
    m.update(ys, Batch(ys, tg))
    assert m.value() == pytest.approx(88 * math.log(2))
    assert float(bernoulli_nll(ys[0], tg[0])) == pytest.approx(88 * math.log(2))


@pytest.mark.parametrize(("unit", "expected"), [("perplexity", 37.0), ("bpc", math.log2(37))])
def test_uniform_predictor_perplexity_is_the_vocabulary(unit: str, expected: float) -> None:
    labels = torch.randint(0, 37, (6, 4))
    ys = torch.zeros(6, 4, 37)
    for targets in (OneHotSteps(labels, 37), one_hot(labels, 37)):
        m = TokenNLL(unit)
        m.update(ys, Batch(ys, targets))
        assert m.value() == pytest.approx(expected)
    assert float(cross_entropy(ys[0], one_hot(labels[0], 37))) == pytest.approx(math.log(37))


def test_empty_metric_is_nan() -> None:
    assert math.isnan(SequenceAccuracy().value()) and math.isnan(TokenNLL("bpc").value())
    with pytest.raises(ValueError, match="perplexity"):
        TokenNLL("nats")
