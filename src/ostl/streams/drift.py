"""drift: a synthetic signal whose dynamics change at random times (concept drift).

The signal is a sum of ``components`` sinusoids,

    s(t) = Σ_k a_k sin φ_k(t),    φ_k(t + 1) = φ_k(t) + ω_k(t),

whose angular frequencies ω_k are constant between drifts and drawn afresh at each drift (each
period log-uniform in [``min_period``, ``max_period``] steps). The amplitudes are drawn once
(with Σ a_k² = 2, so s has unit variance) and the phases run on through a drift, so the signal
has no jump there: only its dynamics change, and nothing in the input marks the change. From a
drift step d on, the phases advance with the new frequencies (s(d + 1) is the first value they
make).

Drift times (:attr:`Drift.drifts`): the gaps between drifts are ``min_gap`` plus an exponential
of mean ``mean_gap - min_gap`` steps; the frequencies, amplitudes and drift times come from
``data_seed``. The seed of :meth:`~Drift.chunks` draws the initial phases and the observation
noise (Gaussian, standard deviation ``noise``): streams of different seeds drift at the same
steps.

Input at step t: the observed value o(t) = s(t) + noise (one input). Target: o(t + ``horizon``).
Why a recurrent network's memory matters: one value of a sum of K sinusoids does not tell where
the signal goes next (it rises and falls through every value); the signal obeys a linear
recurrence of order 2K, so the last 2K values, or the phases held in the network's state, do.
After a drift that recurrence changes and the learner must find the new one, online.

Loss: mean squared error; metric: squared error (1 for predicting 0, the signal's mean).
Default network: LSTM(32) without recurrent weights (each unit's cell is its memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..errors import OptionError
from ..losses import LossFn
from ..tasks.losses import mse
from .base import StreamDefaults
from .source import Source, check_int, check_number, squared_error

__all__ = ["Drift", "drift_times"]

#: Steps of one block of observation noise: the noise of step t is element t % NOISE_BLOCK of
#: block t // NOISE_BLOCK, drawn from (seed, block), so any window costs at most its own size
#: plus two blocks, and every chunking gives the same stream.
NOISE_BLOCK = 4096


def drift_times(length: int, min_gap: int, mean_gap: int, rng: np.random.Generator) -> list[int]:
    """The steps in (0, length) where the dynamics change: gaps of ``min_gap`` plus an
    exponential of mean ``mean_gap - min_gap``, rounded."""
    times: list[int] = []
    t = 0
    while True:
        extra = round(rng.exponential(mean_gap - min_gap)) if mean_gap > min_gap else 0
        t += min_gap + extra
        if t >= length:
            return times
        times.append(t)


@dataclass
class Drift(Source):
    """A sum of sinusoids whose frequencies change at random drift times; see the module
    docstring.

    Args:
        length: steps in the stream.
        components: sinusoids in the signal (K).
        min_period: shortest period of a component, in steps (at least 2).
        max_period: longest period of a component, in steps.
        min_gap: fewest steps between two drifts (and before the first).
        mean_gap: mean steps between two drifts.
        horizon: the target is the observed value this many steps ahead.
        noise: standard deviation of the Gaussian observation noise (0: none).
        data_seed: seed of the drift times, frequencies and amplitudes.
    """

    name = "drift"
    summary = "sum of sinusoids whose frequencies change at random times, predict ahead (MSE)"
    kind = "regression"
    metric = "squared error"
    defaults = StreamDefaults(cell="lstm", hidden=(32,), lr=3e-3)

    length: int = 20_000
    components: int = 3
    min_period: float = 8.0
    max_period: float = 64.0
    min_gap: int = 1500
    mean_gap: int = 4000
    horizon: int = 1
    noise: float = 0.0
    data_seed: int = 0
    _starts: np.ndarray = field(init=False, repr=False, compare=False)
    _omega: np.ndarray = field(init=False, repr=False, compare=False)
    _amp: np.ndarray = field(init=False, repr=False, compare=False)
    _at_start: dict[int, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _blocks: dict[tuple[int, int], np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._check_options()
        rng = np.random.default_rng([self.data_seed, 11])
        drifts = drift_times(self.length + self.horizon, self.min_gap, self.mean_gap, rng)
        #: segment j runs from _starts[j]; its frequencies are _omega[j] (K,)
        self._starts = np.array([0, *drifts], dtype=np.int64)
        lo, hi = math.log(self.min_period), math.log(self.max_period)
        periods = np.exp(rng.uniform(lo, hi, size=(len(self._starts), self.components)))
        self._omega = 2 * math.pi / periods
        amp = rng.uniform(0.5, 1.5, size=self.components)
        self._amp = amp * math.sqrt(2 / (amp**2).sum())  # Σ a² = 2: unit variance

    def _check_options(self) -> None:
        check_int(self.name, "length", self.length, 1)
        check_int(self.name, "components", self.components, 1)
        check_int(self.name, "min_gap", self.min_gap, 1)
        check_int(self.name, "mean_gap", self.mean_gap, 1)
        check_int(self.name, "horizon", self.horizon, 1)
        check_int(self.name, "data_seed", self.data_seed, 0)
        check_number(self.name, "min_period", self.min_period, 2.0, math.inf)
        check_number(self.name, "max_period", self.max_period, self.min_period, math.inf)
        check_number(self.name, "noise", self.noise, 0.0, math.inf)
        if self.mean_gap < self.min_gap:
            raise OptionError(
                f"drift: mean_gap ({self.mean_gap}) must be at least min_gap ({self.min_gap})"
            )

    @property
    def n_in(self) -> int:
        return 1

    @property
    def n_out(self) -> int:
        return 1

    @property
    def drifts(self) -> tuple[int, ...]:
        return tuple(int(t) for t in self._starts[1:] if t < self.length)

    @property
    def loss_fn(self) -> LossFn:
        return mse

    def error(self, y: Tensor, target: Tensor) -> Tensor:
        return squared_error(y, target, self.n_out)

    def periods(self) -> Tensor:
        """(segments, K) float64: the components' periods (steps): row 0 from step 0, row
        j >= 1 from step ``drifts[j - 1]`` on (a drift past the stream's end may add a row)."""
        return torch.from_numpy(2 * math.pi / self._omega)

    def amplitudes(self) -> Tensor:
        """(K,) float64: the components' amplitudes (Σ a² = 2)."""
        return torch.from_numpy(self._amp.copy())

    def signal(self, start: int, stop: int, seed: int = 0) -> Tensor:
        """The noise-free signal s(t), t in [start, stop): (stop - start,) float64."""
        at_start = self._phases(seed)
        t = np.arange(start, stop)
        seg = np.searchsorted(self._starts, t, side="right") - 1
        phase = at_start[seg] + self._omega[seg] * (t - self._starts[seg])[:, None]
        return torch.from_numpy(np.sin(phase) @ self._amp)

    def _phases(self, seed: int) -> np.ndarray:
        """(segments, K): the phases at every segment start, run on from the initial phases
        that ``seed`` draws (float64, wrapped: exact enough for any length that fits in
        memory). Kept per seed."""
        if seed not in self._at_start:
            phase0 = np.random.default_rng([seed, 12]).uniform(0, 2 * math.pi, self.components)
            steps = np.diff(self._starts)[:, None] * self._omega[:-1]
            phases = np.concatenate([phase0[None], phase0 + np.cumsum(steps, axis=0)])
            self._at_start[seed] = phases % (2 * math.pi)
        return self._at_start[seed]

    def _noise(self, start: int, stop: int, seed: int) -> Tensor:
        """Observation noise of steps [start, stop), the same for any window (NOISE_BLOCK)."""
        first, last = start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK
        blocks = [self._noise_block(seed, b) for b in range(first, last + 1)]
        noise = np.concatenate(blocks)[start - first * NOISE_BLOCK : stop - first * NOISE_BLOCK]
        return torch.from_numpy(noise * self.noise)

    def _noise_block(self, seed: int, block: int) -> np.ndarray:
        """Unit Gaussian noise of one block; the last few kept (small chunks reuse them)."""
        key = (seed, block)
        if key not in self._blocks:
            if len(self._blocks) >= 4:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[key] = np.random.default_rng([seed, 13, block]).standard_normal(
                NOISE_BLOCK
            )
        return self._blocks[key]

    def observed(self, start: int, stop: int, seed: int = 0) -> Tensor:
        """o(t) = s(t) + noise for t in [start, stop): (stop - start,) float64."""
        o = self.signal(start, stop, seed)
        return o + self._noise(start, stop, seed) if self.noise > 0 else o

    def window(self, start: int, stop: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        self._check_window(start, stop)
        o = self.observed(start, stop + self.horizon, seed).float()
        return o[: stop - start].unsqueeze(1), o[self.horizon :].unsqueeze(1)
