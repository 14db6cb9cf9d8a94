"""spoken-digits: the words "zero" to "nine" by synthetic speakers, as cochlea spike trains.

Data, made here and offline (no recordings are downloaded): eSpeak NG
(:mod:`ostl.tasks.audio.synth`, from the ``espeakng-loader`` wheel: ``pip install
"ostl[speech]"``) speaks the ten digits. A *speaker* is a combination, drawn with ``data_seed``,
of an English accent (British, American, Caribbean, Scottish, Received Pronunciation,
Lancaster, West Midlands, New York), a voice variant (:data:`~.audio.synth.VARIANTS`: male,
female and Klatt voices), a speaking rate (130–220 words per minute), a pitch (20–80 of 0–99)
and a pitch range (20–90). Every speaker says every digit ``repeats`` times; each repetition
after the first changes the rate (±10 %) and pitch (±5) a little, and every utterance starts
after a random delay of 0–100 ms. Class k is the digit k.

Front end (:mod:`ostl.tasks.audio.cochlea`): each utterance (peak-normalised, 1 s) goes
through ``channels`` mel filters (50 Hz–8 kHz), log compression, and send-on-delta spike
encoding (a spike each time a channel's level rises by ``threshold`` dB; silence gives none),
binned into ``steps`` time steps (20 ms each by default): inputs (steps, B, channels) of 0/1.

Split **by speaker** (seeded by ``data_seed``): 20 % of the speakers for test, 10 % for
validation (at least one each), the rest for training, so the test voices are never heard in
training. Making the default data takes about half a minute the first time (a message and a
progress bar say so); it is then cached under :func:`ostl.tasks.data.cache_dir`
(``spoken-digits-v1-….npz``, keyed by the options that change the data and the eSpeak NG
package version).

Targets and loss: the class as a float one-hot vector at every step *where the word sounds*
(from the utterance's first input spike to its last; :func:`sounding`), a zero vector before and
after it; softmax cross-entropy per step (a zero target adds no loss). The batch's ``mask``
marks the same steps, so the metric, the accuracy of the logits summed over them, ignores the
silence too. Chance: 10 %. (With a target in the silence as well, the online rules' updates at
the silent steps, which carry no evidence, made their accuracy swing from epoch to epoch.)

Default network: channels → LSTM(128) → 10 without recurrent weights (each unit keeps its
evidence in its cell), input weights ×2. An LSTM unit sums up a word over its whole length;
spiking cells without recurrent weights (``--cell snu``) see the last few steps only and learn
less (see ``ostl compare --task spoken-digits --cell snu``).
"""

from __future__ import annotations

import importlib.metadata
import os
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import OptionError
from .audio.cochlea import Cochlea
from .audio.synth import ACCENTS, SAMPLE_RATE, VARIANTS, Voice, espeak, synthesize
from .base import Defaults, IndexedTask
from .data import Batch, cache_dir, one_hot, preparing
from .losses import cross_entropy
from .metrics import Metric, SequenceAccuracy

__all__ = [
    "SpokenDigits",
    "WORDS",
    "speaker_voices",
    "split_speakers",
    "make_spoken_digits",
    "sounding",
]

#: The words, class k = WORDS[k].
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Version of the cached data's format and recipe (bump when either changes).
FORMAT = 1
#: Seconds of sound per utterance (cropped or zero-padded); ``steps`` bins cover it.
DURATION = 1.0
#: Longest random delay before an utterance starts (s).
MAX_DELAY = 0.1
CACHE = "spoken-digits-v{format}-{key}.npz"


def speaker_voices(speakers: int, seed: int) -> list[Voice]:
    """``speakers`` distinct synthetic voices drawn with ``seed`` (see the module docstring)."""
    rng = np.random.default_rng([seed, 1])
    variants: tuple[str | None, ...] = (None, *VARIANTS)
    voices: list[Voice] = []
    while len(voices) < speakers:
        voice = Voice(
            accent=ACCENTS[rng.integers(len(ACCENTS))],
            variant=variants[rng.integers(len(variants))],
            rate=int(rng.integers(130, 221)),
            pitch=int(rng.integers(20, 81)),
            range=int(rng.integers(20, 91)),
        )
        if voice not in voices:
            voices.append(voice)
    return voices


