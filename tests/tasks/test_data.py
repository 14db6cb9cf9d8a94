"""Shared data helpers: spike codes, splits, batching, per-step targets, optional imports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ostl.tasks.data import (
    MissingDependencyError,
    OneHotSteps,
    batch_slices,
    cache_dir,
    latency_code,
    one_hot,
    rate_code,
    require,
    split_indices,
    step_targets,
)


def test_rate_code_fires_at_the_given_probability() -> None:
    x = torch.tensor([[0.0, 0.5, 1.0]])
    spikes = rate_code(x, 4000, torch.Generator().manual_seed(0), max_rate=0.8)
    assert spikes.shape == (4000, 1, 3)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    rates = spikes.mean(0)[0]
    assert rates[0] == 0
    assert abs(rates[1] - 0.4) < 0.03 and abs(rates[2] - 0.8) < 0.03


def test_latency_code_one_spike_brighter_earlier() -> None:
    x = torch.tensor([[1.0, 0.5, 0.0, 0.05]])
    spikes = latency_code(x, 11)
    assert spikes.sum(0).tolist() == [[1.0, 1.0, 0.0, 0.0]]  # dark pixels stay silent
    assert spikes[0, 0, 0] == 1 and spikes[5, 0, 1] == 1


def test_split_is_a_seeded_partition() -> None:
    parts = split_indices(100, (0.2, 0.1), seed=3)
    assert [len(p) for p in parts] == [20, 10, 70]
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    again = split_indices(100, (0.2, 0.1), seed=3)
    assert all((a == b).all() for a, b in zip(parts, again))


def test_batch_slices_cover_everything_once() -> None:
    idx = torch.cat(list(batch_slices(10, 3, torch.Generator().manual_seed(0))))
    assert sorted(idx.tolist()) == list(range(10))
    assert [len(b) for b in batch_slices(10, 3)] == [3, 3, 3, 1]


def test_step_targets_every_or_last() -> None:
    t = one_hot(torch.tensor([2, 0]), 3)
    every = step_targets(t, 4, "every")
    assert isinstance(every, torch.Tensor) and every.shape == (4, 2, 3) and every.dtype == t.dtype
    last = step_targets(t, 4, "last")
    assert list(last[:3]) == [None] * 3 and torch.equal(last[3], t)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every"):
        step_targets(t, 4, "sometimes")


def test_one_hot_steps_builds_float_targets_on_access() -> None:
    labels = torch.tensor([[1, 2], [0, 1]])
    steps = OneHotSteps(labels, 3)
    assert len(steps) == 2
    assert steps[1].tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def test_require_names_the_missing_package() -> None:
    with pytest.raises(MissingDependencyError, match="pip install no-such-package"):
        require("no_such_module_xyz", "no-such-package")


def test_cache_dir_honours_the_environment(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OSTL_CACHE", str(tmp_path))
    assert str(cache_dir()) == str(tmp_path)
