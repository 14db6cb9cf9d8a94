"""chorales: rolls parsed from music21, seeded split, masks, NLL of a uniform predictor."""

from __future__ import annotations

import math

import pytest
import torch

from ostl.tasks.chorales import N_KEYS, Chorales

from .conftest import train_steps


@pytest.fixture(scope="module")
def task() -> Chorales:
    # The first 20 pieces of the corpus (about 2 s to parse; cached after the first run).
    return Chorales(max_pieces=20)


def test_rolls_are_four_voice_88_key_frames(task: Chorales) -> None:
    pieces = task.pieces("train") + task.pieces("valid") + task.pieces("test")
    assert 15 <= len(pieces) <= 20  # pieces without the four S/A/T/B voices are skipped
    for p in pieces:
        assert p.shape[1] == N_KEYS and p.shape[0] >= 2
        assert set(p.unique().tolist()) <= {0.0, 1.0}
        assert 1 <= p.sum(1).max() <= 4  # at most four voices sound at once
    assert abs(len(task.pieces("test")) - 0.2 * len(pieces)) <= 1


def test_uniform_predictor_nll_is_88_log_2_per_frame(task: Chorales) -> None:
    metric = task.metric()
    frames = 0
    for batch in task.eval_batches("test", 3):
        assert batch.mask is not None and batch.mask.shape == batch.xs.shape[:2]
        frames += int(batch.mask.sum())
        metric.update(torch.zeros_like(batch.xs), batch)
    assert frames == sum(len(p) - 1 for p in task.pieces("test"))  # padding does not count
    assert metric.value() == pytest.approx(88 * math.log(2))


def test_next_frame_targets_and_training(task: Chorales, rule: str) -> None:
    batch = next(task.train_batches(4, torch.Generator().manual_seed(0)))
    assert torch.equal(batch.xs[1:], batch.targets[:-1])  # the target is the next frame
    assert batch.mask is None
    train_steps(task, rule, batches=1)


@pytest.mark.slow
def test_the_whole_corpus_parses_into_about_340_pieces() -> None:
    """All Riemenschneider chorales (about 20 s to parse when not cached)."""
    full = Chorales()
    pieces = full.pieces("train") + full.pieces("valid") + full.pieces("test")
    assert 300 <= len(pieces) <= 371
    assert 15_000 <= sum(len(p) for p in pieces) <= 20_000
