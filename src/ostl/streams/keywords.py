"""keywords: spotting spoken digits in one continuous stream of cochlea spikes.

Data: the utterances of the ``spoken-digits`` task (:mod:`ostl.tasks.spoken_digits`: the words
"zero" to "nine" by ``speakers`` synthetic eSpeak NG voices, each said ``repeats`` times, as
64-channel cochlea spike trains in 20 ms steps), built once and cached by that task (about half
a minute for the default 150 speakers; ``pip install "ostl[speech]"``). Every utterance of every
speaker is used (the task's train, valid and test speakers alike).

The stream: each utterance cut to the steps where its word sounds (from its first input spike to
its last, :func:`~ostl.tasks.spoken_digits.sounding`), the words one after the other with a
silence of ``min_gap`` to ``max_gap`` steps (uniform) before each. The cochlea's front end gives
no spikes in silence, so a silence is steps without spikes, exactly what the task's utterances
hold before and after their words.

Order (``order="accent"``, default): the utterances grouped by the speaker's accent (eSpeak NG's
English accents: British, American, Caribbean, Scottish, ...), the accents in a random order,
the utterances shuffled within each accent. The accent changes a few times along the stream (7
times with the default speakers), and :attr:`Keywords.drifts` lists those steps: the first step
of the first word in the new accent. ``order="shuffled"``: all utterances shuffled, no drifts.
The order and the silences come from ``data_seed``; the seed of :meth:`~Keywords.chunks` is not
used (the stream is fixed by its options, so its drift steps are too).

Target at every step (11 classes): the digit while its word sounds, class 10 ("no word") in the
silences. Loss: softmax cross-entropy; metric: error rate (0 when the largest output is the
target's class, 1 otherwise). Always answering "no word" errs on the fraction of steps inside
words, about 42 % with the default options.

Default network: 64 → LSTM(64) → 11 without recurrent weights, input weights ×2 (as the
spoken-digits task's network, made smaller for a cheap step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..errors import OptionError
from ..losses import LossFn
from ..tasks.data import one_hot
from ..tasks.losses import cross_entropy
from ..tasks.spoken_digits import WORDS, SpokenDigits, sounding, speaker_voices
from .base import StreamDefaults
from .source import Source, check_int, error_rate

__all__ = ["Keywords", "Word", "NO_WORD"]

#: The class of the steps between words.
NO_WORD = len(WORDS)


class Word(NamedTuple):
    """One word of the stream: it sounds at steps ``start`` to ``stop - 1``."""

    start: int
    stop: int
    digit: int
    speaker: int
    accent: str


@dataclass
class Keywords(Source):
    """Spoken digits with silences between them, one stream; see the module docstring.

    Args:
        speakers: synthetic speakers (at least 3; the spoken-digits task's option).
        repeats: times each speaker says each digit.
        min_gap: fewest silent steps before a word (20 ms each).
        max_gap: most silent steps before a word.
        order: "accent" (grouped by accent, the accent changes are the drifts) or "shuffled".
        words: use only the first ``words`` words of that order (None: all).
        data_seed: seed of the speakers (as the task's), the order and the silences.
    """

    name = "keywords"
    summary = "spoken digits (eSpeak NG, cochlea spikes) in one stream with silences (error rate)"
    kind = "classification"
    metric = "error rate"
    defaults = StreamDefaults(cell="lstm", hidden=(64,), lr=3e-3)
    spiking_input = True
    input_gain = 2.0

    speakers: int = 150
    repeats: int = 2
    min_gap: int = 5
    max_gap: int = 50
    order: Literal["accent", "shuffled"] = "accent"
    words: int | None = None
    data_seed: int = 0
    _x: Tensor = field(init=False, repr=False, compare=False)
    _label: Tensor = field(init=False, repr=False, compare=False)
    _words: list[Word] = field(init=False, repr=False, compare=False)
    _drifts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_options()
        task = SpokenDigits(speakers=self.speakers, repeats=self.repeats, data_seed=self.data_seed)
        splits = ("train", "valid", "test")
        spikes = torch.cat([task.split(s)[0] for s in splits], dim=1)  # (steps, U, channels)
        labels = torch.cat([task.split(s)[1] for s in splits]).numpy()
        speaker = np.concatenate([task.speakers_of(s) for s in splits])
        accents = [v.accent for v in speaker_voices(self.speakers, self.data_seed)]
        rng = np.random.default_rng([self.data_seed, 21])
        chosen = self._order([accents[s] for s in speaker], rng)[: self.words]
        on = sounding(spikes[:, chosen]).numpy()  # (steps, n) bool
        gaps = rng.integers(self.min_gap, self.max_gap + 1, size=len(chosen))
        sizes = on.sum(0)
        stops = np.cumsum(gaps + sizes)
        x = np.zeros((int(stops[-1]), spikes.shape[2]), dtype=np.uint8)
        label = np.full(len(x), NO_WORD, dtype=np.int64)
        self._words = []
        for i, u in enumerate(chosen):
            start = int(stops[i] - sizes[i])
            x[start : stops[i]] = spikes[on[:, i], u].numpy()
            label[start : stops[i]] = labels[u]
            self._words.append(
                Word(start, int(stops[i]), int(labels[u]), int(speaker[u]), accents[speaker[u]])
            )
        self._x, self._label = torch.from_numpy(x), torch.from_numpy(label)
        self._drifts = ()
        if self.order == "accent":
            self._drifts = tuple(
                w.start for v, w in zip(self._words, self._words[1:]) if w.accent != v.accent
            )

    def _check_options(self) -> None:
        check_int(self.name, "speakers", self.speakers, 3)
        check_int(self.name, "repeats", self.repeats, 1)
        check_int(self.name, "min_gap", self.min_gap, 0)
        check_int(self.name, "max_gap", self.max_gap, self.min_gap)
        check_int(self.name, "words", self.words, 1, none=True)
        check_int(self.name, "data_seed", self.data_seed, 0)
        if self.order not in ("accent", "shuffled"):
            raise OptionError(f"keywords: order must be 'accent' or 'shuffled', got {self.order!r}")

    def _order(self, accent: list[str], rng: np.random.Generator) -> np.ndarray:
        """The utterances' order: grouped by accent (accents in a random order, shuffled within)
        or all shuffled."""
        if self.order == "shuffled":
            return rng.permutation(len(accent))
        names = np.array(accent)
        groups = [np.flatnonzero(names == a) for a in rng.permutation(sorted(set(accent)))]
        return np.concatenate([rng.permutation(g) for g in groups])

    @property
    def layout(self) -> list[Word]:
        """Every word of the stream, in order: where it sounds, its digit, speaker, accent."""
        return list(self._words)

    @property
    def n_in(self) -> int:
        return self._x.shape[1]

    @property
    def n_out(self) -> int:
        return NO_WORD + 1

    @property
    def length(self) -> int:
        return len(self._label)

    @property
    def drifts(self) -> tuple[int, ...]:
        return self._drifts

    @property
    def loss_fn(self) -> LossFn:
        return cross_entropy

    def error(self, y: Tensor, target: Tensor) -> Tensor:
        return error_rate(y, target, self.n_out)

    def labels(self, start: int, stop: int) -> Tensor:
        """The classes (int64) of steps [start, stop): a digit, or :data:`NO_WORD`."""
        return self._label[start:stop]

    def window(self, start: int, stop: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        self._check_window(start, stop)
        return self._x[start:stop].float(), one_hot(self.labels(start, stop), self.n_out)
