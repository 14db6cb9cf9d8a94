"""pattern: frozen Poisson input, sum-of-sinusoids targets, MSE, training steps."""

from __future__ import annotations

import torch

from ostl.tasks.pattern import Pattern, make_patterns

from .conftest import train_steps


def test_patterns_are_frozen_and_scaled() -> None:
    xs, ys = make_patterns(2, 50, 10, 3, 0.1, seed=1)
    assert xs.shape == (50, 2, 10) and ys.shape == (50, 2, 3)
    assert torch.allclose(ys.abs().amax(0), torch.ones(2, 3))  # unit peak per signal
    xs2, ys2 = make_patterns(2, 50, 10, 3, 0.1, seed=1)
    assert torch.equal(xs, xs2) and torch.equal(ys, ys2)
    assert 0.05 < float(xs.mean()) < 0.15


def test_train_and_eval_are_the_same_patterns(rule: str) -> None:
    task = Pattern(steps=20, inputs=6, patterns=2)
    train = next(task.train_batches(2, torch.Generator()))
    test = next(task.eval_batches("test", 2))
    assert torch.equal(train.xs, test.xs) and train.xs.shape == (20, 2, 6)
    train_steps(task, rule, batches=1, batch_size=2)
