"""Helpers shared by the task tests: a few training steps of a task with a given rule."""

from __future__ import annotations

import math

import pytest
import torch

from ostl import Learner
from ostl.rules import RULES
from ostl.tasks import Task
from ostl.tasks.data import as_list

#: The rules every task must train with (OSTTP when it is registered).
RULES_UNDER_TEST = [r for r in ("bptt", "ostl", "osttp") if r in RULES]


def train_steps(task: Task, rule: str, batches: int = 2, batch_size: int = 4) -> list[float]:
    """Train the task's default network (made small) for a few batches; the per-batch losses."""
    torch.manual_seed(0)
    net = task.network(hidden=(8,))
    learner = Learner(
        net,
        rule,
        loss_fn=task.loss_fn,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-3),
        update_every=None if rule == "bptt" else 1,
    )
    losses = []
    gen = torch.Generator().manual_seed(0)
    for i, batch in enumerate(task.train_batches(batch_size, gen)):
        if i == batches:
            break
        if batch.reset or i == 0:
            learner.reset(batch.xs.shape[1])
        for x, t in zip(batch.xs, as_list(batch.targets)):
            y = learner.step(x, t)
            assert y.shape == (batch.xs.shape[1], task.n_out)
        losses.append(learner.mean_loss)
        learner.end_sequence()
    assert learner.updates > 0
    assert all(math.isfinite(v) for v in losses), losses
    return losses


@pytest.fixture(params=RULES_UNDER_TEST)
def rule(request: pytest.FixtureRequest) -> str:
    return str(request.param)
