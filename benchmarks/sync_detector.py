"""A CPU-side detector of host synchronisations: tensor operations that, on a GPU, make the
host wait for the device.

On a CPU every tensor is already in host memory, so nothing ever waits; on a GPU, reading a
value back (``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, ``if t:``, ``.tolist()``,
``.cpu()``, ``.numpy()``, printing a tensor), an operation whose output size depends on the
values (``torch.nonzero``, boolean-mask indexing, ``torch.unique``, ...) or a comparison that
returns a Python bool (``torch.equal``, ``torch.allclose``) stalls the pipeline until the
device has caught up; so does a copy of host data onto the device (``torch.tensor(data,
device=...)``: from pageable memory it waits for the device's queue to reach it).
:class:`SyncDetector` is a ``torch.overrides.TorchFunctionMode`` that records each such call,
with the Python stack that made it, while the code runs on the CPU::

    with SyncDetector() as d:
        learner.step(x_t, target_t)
    assert not d.syncs, d.report()

Limits (the CUDA test with ``torch.cuda.set_sync_debug_mode("error")`` covers them on a GPU):

- a ``.to(device)`` is a copy between host and device only when source and target differ; on
  a CPU run both are the CPU, so such copies are not seen. ``torch.tensor(data, device=...)``
  called from outside torch is recorded whatever the device (it places host data where the
  caller's tensors live); torch's own calls only for a device other than the CPU (its
  optimizers create their step counts on the host on purpose);
- calls made by a record's own operation (e.g. the reads inside ``Tensor.__repr__``) count as
  that one record;
- ``torch.optim``'s ``_get_value`` reads a step count that the stock optimizers keep on the
  host (unless ``capturable=True`` or ``fused=True``): no device is involved, and it is
  allowed by default (see ``ALLOWED``).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["Sync", "SyncDetector", "ALLOWED"]

#: Operations that read a tensor's value back into Python, or whose result's size (or a Python
#: bool) depends on the values: each waits for the device.
READS = frozenset(
    {
        "item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__",
        "__complex__", "__repr__", "__str__", "__format__", "__array__", "is_nonzero",
        "equal", "allclose", "nonzero", "argwhere", "masked_select", "unique",
        "unique_consecutive", "bincount", "repeat_interleave",
    }
)  # fmt: skip
#: Indexing operations that sync when an index is a boolean tensor (it is turned into
#: the positions of its True entries, whose number the host must know).
INDEXING = frozenset({"__getitem__", "__setitem__", "index_put", "index_put_", "index"})

#: (file path suffix, function name) of frames whose syncs are not device syncs: torch's
#: optimizers read their step count with ``_get_value``, a tensor they keep on the host
#: unless built with ``capturable=True`` or ``fused=True``.
ALLOWED: tuple[tuple[str, str], ...] = (("torch/optim/optimizer.py", "_get_value"),)


@dataclass(frozen=True)
class Sync:
    """One call that would synchronise: the operation and where it was made."""

    op: str
    stack: tuple[traceback.FrameSummary, ...]  # outermost first, the detector's frames left out

    def where(self) -> str:
        """The innermost frame outside torch, as ``file:line in function``."""
        for f in reversed(self.stack):
            if "/torch/" not in f.filename:
                return f"{f.filename}:{f.lineno} in {f.name}"
        f = self.stack[-1]
        return f"{f.filename}:{f.lineno} in {f.name}"

    def __str__(self) -> str:
        return f"{self.op} at {self.where()}"


def _name(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", None)
    if name is None:  # a property or a wrapper: its repr names it
        name = repr(func)
    return name


def _has_bool_index(index: Any) -> bool:
    items = index if isinstance(index, tuple | list) else (index,)
    return any(isinstance(i, Tensor) and i.dtype == torch.bool for i in items)


def _moves_to_host(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """``t.to(...)`` from another device onto the CPU."""
    src = args[0] if args and isinstance(args[0], Tensor) else None
    if src is None or src.device.type == "cpu":
        return False
    targets = [*args[1:], kwargs.get("device")]
    for a in targets:
        if isinstance(a, str | torch.device) and torch.device(a).type == "cpu":
            return True
        if isinstance(a, Tensor) and a.device.type == "cpu":
            return True
    return False


def _called_by_torch() -> bool:
    """Whether the innermost frame outside this module belongs to torch's package."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame is not None and f"{os.sep}torch{os.sep}" in frame.f_code.co_filename


def why_sync(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The operation's name if calling ``func(*args, **kwargs)`` would sync, else None."""
    name = _name(func)
    if name in READS:
        return name
    if name in INDEXING:
        index = args[1] if len(args) > 1 else kwargs.get("indices")
        return f"{name} with a boolean mask" if _has_bool_index(index) else None
    if name == "to" and _moves_to_host(args, kwargs):
        return "to (a device-to-host copy)"
    if name in ("tensor", "as_tensor") and kwargs.get("device") is not None:
        device = torch.device(kwargs["device"])
        if device.type != "cpu" or not _called_by_torch():
            return f"{name}(..., device=...) (a host-to-device copy)"
    if name == "cuda":
        return "cuda (a host-to-device copy)"
    return None


class SyncDetector(TorchFunctionMode):
    """Records every tensor operation that would synchronise host and device (see the module
    docstring). Use as a context manager; :attr:`syncs` lists what it saw, in order.

    Args:
        allowed: (file path suffix, function name) of frames whose syncs are not recorded
            (default :data:`ALLOWED`).
    """

    def __init__(self, allowed: Iterable[tuple[str, str]] = ALLOWED) -> None:
        super().__init__()
        self.allowed = tuple(allowed)
        self.syncs: list[Sync] = []

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        op = why_sync(func, args, kwargs)
        if op is not None:
            stack = tuple(traceback.extract_stack()[:-1])  # without this frame
            if not self._allowed(stack):
                self.syncs.append(Sync(op, stack))
        return func(*args, **kwargs)

    def _allowed(self, stack: tuple[traceback.FrameSummary, ...]) -> bool:
        return any(
            f.filename.endswith(path) and f.name == fn for f in stack for path, fn in self.allowed
        )

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.syncs.clear()

    def report(self) -> str:
        """Every recorded sync, one a line, with the innermost frame outside torch."""
        return "\n".join(str(s) for s in self.syncs) or "no synchronisation"

    def count(self) -> int:
        """How many syncs were recorded."""
        return len(self.syncs)
