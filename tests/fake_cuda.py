"""A CUDA device faked on a CPU-only machine: where tensors live, checked without a GPU.

:class:`FakeCuda` runs code under torch's ``FakeTensorMode`` with ``cuda:0`` tensors that have
a device, a shape and a dtype but no data. An operation that mixes a (non-scalar) CPU tensor
with a ``cuda:0`` one raises, as it would on a GPU, so a training run whose network is on
``cuda:0`` reaches its end only if every batch, target and mask was moved to the network's
device before meeting its outputs. The copies from the host to the device are recorded
(:attr:`FakeCuda.copies`): whether the source was pinned, whether the copy was
``non_blocking``.

What it takes to run real code on a device that is not there, and what it cannot do:

- a CPU-only build of torch has no CUDA device guard, which a few Python entry points use
  before dispatching: reading a value (``float(t)``, ``int(t)``, ``bool(t)``, ``.item()``),
  indexing (``t[i]``, ``t[i] = v``) and ``copy_``. :class:`_HostEntryPoints` sends the
  indexing and the copy to the same aten operations (``select``, ``slice``, ``index``,
  ``copy_``, ``fill_``, ``index_put_``) and answers every read of a fake tensor (on either
  device) with a placeholder (``1.0``, ``1`` or ``True``): fake tensors hold no values (the
  fake mode's "constants", small tensors that keep their real value, are turned off: see
  :class:`_Device`). Code that branches on values therefore takes one branch only; placement
  does not depend on values;
- ``pin_memory()`` has no fake implementation: :class:`_Transfers` marks the tensor pinned
  instead (and answers ``is_pinned()``);
- autograd cannot record a graph on a fake CUDA tensor: its engine asks the CUDA runtime for
  the device's stream, and a CPU-only build aborts the whole process. Every operation that
  would record one (grad mode on and an input on ``cuda`` that requires grad) raises
  :class:`AutogradLimit` instead, before autograd sees it. BPTT (plain autograd over the
  unroll) and cells whose Jacobians come from ``torch.func`` cannot be checked here; the
  online rules with closed-form Jacobians (the default networks of every task) can;
- the fused C trace kernel is a CPU kernel: on ``cuda`` the PyTorch path runs, as on a GPU.

Tasks make their data on the CPU (real tensors) and the network is built there: wrap the
task with :func:`made_on_host` so that its batches and its network are real CPU tensors,
which the run then moves to the fake device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["DEVICE", "AutogradLimit", "Copy", "FakeCuda", "made_on_host"]

#: The faked device (with its index: ``"cuda"`` alone asks the missing runtime for the current
#: device).
DEVICE = "cuda:0"


class AutogradLimit(RuntimeError):
    """An operation would record an autograd graph on a fake CUDA tensor (see the module
    docstring): this cannot be checked without a GPU."""


@dataclass(frozen=True)
class Copy:
    """One copy from the host to the fake device."""

    shape: tuple[int, ...]
    pinned: bool
    non_blocking: bool


class _Device(FakeTensorMode):
    # Never touch the (missing) CUDA runtime, even where torch.cuda.is_available() is patched
    # to True for the code under test: no constant propagation of device moves.
    avoid_device_init = property(lambda self: True)

    def __init__(self) -> None:
        super().__init__(allow_non_fake_inputs=True)

    def may_turn_const(self, t: Tensor) -> bool:
        # No constants (fake tensors that keep the real value of a small tensor, e.g. of
        # torch.tensor(1.0)): with them, runs of this harness corrupted the heap (valgrind:
        # an invalid read in THPStorage_freeWeakRef, the weak storage references torch keeps
        # per constant) and crashed the process a few runs later. Every read of a value is a
        # placeholder instead (_HostEntryPoints).
        return False


def _on_cuda(t: object) -> bool:
    return isinstance(t, FakeTensor) and t.device.type == "cuda"


def _index_parts(t: Tensor, idx: object) -> list[object]:
    """``idx`` as one entry per indexed dimension (an Ellipsis expanded to full slices)."""
    parts = list(idx) if isinstance(idx, tuple) else [idx]
    used = sum(
        k.dim() if isinstance(k, Tensor) and k.dtype == torch.bool else 1
        for k in parts
        if k is not None and k is not Ellipsis
    )
    out: list[object] = []
    for k in parts:
        out.extend([slice(None)] * (t.dim() - used) if k is Ellipsis else [k])
    return out


def _getitem(t: Tensor, idx: object) -> Tensor:
    """``t[idx]`` through aten operations (basic indexing gives views, as ``t[idx]`` does)."""
    dim = 0
    for k in _index_parts(t, idx):
        if isinstance(k, bool) or (k is not None and not isinstance(k, int | slice | Tensor)):
            raise NotImplementedError(f"fake CUDA indexing with {k!r}")
        if isinstance(k, int):
            t = torch.ops.aten.select.int(t, dim, k)
        elif isinstance(k, slice):
            t = torch.ops.aten.slice.Tensor(t, dim, k.start, k.stop, k.step or 1)
            dim += 1
        elif k is None:
            t = torch.ops.aten.unsqueeze.default(t, dim)
            dim += 1
        else:
            t = torch.ops.aten.index.Tensor(t, [None] * dim + [k])
            dim += 1
    return t


def _setitem(t: Tensor, idx: object, value: Any) -> None:
    """``t[idx] = value`` through aten operations."""
    parts = _index_parts(t, idx)
    if any(isinstance(k, Tensor) for k in parts):
        if not all(isinstance(k, Tensor) or k == slice(None) for k in parts):
            raise NotImplementedError(f"fake CUDA assignment with index {idx!r}")
        indices = [k if isinstance(k, Tensor) else None for k in parts]
        v = (
            value
            if isinstance(value, Tensor)
            else torch.full((), value, dtype=t.dtype, device=t.device)
        )
        torch.ops.aten.index_put_.default(t, indices, v)
        return
    view = _getitem(t, idx)
    if isinstance(value, Tensor):
        torch.ops.aten.copy_.default(view, value)
    else:
        torch.ops.aten.fill_.Scalar(view, value)


def _placeholder(func: Callable[..., Any], t: Tensor) -> object:
    """What a read of a fake tensor's value returns (it has none)."""
    if func in (Tensor.__int__, Tensor.__index__):
        return 1
    if func is Tensor.__float__:
        return 1.0
    if func is Tensor.__bool__ or t.dtype == torch.bool:
        return True
    return 1.0 if t.is_floating_point() else 1


