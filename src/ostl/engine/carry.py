"""The carry: everything a rule keeps between time steps, as one explicit tree of tensors.

A carry is a NamedTuple whose fields are tensors, None, numbers, or tuples / lists / dicts /
NamedTuples of them. Nothing about a rule is hidden in mutable objects, so generic code walks
the carry for every rule alike: checkpoints (:func:`pack` / :func:`unpack`), memory accounting
(:func:`tensors`), non-finite scans (:func:`named_tensors`) and moving to a device.

Every carry holds :class:`Stats` (field ``stats``): the step counter, the running loss and
the first step at which an input, a target or an output error was not finite. They are
tensors on the network's device, updated without a host synchronisation (no ``float()``, no
``.item()``), so the step can run asynchronously on a GPU and be compiled; they are read
where a decision is needed (at an optimizer update, at the end of a sequence) or when asked
for (``Runner.loss_sum``, ``Learner.mean_loss``).

:func:`finite_flags` and :func:`restart_where` check a carry for NaN/Inf and restart a
poisoned stream on the device, without reading anything back (:class:`ostl.Learner` with
``nonfinite="skip"`` and the verdicts kept on the device).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..errors import CheckpointError

__all__ = [
    "Stats",
    "init_stats",
    "advance_stats",
    "NONFINITE_WHAT",
    "finite_flags",
    "restart_where",
    "tree_where",
    "tensors",
    "named_tensors",
    "tree_map",
    "pack",
    "unpack",
]

#: What ``Stats.first_bad`` tracks, in order.
NONFINITE_WHAT = ("x_t", "target_t", "learning signal dE_t/dy_t")


class Stats(NamedTuple):
    """Counters every carry holds, as tensors on the network's device."""

    t: Tensor  # () int64: time steps since init
    loss_sum: Tensor  # () Σ_t E_t since init (or since the counter was last taken)
    n_losses: Tensor  # () int64: steps with a target, likewise
    first_bad: Tensor  # (3,) int64: first step with a non-finite NONFINITE_WHAT[i], -1: none


def init_stats(dtype: torch.dtype, device: torch.device) -> Stats:
    i64 = torch.int64
    return Stats(
        torch.zeros((), dtype=i64, device=device),
        torch.zeros((), dtype=dtype, device=device),
        torch.zeros((), dtype=i64, device=device),
        torch.full((3,), -1, dtype=i64, device=device),
    )


def advance_stats(
    s: Stats, x: Tensor, target: Any, signal: Tensor | None, loss: Tensor | None
) -> Stats:
    """The counters after one step: t + 1, the loss added, non-finite values recorded.

    ``target`` is checked when it is a floating-point tensor; ``signal`` and ``loss`` are None
    at a step without a target.
    """
    tgt = target if isinstance(target, Tensor) and target.is_floating_point() else None
    # c·0 is NaN exactly where c is NaN or ±Inf, and its sum cannot overflow
    probe = torch.stack([x.new_zeros(()) if c is None else _probe(c) for c in (x, tgt, signal)])
    first_bad = torch.where((probe != probe) & (s.first_bad < 0), s.t, s.first_bad)
    if loss is None:
        return Stats(s.t + 1, s.loss_sum, s.n_losses, first_bad)
    return Stats(s.t + 1, s.loss_sum + loss, s.n_losses + 1, first_bad)


def _probe(c: Tensor) -> Tensor:
    """Σ c·0: 0, or NaN if c holds NaN or ±Inf."""
    return (c * 0).sum()


def finite_flags(tensors: Iterable[Tensor]) -> Tensor:
    """Whether each floating-point tensor among ``tensors`` is free of NaN and Inf: a bool
    vector, one entry per floating-point tensor, in order, computed on their device without a
    host synchronisation. The tensors must share one device.

    Two fused ``torch._foreach_norm``: the largest magnitude is Inf where a tensor holds ±Inf
    (and, unlike a sum of squares, cannot overflow from finite values); the 2-norm is NaN where
    it holds a NaN (a sum propagates NaN whatever the reduction order). A tensor without
    elements is finite.
    """
    floats = [t if t.numel() else t.new_zeros(1) for t in tensors if t.is_floating_point()]
    if not floats:
        return torch.ones(0, dtype=torch.bool)
    largest = torch.stack(torch._foreach_norm(floats, ord=math.inf))
    return torch.isfinite(largest) & ~torch.stack(torch._foreach_norm(floats)).isnan()


def restart_where(carry: Any, fresh: Any, skipped: Tensor, extra: Iterable[Tensor] = ()) -> Any:
    """A carry after an update whose verdict ``skipped`` (a () bool tensor) stays on the device.

    Where ``skipped``: the record of non-finite values is cleared and, if any floating-point
    tensor of the carry or of ``extra`` (the rule's fixed matrices) holds NaN or Inf, the
    stream restarts: every tensor but the counters comes from ``fresh`` (a newly initialised
    carry of the same rule and batch size). Elsewhere the carry is unchanged. What
    ``Learner`` does on the host after a skipped update, with no host synchronisation.
    """
    stats = carry.stats
    held = [t for t in (*tensors(carry), *extra) if t.is_floating_point()]
    poisoned = skipped & ~finite_flags(held).all()
    new = tree_where(poisoned, fresh._replace(stats=stats), carry)
    first_bad = torch.where(skipped, -1, stats.first_bad)
    return new._replace(stats=stats._replace(first_bad=first_bad))


