"""digits: real scikit-learn data, split, spike encodings, shapes, and a few training steps."""

from __future__ import annotations

import pytest
import torch

from ostl.tasks import get_task
from ostl.tasks.digits import Digits

from .conftest import train_steps


@pytest.fixture(scope="module")
def task() -> Digits:
    return Digits(steps=6, train_size=40, test_size=16)


def test_split_covers_the_1797_images_once() -> None:
    full = Digits(steps=2)
    sizes = [full.split_size(s) for s in ("train", "valid", "test")]
    assert sum(sizes) == 1797 and sizes[2] == round(0.2 * 1797)


def test_batches_are_time_major_spikes_with_one_hot_targets(task: Digits) -> None:
    batch = next(task.train_batches(8, torch.Generator().manual_seed(0)))
    assert batch.xs.shape == (6, 8, 64) and batch.xs.dtype == torch.float32
    assert set(batch.xs.unique().tolist()) <= {0.0, 1.0}
    assert isinstance(batch.targets, torch.Tensor) and batch.targets.shape == (6, 8, 10)
    assert torch.equal(batch.targets.sum(-1), torch.ones(6, 8))  # one-hot at every step
    assert batch.reset and batch.mask is None


def test_eval_batches_are_frozen(task: Digits) -> None:
    a = torch.cat([b.xs for b in task.eval_batches("test", 5)], dim=1)
    b = torch.cat([b.xs for b in task.eval_batches("test", 7)], dim=1)
    assert a.shape == (6, 16, 64) and torch.equal(a, b)
    with pytest.raises(ValueError, match="split"):
        next(task.eval_batches("train", 4))


def test_targets_at_the_last_step_only_score_the_last_step() -> None:
    """targets_at="last": the class at the last step, None before it; the metric reads the last
    step's logits only (an earlier step's wrong logits do not count)."""
    task = Digits(steps=4, train_size=8, test_size=8, targets_at="last")
    batch = next(task.eval_batches("test", 8))
    labels = batch.targets[-1].argmax(-1)
    assert batch.targets[:3] == [None, None, None] and batch.targets[-1].shape == (8, 10)
    ys = torch.zeros(4, 8, 10)
    ys[:3, :, (labels + 1) % 10] = 100.0  # wrong, and large, before the last step
    ys[3, torch.arange(8), labels] = 1.0
    metric = task.metric()
    metric.update(ys, batch)
    assert metric.value() == 1.0
    with pytest.raises(ValueError, match="targets_at must be 'every' or 'last'"):
        Digits(steps=2, targets_at="first")


def test_latency_code_gives_at_most_one_spike_per_pixel() -> None:
    task = get_task("digits", encoding="latency", steps=8, train_size=8, test_size=8)
    batch = next(task.eval_batches("valid", 8))
    assert batch.xs.sum(0).max() == 1


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="encoding"):
        Digits(encoding="phase")
    with pytest.raises(ValueError, match="steps"):
        Digits(steps=0)


def test_default_network_and_training_steps(task: Digits, rule: str) -> None:
    net = task.network()
    assert (net.n_in, net.n_out) == (64, 10)
    assert net.layers[0].n_out == Digits.defaults.hidden[0]
    train_steps(task, rule)


@pytest.mark.slow
def test_default_budget_learns_with_every_rule() -> None:
    """The default network and budget (what `make run` trains) learns with each rule."""
    from ostl.run.train import TrainConfig, train

    task = Digits()
    for rule in ("bptt", "ostl", "osttp"):
        result = train(TrainConfig(task="digits", rule=rule), progress=False, task=task)
        assert result.test_metric > 0.85, (rule, result.test_metric)


def test_the_shipped_data_equals_scikit_learns_copy() -> None:
    """ostl ships the digits in its own file (no scikit-learn needed); it holds the same data."""
    datasets = pytest.importorskip(
        "sklearn.datasets", reason="scikit-learn (the hardware extra) is not installed"
    )
    from ostl.tasks.digits import load_digits, load_raw_digits

    ref = datasets.load_digits()
    images, labels = load_raw_digits()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert (images.reshape(1797, 64) == ref.data).all() and (labels == ref.target).all()
    x, y = load_digits()
    assert x.dtype.name == "float32" and (x == (ref.data / 16.0).astype("float32")).all()
    assert (y == ref.target).all()
