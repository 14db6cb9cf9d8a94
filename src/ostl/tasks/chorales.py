"""chorales: polyphonic music prediction on J. S. Bach's chorales (music21 corpus).

Data: the Riemenschneider chorales of ``music21``'s corpus (``corpus.chorales.Iterator``), four
voices (Soprano, Alto, Tenor, Bass) sampled at every quarter note into 88-key piano rolls (MIDI
21–108; a key is on at step t if a note of any voice sounds at the start of quarter t).
Duplicate rolls are dropped. Parsing takes a minute or two the first time (a message and a
progress bar say so); the rolls are then cached under :func:`ostl.tasks.data.cache_dir`
(``chorales-v1-all.npz``), never in the repository.
``max_pieces`` parses only the first pieces of the corpus (for tests: about 0.1 s a piece).

Split: a seeded random split (``data_seed``) of 60 % train, 20 % valid, 20 % test. **This is
not the classic JSB Chorales split** (Boulanger-Lewandowski et al. 2012, 229/76/77 pieces at
quarter-note resolution from another source); numbers are not directly comparable with it.

Task: at step t the input is frame t, the target frame t+1 (multi-hot, 88 keys). Loss and
metric: frame-level negative log-likelihood of 88 independent Bernoulli units, summed over
keys and averaged over frames (nats per frame; a uniform predictor scores 88·log 2 ≈ 61.0).
Training batches group pieces of similar length and crop them to the shortest piece in the
batch; evaluation pads and masks, so every frame of every test piece counts once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import Defaults, Task
from .data import Batch, cache_dir, preparing, require, split_indices
from .losses import bernoulli_nll
from .metrics import FrameNLL, Metric

__all__ = ["Chorales", "load_rolls", "parse_rolls"]

N_KEYS = 88
LOWEST = 21  # MIDI number of the piano's lowest key (A0)
CACHE = "chorales-v1-{}.npz"
VOICES = ("Soprano", "Alto", "Tenor", "Bass")


def _roll(score: object) -> np.ndarray | None:
    """(T, 88) uint8 roll of a four-voice chorale at quarter-note steps, or None."""
    parts = {p.partName: p for p in score.parts}  # type: ignore[attr-defined]
    if not all(v in parts for v in VOICES):
        return None
    steps = int(math.ceil(float(score.highestTime)))  # type: ignore[attr-defined]
    if steps < 2:
        return None
    roll = np.zeros((steps, N_KEYS), dtype=np.uint8)
    for v in VOICES:
        for n in parts[v].flatten().notes:
            start, end = float(n.offset), float(n.offset + n.quarterLength)
            for p in n.pitches:
                k = p.midi - LOWEST
                if 0 <= k < N_KEYS:
                    roll[int(math.ceil(start)) : int(math.ceil(end)), k] = 1
    return roll


def parse_rolls(max_pieces: int | None = None, cache: Path | None = None) -> list[np.ndarray]:
    """Parse the Riemenschneider chorales of the music21 corpus into piano rolls (slow: the
    user is told, with a progress bar on a terminal, see :func:`~.data.preparing`).

    Args:
        max_pieces: parse only the first ``max_pieces`` files of the corpus (None: all).
        cache: where the rolls will be cached (named in the message).
    """
    music21 = require("music21", "music21")
    rolls, seen = [], set()
    names = list(music21.corpus.chorales.Iterator(returnType="filename"))[:max_pieces]
    for name in preparing("chorales", names, cache, unit="piece"):
        roll = _roll(music21.corpus.parse(name))
        if roll is None:
            continue
        key = roll.tobytes() + bytes(str(roll.shape), "ascii")
        if key not in seen:
            seen.add(key)
            rolls.append(roll)
    return rolls


def load_rolls(max_pieces: int | None = None) -> list[np.ndarray]:
    """The piano rolls, from the cache if present (parsed and cached otherwise)."""
    path = cache_dir() / CACHE.format("all" if max_pieces is None else max_pieces)
    if path.exists():
        with np.load(path) as z:
            flat, lengths = z["rolls"], z["lengths"]
        return np.split(flat, np.cumsum(lengths)[:-1])
    rolls = parse_rolls(max_pieces, cache=path)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, rolls=np.concatenate(rolls), lengths=[len(r) for r in rolls])
    tmp.replace(path)  # atomic: concurrent runs never read half a file
    return rolls


@dataclass
class Chorales(Task):
    """Next-frame prediction on Bach chorale piano rolls; see the module docstring.

    Args:
        train_size: use only the first ``train_size`` training pieces (None: all).
        test_size: use only the first ``test_size`` valid/test pieces (None: all).
        data_seed: seed of the split.
        max_pieces: parse only the first ``max_pieces`` chorales of the corpus (None: all).
    """

    name = "chorales"
    summary = "Bach chorales (music21), 88-key rolls, next-frame prediction (NLL per frame)"
    defaults = Defaults(cell="lstm", hidden=(128,), epochs=20, batch_size=16, lr=5e-3)
    quick = {"epochs": 2, "train_size": 48}

    train_size: int | None = None
    test_size: int | None = None
    data_seed: int = 0
    max_pieces: int | None = None
    _pieces: dict[str, list[Tensor]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_pieces is not None and self.max_pieces < 5:
            raise ValueError(f"chorales: max_pieces must be at least 5, got {self.max_pieces}")
        rolls = load_rolls(self.max_pieces)
        test, valid, train = split_indices(len(rolls), (0.2, 0.2), self.data_seed)
        limits = {"train": self.train_size, "valid": self.test_size, "test": self.test_size}
        for split, idx in (("train", train), ("valid", valid), ("test", test)):
            idx = idx[: limits[split]] if limits[split] is not None else idx
            self._pieces[split] = [torch.from_numpy(rolls[i].astype(np.float32)) for i in idx]

    @property
    def n_in(self) -> int:
        return N_KEYS

    @property
    def n_out(self) -> int:
        return N_KEYS

    def pieces(self, split: str) -> list[Tensor]:
        """The (T, 88) rolls of a split."""
        return self._pieces[split]

    #: the per-step loss (closed-form output error for the online rules)
    loss_fn = bernoulli_nll

    def metric(self) -> Metric:
        return FrameNLL()

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        pieces = self._pieces["train"]
        # Group pieces of similar length (sorted, with random tie order), crop each batch to
        # its shortest piece, and visit the batches in random order.
        noise = torch.rand(len(pieces), generator=generator)
        order = sorted(range(len(pieces)), key=lambda i: (len(pieces[i]), float(noise[i])))
        groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for g in torch.randperm(len(groups), generator=generator).tolist():
            chosen = [pieces[i] for i in groups[g]]
            T = min(len(p) for p in chosen)
            rolls = torch.stack([p[:T] for p in chosen], dim=1)  # (T, B, 88)
            yield Batch(rolls[:-1], rolls[1:])

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        pieces = self._pieces[self.check_split(split)]
        for i in range(0, len(pieces), batch_size):
            chosen = pieces[i : i + batch_size]
            T = max(len(p) for p in chosen)
            rolls = torch.zeros(T, len(chosen), N_KEYS)
            mask = torch.zeros(T - 1, len(chosen), dtype=torch.bool)
            for b, p in enumerate(chosen):
                rolls[: len(p), b] = p
                mask[: len(p) - 1, b] = True
            yield Batch(rolls[:-1], rolls[1:], mask)

    def num_train_batches(self, batch_size: int) -> int:
        return math.ceil(len(self._pieces["train"]) / batch_size)
