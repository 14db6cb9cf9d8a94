"""Windowed error curves of a prequential run, and the recovery time after each drift.

Per-step errors are a float array with NaN at the steps without a target (those are not
scored). Every mean below is over the scored steps only.

- :func:`windowed_mean`: at step t, the mean error over the steps ``(t - window, t]`` (the
  first ``window - 1`` steps average what there is so far);
- :func:`cumulative_mean`: at step t, the mean error over the steps ``[0, t]``;
- :func:`recovery_times`: for each drift at step d (the first step of the new regime, as in
  :attr:`ostl.streams.Stream.drifts`), with the next drift (or the end of the errors) at e:

  1. the *level* before the drift is the mean error over the ``window`` steps before it,
     ``[max(d - window, p), d)``, where p is the previous drift (0 for the first one);
  2. the *threshold* is ``level + max(tol * level, atol)``: within ``tol`` of the level,
     relative, or within ``atol`` (absolute, in the metric's units) for a level near zero;
  3. the learner has *recovered* at the first step t in ``[d + window - 1, e)`` where the mean
     error over the ``window`` steps ``[t - window + 1, t]`` (all after the drift) is at most
     the threshold; the recovery time is ``t - d + 1``, the steps since the drift. It is at
     least ``window`` by construction (the first window wholly after the drift): a learner
     that the drift did not hurt scores exactly ``window``;
  4. None: not recovered before the next drift (or the end of the errors), or no level to
     return to (no scored step in the window before the drift).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import OptionError

__all__ = ["windowed_mean", "cumulative_mean", "recovery_times", "DEFAULT_TOL", "DEFAULT_ATOL"]

#: Relative tolerance of the recovery threshold.
DEFAULT_TOL = 0.1
#: Absolute tolerance of the recovery threshold (in the metric's units).
DEFAULT_ATOL = 0.01


def _sums(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative sums of the errors and of the scored steps, with a leading 0 (float64)."""
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 1:
        raise OptionError(f"errors: expected a 1-d array of per-step errors, got shape {e.shape}")
    scored = ~np.isnan(e)
    total = np.concatenate(([0.0], np.cumsum(np.where(scored, e, 0.0))))
    count = np.concatenate(([0], np.cumsum(scored)))
    return total, count


def _ratio(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    out = np.full(total.shape, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _check_window(window: int) -> None:
    if not isinstance(window, (int, np.integer)) or isinstance(window, bool) or window < 1:
        raise OptionError(f"window must be a positive integer, got {window!r}")


def windowed_mean(errors: np.ndarray, window: int) -> np.ndarray:
    """Mean error over the last ``window`` steps at every step (NaN where none was scored)."""
    _check_window(window)
    total, count = _sums(errors)
    lo = np.maximum(np.arange(1, len(total)) - window, 0)
    return _ratio(total[1:] - total[lo], count[1:] - count[lo])


def cumulative_mean(errors: np.ndarray) -> np.ndarray:
    """Mean error since the first step, at every step (NaN before the first scored step)."""
    total, count = _sums(errors)
    return _ratio(total[1:], count[1:])


def recovery_times(
    errors: np.ndarray,
    drifts: Sequence[int],
    window: int,
    *,
    tol: float = DEFAULT_TOL,
    atol: float = DEFAULT_ATOL,
) -> list[int | None]:
    """Steps from each drift until the windowed error is back at its level before the drift.

    See the module docstring for the exact definition.

    Args:
        errors: per-step errors (NaN at steps without a target).
        drifts: the drift steps, increasing, each in ``(0, len(errors))``.
        window: steps per window (the level before the drift and the mean after it).
        tol: relative tolerance of the threshold.
        atol: absolute tolerance of the threshold (for a level near zero).

    Returns:
        One recovery time (or None) per drift.

    Raises:
        OptionError: drifts not increasing or outside the errors, a bad window or tolerance.
    """
    _check_window(window)
    if not (tol >= 0 and atol >= 0):
        raise OptionError(f"tol and atol must be non-negative, got tol={tol}, atol={atol}")
    total, count = _sums(errors)
    n = len(total) - 1
    ds = [int(d) for d in drifts]
    if any(not 0 < d < n for d in ds) or any(b <= a for a, b in zip(ds, ds[1:])):
        raise OptionError(f"drifts must increase and lie in (0, {n}), got {list(drifts)}")
    out: list[int | None] = []
    for i, d in enumerate(ds):
        prev = ds[i - 1] if i else 0
        end = ds[i + 1] if i + 1 < len(ds) else n
        lo = max(d - window, prev)
        scored = count[d] - count[lo]
        if scored == 0:
            out.append(None)
            continue
        level = (total[d] - total[lo]) / scored
        threshold = level + max(tol * abs(level), atol)
        ends = np.arange(d + window, end + 1)  # exclusive ends of the full windows after d
        s = count[ends] - count[ends - window]
        m = _ratio(total[ends] - total[ends - window], s)
        hit = np.flatnonzero(m <= threshold)  # NaN (no scored step) compares False
        out.append(int(ends[hit[0]] - d) if len(hit) else None)
    return out
