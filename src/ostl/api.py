"""Gradients of one sequence by any rule, and their comparison with BPTT."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .errors import ShapeError
from .layer import Network
from .rules import BPTT, LossFn, Rule, get_rule

__all__ = ["gradients", "compare_to_bptt", "Comparison", "ParamComparison", "check_targets"]


def check_targets(targets: Any, T: int) -> Tensor | Sequence[Any]:
    """Targets are a tensor with T first or a length-T sequence whose entries may be None."""
    if isinstance(targets, Tensor):
        if targets.dim() == 0 or targets.shape[0] != T:
            raise ShapeError(
                f"targets: expected time first with T={T} steps, got shape {tuple(targets.shape)}"
            )
        return targets
    if isinstance(targets, Sequence) and not isinstance(targets, str):
        if len(targets) != T:
            raise ShapeError(f"targets: expected {T} entries (one per step), got {len(targets)}")
        return targets
    raise ShapeError(
        f"targets: expected a (T, B, ...) tensor or a list of T tensors/None, got {type(targets)}"
    )


def gradients(
    net: Network, rule: Rule | str, xs: Tensor, targets: Any, loss_fn: LossFn
) -> dict[str, Tensor]:
    """dE/dθ for E = Σ_t loss_fn(y_t, target_t) over one sequence, as the rule computes it.

    The weights are not changed and ``.grad`` is not touched.

    Args:
        net: the network.
        rule: a rule object or its name.
        xs: inputs (T, B, n_in).
        targets: (T, B, ...) tensor, or a length-T sequence of tensors or None (no target).
        loss_fn: ``loss_fn(y_t, target_t)`` -> scalar loss of one step (mean over the batch).

    Returns:
        A dict keyed like ``net.named_parameters()`` (trainable parameters only).
    """
    runner = get_rule(rule).bind(net)
    net.check_sequence(xs)
    targets = check_targets(targets, xs.shape[0])
    runner.reset(xs.shape[1])
    for x_t, tgt in zip(xs, targets):
        runner.step(x_t, tgt, loss_fn)
    runner.flush()
    runner.check_finite()
    return {n: g.clone() for n, g in runner.grads.items()}


@dataclass(frozen=True)
class ParamComparison:
    name: str
    cosine: float  # cosine similarity to the reference (1.0 when both are zero)
    relative_error: float  # ‖g - g_ref‖ / ‖g_ref‖ (0 when both are zero, inf if only ref is 0)
    norm: float
    reference_norm: float


@dataclass(frozen=True)
class Comparison:
    """Per-parameter agreement of a rule's gradients with a reference (BPTT by default)."""

    rule: str
    reference: str
    rows: tuple[ParamComparison, ...]

    @property
    def max_relative_error(self) -> float:
        return max(r.relative_error for r in self.rows)

    @property
    def min_cosine(self) -> float:
        return min(r.cosine for r in self.rows)

    def __getitem__(self, name: str) -> ParamComparison:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def table(self) -> str:
        """A plain-text table, one row per parameter."""
        w = max(len("parameter"), *(len(r.name) for r in self.rows))
        head = (
            f"{'parameter':<{w}}  {'cosine':>9}  {'rel. error':>10}  {'‖g‖':>10}  {'‖g_ref‖':>10}"
        )
        lines = [f"{self.rule} vs {self.reference}", head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r.name:<{w}}  {r.cosine:>9.6f}  {r.relative_error:>10.3e}  "
                f"{r.norm:>10.3e}  {r.reference_norm:>10.3e}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _compare(name: str, g: Tensor, ref: Tensor) -> ParamComparison:
    g, ref = g.double().flatten(), ref.double().flatten()
    n, nr = float(g.norm()), float(ref.norm())
    if nr == 0:  # a zero reference: agreement only if the rule's gradient is zero too
        rel = 0.0 if n == 0 else float("inf")
    else:
        rel = float((g - ref).norm()) / nr
    cos = 1.0 if n == 0 and nr == 0 else (0.0 if n == 0 or nr == 0 else float(g @ ref) / (n * nr))
    return ParamComparison(name, cos, rel, n, nr)


def compare_to_bptt(
    net: Network,
    rule: Rule | str,
    xs: Tensor,
    targets: Any,
    loss_fn: LossFn,
    reference: Rule | str | None = None,
) -> Comparison:
    """Cosine similarity and relative error of a rule's gradients to BPTT's, per parameter.

    ``reference`` replaces plain BPTT (e.g. ``BPTT(detach_above=l)`` or ``RTRL()``).
    """
    rule, ref_rule = get_rule(rule), get_rule(reference if reference is not None else BPTT())
    g = gradients(net, rule, xs, targets, loss_fn)
    ref = gradients(net, ref_rule, xs, targets, loss_fn)
    rows = tuple(_compare(n, g[n], ref[n]) for n in ref)
    return Comparison(repr(rule), repr(ref_rule), rows)
