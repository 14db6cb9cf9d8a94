"""recall: inputs, targets only at the recall steps, accuracy of a perfect and a constant guess."""

from __future__ import annotations

import torch

from ostl.tasks.recall import Recall

from .conftest import train_steps


def test_layout_of_a_sequence() -> None:
    task = Recall(symbols=3, length=2, delay=4, train_size=8, test_size=6)
    seqs = torch.tensor([[2, 0]])
    batch = task.batch(seqs)
    assert batch.xs.shape == (8, 1, 5) and task.steps == 8
    assert batch.xs[0, 0].tolist() == [0, 0, 1, 0, 0] and batch.xs[1, 0].tolist() == [1, 0, 0, 0, 0]
    assert batch.xs[2:6].sum() == 0  # the delay is silent
    assert batch.xs[6, 0, 3] == 1 and batch.xs[7, 0, 4] == 1  # one cue per recall step
    targets = list(batch.targets)
    assert targets[:6] == [None] * 6
    assert targets[6].tolist() == [[0, 0, 1]] and targets[7].tolist() == [[1, 0, 0]]


def test_perfect_recall_scores_one_and_a_constant_guess_chance() -> None:
    task = Recall(symbols=4, length=3, delay=5, train_size=8, test_size=400)
    perfect, constant = task.metric(), task.metric()
    for batch in task.eval_batches("test", 100):
        ys = torch.stack([torch.zeros(100, 4) if t is None else t for t in batch.targets])
        perfect.update(ys, batch)
        constant.update(torch.zeros_like(ys) + torch.tensor([1.0, 0, 0, 0]), batch)
    assert perfect.value() == 1.0
    assert abs(constant.value() - 0.25) < 0.05


def test_training_steps(rule: str) -> None:
    train_steps(Recall(delay=3, train_size=16, test_size=8), rule)