def split_speakers(speakers: int, seed: int) -> dict[str, np.ndarray]:
    """A seeded partition of the speaker indices: 20 % test, 10 % valid (at least one each),
    the rest train."""
    order = np.random.default_rng([seed, 2]).permutation(speakers)
    n_test = max(1, round(0.2 * speakers))
    n_valid = max(1, round(0.1 * speakers))
    return {
        "test": np.sort(order[:n_test]),
        "valid": np.sort(order[n_test : n_test + n_valid]),
        "train": np.sort(order[n_test + n_valid :]),
    }


def _utterances(voice: Voice, repeats: int, rng: np.random.Generator) -> np.ndarray:
    """Waveforms (10·repeats, DURATION·rate) float64 of one speaker: every word ``repeats``
    times, peak-normalised, each after a random delay."""
    samples = round(DURATION * SAMPLE_RATE)
    waves = np.zeros((len(WORDS) * repeats, samples))
    for r in range(repeats):
        for k, word in enumerate(WORDS):
            v = voice
            if r > 0:  # a slightly different take
                rate = round(voice.rate * rng.uniform(0.9, 1.1))
                pitch = int(np.clip(voice.pitch + rng.integers(-5, 6), 0, 99))
                v = replace(voice, rate=rate, pitch=pitch)
            audio = synthesize(word, v, seed=int(rng.integers(2**31))).astype(np.float64)
            audio /= max(1.0, float(np.abs(audio).max()))
            start = int(rng.integers(0, round(MAX_DELAY * SAMPLE_RATE) + 1))
            audio = audio[: samples - start]
            waves[r * len(WORDS) + k, start : start + len(audio)] = audio
    return waves


def make_spoken_digits(
    speakers: int, repeats: int, cochlea: Cochlea, seed: int, cache: Path | None = None
) -> dict[str, np.ndarray]:
    """Synthesise and encode the data set (slow: the user is told, see
    :func:`~.data.preparing`).

    Returns:
        ``spikes`` (steps, U, n_out) uint8, ``labels`` (U,) int64, ``speaker`` (U,) int64 (an
        index into ``voices``), ``voices`` (speakers,) str: eSpeak's voice names with rate,
        pitch and range.
    """
    voices = speaker_voices(speakers, seed)
    spikes, labels, owner = [], [], []
    items = list(enumerate(voices))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: several threads only wait on each other
    try:
        for s, voice in preparing("spoken-digits", items, cache, unit="speaker"):
            rng = np.random.default_rng([seed, 3, s])
            spikes.append(cochlea(_utterances(voice, repeats, rng)).numpy())
            labels.append(np.tile(np.arange(len(WORDS)), repeats))
            owner.append(np.full(len(WORDS) * repeats, s))
    finally:
        torch.set_num_threads(threads)
    names = [f"{v.name} rate={v.rate} pitch={v.pitch} range={v.range}" for v in voices]
    return {
        "spikes": np.concatenate(spikes, axis=1),
        "labels": np.concatenate(labels).astype(np.int64),
        "speaker": np.concatenate(owner).astype(np.int64),
        "voices": np.array(names),
    }


def sounding(spikes: Tensor) -> Tensor:
    """(T, B) bool: the steps from each utterance's first input spike to its last (all steps of
    an utterance without spikes), where the word sounds."""
    T = spikes.shape[0]
    on = spikes.sum(-1) > 0
    t = torch.arange(T).unsqueeze(1)
    first = torch.where(on, t, T).min(0).values
    last = torch.where(on, t, -1).max(0).values
    silent = ~on.any(0)
    return ((t >= first) & (t <= last)) | silent