def tree_where(cond: Tensor, new: Any, old: Any) -> Any:
    """``old`` with every tensor replaced by ``torch.where(cond, new's, old's)``; ``new`` has
    the same structure (anything but tensors is taken from ``old``)."""
    if isinstance(old, Tensor):
        return torch.where(cond, new, old)
    if isinstance(old, tuple) and hasattr(old, "_fields"):
        return type(old)(*(tree_where(cond, n, o) for n, o in zip(new, old)))
    if isinstance(old, dict):
        return {k: tree_where(cond, new[k], v) for k, v in old.items()}
    if isinstance(old, list | tuple):
        return type(old)(tree_where(cond, n, o) for n, o in zip(new, old))
    return old


def _children(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        yield from zip(node._fields, node)
    elif isinstance(node, dict):
        yield from ((str(k), v) for k, v in node.items())
    elif isinstance(node, list | tuple):
        yield from ((str(i), v) for i, v in enumerate(node))


def named_tensors(node: Any, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    """(dotted path, tensor) of every tensor in the tree, e.g. ``traces.0.eps.W``."""
    if isinstance(node, Tensor):
        yield prefix, node
        return
    for name, child in _children(node):
        yield from named_tensors(child, f"{prefix}.{name}" if prefix else name)


def tensors(node: Any) -> Iterator[Tensor]:
    """Every tensor in the tree."""
    return (t for _, t in named_tensors(node))


def tree_map(fn: Callable[[Tensor], Tensor], node: Any) -> Any:
    """The same tree with ``fn`` applied to every tensor."""
    if isinstance(node, Tensor):
        return fn(node)
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*(tree_map(fn, v) for v in node))
    if isinstance(node, dict):
        return {k: tree_map(fn, v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return type(node)(tree_map(fn, v) for v in node)
    return node


def pack(node: Any) -> Any:
    """The tree as plain containers of cloned, detached, contiguous tensors (for
    ``torch.save`` with ``weights_only`` loading): NamedTuples become dicts, tuples lists."""
    if isinstance(node, Tensor):
        return node.detach().clone(memory_format=torch.contiguous_format)
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return {k: pack(v) for k, v in zip(node._fields, node)}
    if isinstance(node, dict):
        return {k: pack(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [pack(v) for v in node]
    return node


def unpack(template: Any, packed: Any, path: str = "carry") -> Any:
    """Inverse of :func:`pack`, shaped like ``template`` (a freshly initialised carry).

    Every tensor must have the template's shape; it is cast to the template's dtype and
    device. Raises :class:`~ostl.errors.CheckpointError` naming the first entry that differs.
    """
    if isinstance(template, Tensor):
        if not isinstance(packed, Tensor) or packed.shape != template.shape:
            got = tuple(packed.shape) if isinstance(packed, Tensor) else type(packed).__name__
            raise CheckpointError(
                f"{path}: expected a tensor of shape {tuple(template.shape)}, got {got} "
                "(a checkpoint of another network, rule or batch size?)"
            )
        return packed.to(dtype=template.dtype, device=template.device).clone()
    if isinstance(template, tuple) and hasattr(template, "_fields"):
        _same_keys(path, list(template._fields), packed)
        return type(template)(
            *(unpack(v, packed[k], f"{path}.{k}") for k, v in zip(template._fields, template))
        )
    if isinstance(template, dict):
        _same_keys(path, list(template), packed)
        return {k: unpack(v, packed[k], f"{path}.{k}") for k, v in template.items()}
    if isinstance(template, list):  # a list is a sequence of any length (BPTT's window)
        if not isinstance(packed, list | tuple):
            raise CheckpointError(f"{path}: expected a list, got {type(packed).__name__}")
        device = _device_of(template)
        return [_to(v, device) for v in packed]
    if isinstance(template, tuple):
        if not isinstance(packed, list | tuple) or len(packed) != len(template):
            n = len(packed) if isinstance(packed, list | tuple) else type(packed).__name__
            raise CheckpointError(f"{path}: expected {len(template)} entries, got {n}")
        return tuple(unpack(v, p, f"{path}.{i}") for i, (v, p) in enumerate(zip(template, packed)))
    if template is None:  # something that may be absent (BPTT's pending loss): as saved
        return None if packed is None else _to(packed, None)
    return packed


def _device_of(node: Any) -> torch.device | None:
    return next((t.device for t in tensors(node)), None)


def _to(node: Any, device: torch.device | None) -> Any:
    """A saved tree without a template: tensors cloned (and moved to ``device`` if given)."""
    if isinstance(node, Tensor):
        return node.clone() if device is None else node.to(device).clone()
    if isinstance(node, dict):
        return {k: _to(v, device) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_to(v, device) for v in node]
    return node


def _same_keys(path: str, keys: list[str], packed: Any) -> None:
    if not isinstance(packed, dict) or sorted(packed) != sorted(keys):
        got = sorted(packed) if isinstance(packed, dict) else type(packed).__name__
        raise CheckpointError(f"{path}: expected the entries {sorted(keys)}, got {got}")