_READS = (Tensor.__float__, Tensor.__int__, Tensor.__index__, Tensor.__bool__, Tensor.item)


def _records_graph(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether ``func(*args, **kwargs)`` would record an autograd graph on a CUDA tensor.

    Asked only with grad mode on and a CUDA input that requires grad; answered by the same
    call on meta tensors of the same shapes (autograd handles those): does its output require
    grad? A call that fails there counts as recording (the safe answer: never abort)."""
    leaves = pytree.tree_leaves((args, kwargs))
    if not (torch.is_grad_enabled() and any(_on_cuda(a) and a.requires_grad for a in leaves)):
        return False
    name = getattr(func, "__name__", "")
    if name in ("__get__", "__set__", "__delete__"):  # attributes: nothing is computed
        return False

    def meta(a: object) -> object:
        if not isinstance(a, Tensor):
            return a
        m = torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device="meta")
        return m.requires_grad_() if a.requires_grad else m

    try:
        out = func(*pytree.tree_map(meta, args), **pytree.tree_map(meta, kwargs))
    except Exception:
        return True
    return any(isinstance(o, Tensor) and o.requires_grad for o in pytree.tree_leaves(out))


class _HostEntryPoints(TorchFunctionMode):
    """The Python entry points that would need a CUDA device guard (see the module
    docstring), and the autograd guard."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if args and isinstance(args[0], FakeTensor) and func in _READS:
            return _placeholder(func, args[0])
        if args and _on_cuda(args[0]):
            if func is Tensor.__getitem__:
                return _getitem(*args)
            if func is Tensor.__setitem__:
                return _setitem(*args)
            if func is Tensor.copy_:
                return torch.ops.aten.copy_.default(*args, **kwargs)
        if _records_graph(func, args, kwargs):
            name = getattr(func, "__name__", str(func))
            raise AutogradLimit(
                f"{name} would record an autograd graph on a CUDA tensor, which a CPU-only "
                "build cannot fake (autograd needs the device's stream)"
            )
        return func(*args, **kwargs)


class _Transfers(TorchDispatchMode):
    """Pinning (marked, as it has no fake implementation) and the host-to-device copies."""

    def __init__(self) -> None:
        super().__init__()
        self.pinned: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.pins = 0
        self.copies: list[Copy] = []

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is torch.ops.aten._pin_memory.default:
            out = torch.ops.aten.clone.default(args[0])
            self.pinned[out] = True
            self.pins += 1
            return out
        if func is torch.ops.aten.is_pinned.default:
            return args[0] in self.pinned
        device = kwargs.get("device")
        if (
            func is torch.ops.aten._to_copy.default
            and device is not None
            and device.type == "cuda"
            and args[0].device.type == "cpu"
        ):
            pinned = args[0] in self.pinned
            nb = bool(kwargs.get("non_blocking", False))
            self.copies.append(Copy(tuple(args[0].shape), pinned, nb))
        return func(*args, **kwargs)


class FakeCuda:
    """A context in which ``cuda:0`` tensors exist without a GPU (see the module docstring).

    ``torch.cuda.is_available()`` is not changed here: the test patches it where the code
    under test asks (e.g. ``ostl.run.run.place``).

    Attributes:
        copies: every host-to-device copy made inside, in order.
        pins: how many tensors were copied to pinned memory inside.
    """

    def __init__(self) -> None:
        self._transfers = _Transfers()
        self._modes: list[Any] = [_Device(), _HostEntryPoints(), self._transfers]

    @property
    def copies(self) -> list[Copy]:
        return self._transfers.copies

    @property
    def pins(self) -> int:
        return self._transfers.pins

    def __enter__(self) -> FakeCuda:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


@contextmanager
def _host() -> Iterator[None]:
    """Outside every mode of :class:`FakeCuda` (and any other): plain CPU tensors."""
    with torch._C.DisableTorchFunction(), _disable_current_modes():
        yield


def _on_host(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        with _host():
            return fn(*args, **kwargs)

    return call


def _iterated_on_host(fn: Callable[..., Any]) -> Callable[..., Iterator[Any]]:
    def batches(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with _host():
            it = iter(fn(*args, **kwargs))
        while True:
            with _host():
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item

    return batches


def made_on_host(task: Any) -> Any:
    """``task`` with its batches and its network made as real CPU tensors, outside the fake
    mode (a task's own code runs on the host; the run moves its tensors to the device)."""
    task.network = _on_host(task.network)
    task.train_batches = _iterated_on_host(task.train_batches)
    task.eval_batches = _iterated_on_host(task.eval_batches)
    return task