def _espeak_version() -> str:
    try:
        return importlib.metadata.version("espeakng-loader")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class SpokenDigits(IndexedTask):
    """Spoken digits by synthetic speakers, as cochlea spikes; see the module docstring.

    Args:
        steps: time steps per utterance (bins over 1 s; 50: 20 ms each).
        channels: mel channels of the cochlea (inputs per step).
        threshold: level change (dB) per spike of the send-on-delta code.
        speakers: synthetic speakers (at least 3; fewer is faster to make).
        repeats: times each speaker says each digit.
        train_size: use only the first ``train_size`` training utterances (None: all).
        test_size: use only the first ``test_size`` valid/test utterances (None: all).
        data_seed: seed of the speakers, their split, and the delays and takes.
    """

    name = "spoken-digits"
    summary = "spoken digits by synthetic speakers (eSpeak NG), cochlea spikes (accuracy)"
    defaults = Defaults(cell="lstm", hidden=(128,), epochs=10, batch_size=32, lr=1e-3)
    spiking_input = True
    input_gain = 2.0
    quick = {"epochs": 4, "train_size": 1000}

    steps: int = 50
    channels: int = 64
    threshold: float = 2.0
    speakers: int = 150
    repeats: int = 2
    train_size: int | None = None
    test_size: int | None = None
    data_seed: int = 0
    _data: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, init=False, repr=False)
    _speakers: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    #: the voices of the speakers (eSpeak name, rate, pitch, range), by speaker index
    voices: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._check_options()
        data = self._load()
        shuffle = np.random.default_rng([self.data_seed, 4])
        limits = {"train": self.train_size, "valid": self.test_size, "test": self.test_size}
        for split, chosen in split_speakers(self.speakers, self.data_seed).items():
            idx = np.flatnonzero(np.isin(data["speaker"], chosen))
            if split == "train":  # speakers mixed, so that train_size keeps many of them
                idx = shuffle.permutation(idx)
            idx = idx[: limits[split]]
            self._data[split] = (
                torch.from_numpy(np.ascontiguousarray(data["spikes"][:, idx])),
                torch.from_numpy(data["labels"][idx]),
            )
            self._speakers[split] = data["speaker"][idx]
        self.voices = [str(v) for v in data["voices"]]

    def _check_options(self) -> None:
        for name, low in (("steps", 1), ("channels", 1), ("speakers", 3), ("repeats", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise OptionError(
                    f"spoken-digits: {name} must be an integer >= {low}, got {value!r}"
                )
        number = isinstance(self.threshold, (int, float)) and not isinstance(self.threshold, bool)
        if not number or not 0 < self.threshold < 100:
            raise OptionError(
                f"spoken-digits: threshold must be in (0, 100) dB, got {self.threshold}"
            )
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise OptionError(
                    f"spoken-digits: {name} must be a positive integer or None, got {value!r}"
                )

    @property
    def cochlea(self) -> Cochlea:
        """The front end that encodes this task's sound."""
        return Cochlea(
            sample_rate=SAMPLE_RATE,
            channels=self.channels,
            steps=self.steps,
            duration=DURATION,
            threshold=self.threshold,
            hop=min(0.005, DURATION / self.steps),
        )

    def cache_path(self) -> Path:
        """The cache file of this task's data."""
        key = (
            f"s{self.speakers}-r{self.repeats}-c{self.channels}-t{self.steps}-"
            f"th{self.threshold:g}-seed{self.data_seed}-espeak{_espeak_version()}"
        )
        return cache_dir() / CACHE.format(format=FORMAT, key=key)

    def _load(self) -> dict[str, np.ndarray]:
        """The data, from the cache if there, else made and cached (atomically)."""
        path = self.cache_path()
        if path.exists():
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        espeak()  # a clear error before anything else when eSpeak NG is missing
        data = make_spoken_digits(self.speakers, self.repeats, self.cochlea, self.data_seed, path)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz")
        try:
            np.savez_compressed(
                tmp,
                spikes=data["spikes"],
                labels=data["labels"],
                speaker=data["speaker"],
                voices=data["voices"],
            )
            os.replace(tmp, path)  # atomic: a concurrent build never reads half a file
        finally:
            tmp.unlink(missing_ok=True)
        return data

    @property
    def n_in(self) -> int:
        return self.cochlea.n_out

    @property
    def n_out(self) -> int:
        return len(WORDS)

    def split_size(self, split: str) -> int:
        return len(self._data[split][1])

    def split(self, split: str) -> tuple[Tensor, Tensor]:
        """Spikes (steps, U, channels) uint8 and labels (U,) of a split."""
        return self._data[split]

    def speakers_of(self, split: str) -> np.ndarray:
        """The speaker index (into :attr:`voices`) of every utterance of a split."""
        return self._speakers[split]

    #: the per-step loss (closed-form output error for the online rules)
    loss_fn = cross_entropy

    def metric(self) -> Metric:
        return SequenceAccuracy()

    def make_batch(self, split: str, idx: Tensor) -> Batch:
        spikes, labels = self._data[split]
        spikes, labels = spikes[:, idx], labels[idx]
        on = sounding(spikes)
        targets = one_hot(labels, 10).expand(self.steps, len(labels), 10) * on.unsqueeze(-1)
        return Batch(spikes.float(), targets, on)
