"""The library's own error types and the input checks that raise them.

Every check names what was expected and what was given, so a user can fix the call without
reading the source. The error classes also derive from the matching built-in exception
(``ValueError``, ``TypeError``, ...) so generic handlers keep working.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

__all__ = [
    "OSTLError",
    "ShapeError",
    "DTypeError",
    "DeviceError",
    "NonFiniteError",
    "UnsupportedError",
    "LayerTypeError",
    "TraceTooLargeError",
    "CheckpointError",
    "TargetError",
    "OptionError",
    "check_tensor",
    "check_finite",
    "all_finite",
    "norm_total",
    "nonfinite_names",
]


class OSTLError(Exception):
    """Base class of every error ostl raises on purpose."""


class ShapeError(OSTLError, ValueError):
    """A tensor has the wrong number of dimensions or the wrong size."""


class DTypeError(OSTLError, TypeError):
    """A tensor has the wrong dtype (e.g. integer inputs, or float32 against a float64 net)."""


class DeviceError(OSTLError, ValueError):
    """A tensor lives on another device than the network's parameters."""


class NonFiniteError(OSTLError, ValueError):
    """A tensor holds NaN or Inf."""


class UnsupportedError(OSTLError, NotImplementedError):
    """A rule was asked to handle a layer or a configuration it cannot handle."""


class LayerTypeError(UnsupportedError, TypeError):
    """A module that is not an ``ostl.Layer`` / ``ostl.Readout`` where a network layer belongs."""


class TraceTooLargeError(UnsupportedError, MemoryError):
    """An exact eligibility trace (or an RTRL influence matrix) would not fit the memory limit."""


class OptionError(OSTLError, ValueError):
    """An option or argument is out of range or of the wrong kind (e.g. ``update_every=0``)."""


class TargetError(OSTLError, ValueError):
    """A target does not fit the loss function or the rule (wrong kind, shape or dtype)."""


class CheckpointError(OSTLError, ValueError):
    """A checkpoint is corrupt, truncated, foreign, or does not match the run resuming from it."""


def check_tensor(
    x: object,
    name: str,
    *,
    shape: Sequence[int | None] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    finite: bool = False,
) -> Tensor:
    """Check one user-supplied tensor; return it unchanged.

    Args:
        x: the value to check.
        name: how the error message calls it (e.g. ``"xs"``, ``"x_t"``).
        shape: expected shape; ``None`` entries match any size. The number of dimensions must
            match exactly: nothing is broadcast.
        dtype: expected dtype (floating tensors only, when given).
        device: expected device.
        finite: also reject NaN and Inf.
    """
    if not isinstance(x, Tensor):
        raise DTypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if shape is not None:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        if x.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
            raise ShapeError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        raise DTypeError(
            f"{name}: expected dtype {dtype} (the network's parameter dtype), got {x.dtype}"
        )
    if device is not None and x.device != device:
        raise DeviceError(
            f"{name}: expected a tensor on {device} (where the network lives), got {x.device}"
        )
    if finite:
        check_finite(x, name)
    return x


def norm_total(tensors: Iterable[Tensor]) -> Tensor | None:
    """The sum of the norms of the floating-point ``tensors``: a 0-dim tensor on the first
    one's device, computed there without a host synchronisation (None if there is none).

    One fused ``torch._foreach_norm`` per device. A norm is NaN or Inf whenever its tensor
    holds a NaN or an Inf, so a finite total proves every element finite; a non-finite total
    may also be an overflow of large finite values (see :func:`all_finite`).
    """
    by_device: dict[torch.device, list[Tensor]] = {}
    for t in tensors:
        if t.is_floating_point():
            by_device.setdefault(t.device, []).append(t)
    totals = []
    for floats in by_device.values():
        norms = torch._foreach_norm(floats)
        if len(norms) == 1:
            totals.append(norms[0])
        elif all(n.dtype == norms[0].dtype for n in norms):
            totals.append(torch.stack(norms).sum())
        else:
            totals.append(torch.stack([n.double() for n in norms]).sum())
    if len(totals) <= 1:
        return totals[0] if totals else None
    first = totals[0].device
    return torch.stack([t.to(first, torch.float64) for t in totals]).sum()


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """True if no floating-point tensor among ``tensors`` holds NaN or Inf (one host sync).

    Fast path: :func:`norm_total`, read back once. A non-finite total (possibly an overflow of
    large finite values) is confirmed element by element. A few operations for any number of
    tensors, and one synchronisation.
    """
    floats = [t for t in tensors if t.is_floating_point()]
    total = norm_total(floats)
    if total is None or math.isfinite(float(total)):
        return True
    return all(bool(torch.isfinite(t).all()) for t in floats)


def nonfinite_names(named: Iterable[tuple[str, Tensor]]) -> list[str]:
    """The names of the floating-point tensors that hold NaN or Inf (one sync per tensor when
    some do; one in all when none does)."""
    named = [(n, t) for n, t in named if t.is_floating_point()]
    if all_finite(t for _, t in named):
        return []
    return [n for n, t in named if not bool(torch.isfinite(t).all())]


def check_finite(x: Tensor, name: str) -> Tensor:
    """Raise :class:`NonFiniteError` if ``x`` holds NaN or Inf."""
    if x.is_floating_point() and not all_finite((x,)):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise NonFiniteError(f"{name}: expected finite values, found {n_nan} NaN and {n_inf} Inf")
    return x
