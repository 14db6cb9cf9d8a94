"""A cochlea-like front end: sound → mel filterbank → log level → send-on-delta spikes.

The steps, for waveforms ``waves`` (N, S) in [-1, 1] at ``sample_rate`` Hz:

1. **Window.** Each waveform is zero-padded to ``duration`` seconds, or cropped (the frames
   near the end still see the sound that follows, so a cut is not heard as a click).
2. **Filterbank.** A short-time Fourier transform (Hann window of ``window`` s, a frame every
   ``hop`` s, the frame centred on its time) and ``channels`` triangular filters equally spaced
   on the mel scale between ``fmin`` and ``fmax`` (HTK's mel formula, each filter's peak
   weight 1). The power of a channel is scaled so that a full-scale sine at the filter's centre
   frequency reads between about -3 and 0 dB (the filter also collects the window's leakage
   into the neighbouring frequency bins).
3. **Log compression.** ``level = 10·log10(power)`` in dB, clipped below at ``floor`` dB:
   anything quieter counts as silence.
4. **Spikes (send-on-delta).** Every channel keeps a reference level, starting at the floor.
   When the level rises ``threshold`` dB or more above the reference, the channel spikes and
   the reference moves up by whole thresholds; when it falls ``threshold`` dB or more below,
   the reference moves down (and, with ``down=True``, a second set of channels spikes). A
   steady sound therefore spikes at its onset only, silence never, and the code does not
   depend on the loudness of the sound above the floor.
5. **Binning.** The frames' spikes are binned into ``steps`` equal time steps over ``duration``
   (a step spikes if any of its frames does).

Output: uint8 spikes (steps, N, channels), or (steps, N, 2·channels) with ``down=True`` (rises
first, then falls). Only numpy and torch are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ...errors import DTypeError, NonFiniteError, OptionError, ShapeError

__all__ = ["Cochlea", "hz_to_mel", "mel_to_hz", "mel_filterbank", "delta_spikes", "bin_frames"]


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 2595·log10(1 + f/700)."""
    return np.asarray(2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0))


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return np.asarray(700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0))


def mel_filterbank(
    channels: int, n_fft: int, sample_rate: float, fmin: float, fmax: float
) -> Tensor:
    """Triangular mel filters (channels, n_fft // 2 + 1), peak weight 1, as float32.

    Filter k rises from centre k-1 to centre k and falls to centre k+1 (centres equally spaced
    in mel between ``fmin`` and ``fmax``). A filter narrower than the spacing of the FFT bins
    would catch no bin at all; it takes the bin nearest its centre instead.
    """
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), channels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    weights = np.clip(np.minimum(rising, falling), 0.0, None)
    empty = weights.sum(1) == 0
    weights[empty, np.abs(freqs[None, :] - centre[empty]).argmin(1)] = 1.0
    return torch.from_numpy(weights.astype(np.float32))


def delta_spikes(levels: Tensor, threshold: float, start: float) -> tuple[Tensor, Tensor]:
    """Send-on-delta spike counts of ``levels`` (F, ...) along the first axis.

    Every series keeps a reference, ``start`` at first. At each frame, a level ``k`` whole
    thresholds above the reference gives ``k`` up-spikes and moves the reference up by
    ``k·threshold``; ``k`` thresholds below, ``k`` down-spikes and the reference moves down.

    Returns:
        (up, down): int64 counts, both shaped like ``levels``.
    """
    if threshold <= 0:
        raise OptionError(f"the spike threshold must be positive, got {threshold}")
    reference = torch.full_like(levels[0], start)
    up, down = (
        torch.zeros_like(levels, dtype=torch.int64),
        torch.zeros_like(levels, dtype=torch.int64),
    )
    for f, level in enumerate(levels):
        rise = torch.floor((level - reference) / threshold).clamp(min=0)
        fall = torch.floor((reference - level) / threshold).clamp(min=0)
        reference = reference + (rise - fall) * threshold
        up[f], down[f] = rise.long(), fall.long()
    return up, down


def bin_frames(spikes: Tensor, frame_times: Tensor, steps: int, duration: float) -> Tensor:
    """Bin frame spikes (F, ...) at ``frame_times`` (F,) seconds into (steps, ...) uint8 0/1.

    Step ``i`` covers ``[i, i + 1)·duration/steps``; frames outside ``[0, duration)`` drop out.
    """
    index = torch.floor(frame_times * steps / duration).long()
    keep = (index >= 0) & (index < steps)
    counts = torch.zeros((steps, *spikes.shape[1:]), dtype=torch.int64)
    counts.index_add_(0, index[keep], (spikes[keep] > 0).long())
    return (counts > 0).to(torch.uint8)


