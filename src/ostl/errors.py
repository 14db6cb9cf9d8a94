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
    "TraceTooLargeError",
    "CheckpointError",
    "TargetError",
    "OptionError",
    "check_tensor",
    "check_finite",
    "all_finite",
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


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """True if no floating-point tensor among ``tensors`` holds NaN or Inf (one host sync).

    Fast path: the norms of all tensors in one fused call, summed. A norm is NaN or Inf
    whenever its tensor holds a NaN or an Inf, so a finite sum proves every element finite; a
    non-finite sum (possibly an overflow of large finite values) is confirmed element by
    element. A few operations for any number of tensors, and one synchronisation.
    """
    floats = [t for t in tensors if t.is_floating_point()]
    if not floats:
        return True
    norms = torch._foreach_norm(floats)
    if len(norms) == 1:
        total = norms[0]
    elif all(n.dtype == norms[0].dtype for n in norms):
        total = torch.stack(norms).sum()
    else:
        total = torch.stack([n.double() for n in norms]).sum()
    if math.isfinite(float(total)):
        return True
    return all(bool(torch.isfinite(t).all()) for t in floats)


def check_finite(x: Tensor, name: str) -> Tensor:
    """Raise :class:`NonFiniteError` if ``x`` holds NaN or Inf."""
    if x.is_floating_point() and not all_finite((x,)):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise NonFiniteError(f"{name}: expected finite values, found {n_nan} NaN and {n_inf} Inf")
    return x