@dataclass(frozen=True)
class Cochlea:
    """The front end's settings; calling it encodes waveforms (see the module docstring).

    Attributes:
        sample_rate: sample rate of the waveforms (Hz).
        channels: mel channels (frequency bands).
        steps: time steps of the output (bins over ``duration``).
        duration: seconds of sound per waveform (longer ones are cropped, shorter padded).
        threshold: level change (dB) per spike.
        floor: level (dB; a full-scale sine reads about 0 dB) below which a channel is silent.
        fmin: lowest filter edge (Hz).
        fmax: highest filter edge (Hz; at most half the sample rate).
        window: length of the Fourier window (s).
        hop: time between frames (s); at most ``duration / steps``.
        down: add channels that spike when the level falls.
    """

    sample_rate: float = 22050.0
    channels: int = 64
    steps: int = 100
    duration: float = 1.0
    threshold: float = 2.0
    floor: float = -60.0
    fmin: float = 50.0
    fmax: float = 8000.0
    window: float = 0.025
    hop: float = 0.005
    down: bool = False

    def __post_init__(self) -> None:
        positive = ("sample_rate", "duration", "threshold", "window", "hop")
        for name in positive:
            if not getattr(self, name) > 0:
                raise OptionError(f"cochlea: {name} must be positive, got {getattr(self, name)}")
        for name in ("channels", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(f"cochlea: {name} must be a positive integer, got {value!r}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise OptionError(
                f"cochlea: expected 0 <= fmin < fmax <= sample_rate / 2 = {self.sample_rate / 2}, "
                f"got fmin={self.fmin}, fmax={self.fmax}"
            )
        if self.hop > self.duration / self.steps:
            raise OptionError(
                f"cochlea: hop {self.hop} s is longer than a time step "
                f"(duration / steps = {self.duration / self.steps} s): steps would be empty"
            )

    @property
    def n_out(self) -> int:
        """Output channels: ``channels``, or twice that with ``down``."""
        return self.channels * (2 if self.down else 1)

    def _frames(self) -> tuple[int, int, int, int]:
        """(samples, window length, FFT size, hop) in samples."""
        samples = round(self.duration * self.sample_rate)
        win = max(2, round(self.window * self.sample_rate))
        # At least 1024 points (zero-padded beyond the window), so that narrow low filters
        # still see a few bins.
        n_fft = max(1024, 2 ** math.ceil(math.log2(win)))
        return samples, win, n_fft, max(1, round(self.hop * self.sample_rate))

    def levels(self, waves: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """Log levels (F, N, channels) in dB, clipped at ``floor``, and the frame times (F,) s."""
        x = _as_waves(waves)
        samples, win, n_fft, hop = self._frames()
        # Sound after the window still feeds the last frames (a hard cut would be a click).
        x = x[:, : samples + win // 2]
        x = torch.nn.functional.pad(x, (0, max(0, samples - x.shape[1])))
        window = torch.hann_window(win, periodic=True, dtype=x.dtype)
        spec = torch.stft(
            x, n_fft, hop, win, window, center=True, pad_mode="constant", return_complex=True
        )  # (N, n_fft // 2 + 1, F)
        # |X|² / (Σw)²: a sine of amplitude a peaks at a²/4 (-6 dB at full scale); ×2 for the
        # energy split between a bin and its mirror gives a²/2 (-3 dB), a sine's mean power.
        power = (spec.real.square() + spec.imag.square()) * (2 / float(window.sum()) ** 2)
        fb = mel_filterbank(self.channels, n_fft, self.sample_rate, self.fmin, self.fmax)
        bands = torch.matmul(fb, power).permute(2, 0, 1)  # (F, N, channels)
        db = (10 * torch.log10(bands.clamp(min=1e-30))).clamp(min=self.floor)
        times = torch.arange(db.shape[0], dtype=torch.float64) * hop / self.sample_rate
        return db, times

    def __call__(self, waves: Tensor | np.ndarray) -> Tensor:
        """Spikes (steps, N, n_out) uint8 of waveforms (N, S) in [-1, 1]."""
        db, times = self.levels(waves)
        up, down = delta_spikes(db, self.threshold, self.floor)
        spikes = torch.cat([up, down], dim=-1) if self.down else up
        return bin_frames(spikes, times, self.steps, self.duration)


def _as_waves(waves: Tensor | np.ndarray) -> Tensor:
    """Waveforms (N, S) as a float32 tensor; checks shape, dtype and values."""
    x = torch.as_tensor(waves)
    if x.dim() != 2:
        raise ShapeError(f"cochlea: expected waveforms (N, S), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(f"cochlea: expected at least one non-empty waveform, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise DTypeError(
            f"cochlea: expected float waveforms in [-1, 1], got {x.dtype} (divide int16 by 32768)"
        )
    if not torch.isfinite(x).all():
        raise NonFiniteError("cochlea: the waveforms hold NaN or Inf")
    return x.float()
