"""Online spatio-temporal learning with target projection (OSTTP; Ortner et al., AICAS 2023).

OSTTP keeps OSTL's eligibility traces (:mod:`ostl.traces`) and replaces the learning signals of
the hidden layers by fixed random projections of the *target*, as in DRTP (Frenkel et al. 2021)::

    L_t^L = ∂E_t/∂ŷ_t                       output layer: its true error (as in OSTL)
    L_t^l = B_l y*_t / n_batch              hidden layer l < L: a fixed random projection
    dE/dθ^l ≈ Σ_t L_t^l · e_t^l             e^l: the OSTL trace of layer l

``y*_t`` (B, n_out) is the target as a float vector (one-hot for classes); ``B_l`` is a fixed
random (n_l, n_out) matrix drawn once per bind from ``seed``. Division by the batch size makes the
hidden signal a batch mean like the loss (``loss_fn`` returns the batch mean), so hidden updates
do not grow with the batch size.

No weight transport and no update locking: a hidden layer's signal needs neither the weights
above it nor the output, only its own activity and the target. Its update at step t is ready
right after its own forward step, before the layers above have run. :class:`OSTTPRunner` runs
that schedule when ``on_layer_update`` is set, and :class:`ostl.Learner` (``unlocked=True``)
applies each layer's update there; the result equals the plain schedule's.

Sign convention: ``L^l = +B_l y*``, as written in the OSTTP and DRTP papers. Why a target can
stand in for an error: for a one-hot target the output error e = ŷ - y* has a sign fixed by the
target alone (negative at the target class, non-negative elsewhere when ŷ ≥ 0), so -y* carries
the error's sign up to a per-class offset, and B y* = (-B)(-y*) is that sign surrogate sent
through -B. B is drawn from a distribution symmetric about zero, so B and -B are equally likely:
the sign is a convention absorbed by the random matrix, not a bias. What matters is that B stays
fixed, so the layers above align with it during learning (feedback alignment). Consequence: with
the same seed, :class:`ostl.rules.DFA` (which projects the error) sends -B y* as the target part
of its signal; the two rules differ by that sign.

Targets at only some steps (e.g. the sequence end): the traces keep running at every step and the
signal is zero at steps whose target is ``None``.

Exactness: the output layer's gradients equal OSTL's (with a Readout on top, they equal BPTT's).
The hidden layers' are not gradients of E; with ``recurrence="exact"`` (or without H) they equal
exactly the BPTT gradient of the local objective Σ_t ⟨B_l y*_t / n_batch, y_t^l⟩.

Memory and compute per step: OSTL's traces (diagonal: O(N²) per layer; exact: O(N³) memory,
O(N⁴) compute) plus one (n_l × n_out) projection per hidden layer and no backward sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from ..errors import DTypeError, OptionError, ShapeError, UnsupportedError
from ..layer import Network
from ..traces import NeuronJacobians
from .base import LossFn, Runner
from .ostl import OSTLRunner, TraceRule, _fixed, _load_fixed

__all__ = [
    "OSTTP",
    "OSTTPRunner",
    "draw_projections",
    "check_projection_options",
    "ProjectionRule",
    "check_unlockable",
]

DISTRIBUTIONS = ("uniform", "normal")


def check_projection_options(scale: float | None, distribution: str) -> None:
    """Raise ValueError unless ``distribution`` is known and ``scale`` is None or positive."""
    if distribution not in DISTRIBUTIONS:
        raise OptionError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0
    ):
        raise OptionError(f"scale must be a positive float or None, got {scale!r}")


def draw_projections(
    net: Network, seed: int, scale: float | None = None, distribution: str = "uniform"
) -> list[Tensor | None]:
    """Fixed random matrices B_l (n_l, n_out) for every layer but the last (None for the last).

    Drawn in float64 from ``seed`` (the same numbers for every dtype and device), then cast.

    Args:
        net: the network; n_out is its output size.
        seed: seed of the generator.
        scale: uniform in ±scale or normal with std scale; None: 1/√n_out (like W's init).
        distribution: ``"uniform"`` or ``"normal"``.
    """
    check_projection_options(scale, distribution)
    s = net.n_out**-0.5 if scale is None else float(scale)
    gen = torch.Generator().manual_seed(seed)
    out: list[Tensor | None] = []
    for layer in net.typed_layers[:-1]:
        shape = (layer.n_out, net.n_out)
        if distribution == "uniform":
            B = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * s
        else:
            B = torch.randn(shape, generator=gen, dtype=torch.float64) * s
        out.append(B.to(dtype=net.dtype, device=net.device))
    out.append(None)
    return out


class ProjectionRule(TraceRule):
    """The options of the rules whose hidden layers learn from fixed random projections
    (OSTTP, DFA): OSTL's trace options plus the projections' scale, distribution and seed."""

    def __init__(
        self,
        recurrence: str = "diagonal",
        scale: float | None = None,
        distribution: str = "uniform",
        seed: int = 0,
        max_trace_bytes: int = 2**30,
        *,
        jacobians: str = "auto",
        trace_dtype: torch.dtype | None = None,
    ) -> None:
        if recurrence not in ("exact", "diagonal"):
            raise OptionError(f"recurrence must be 'exact' or 'diagonal', got {recurrence!r}")
        check_projection_options(scale, distribution)
        self.set_trace_options(jacobians, trace_dtype)
        self.recurrence = recurrence
        self.scale = scale
        self.distribution = distribution
        self.seed = seed
        self.max_trace_bytes = max_trace_bytes


class OSTTP(ProjectionRule):
    """OSTTP: OSTL traces; output layer gets its error, hidden layers a projection of the target.

    Approximate w.r.t. BPTT except for the output layer (see the module docstring). No weight
    transport, no backward sweep, no update locking. Per step: OSTL's trace cost plus one
    (n_l × n_out) matrix-vector product per hidden layer.

    Args:
        recurrence: ``"diagonal"`` (default, O(N²)) or ``"exact"`` (keeps H, O(N³) memory).
        scale: scale of B_l: uniform in ±scale or normal with std scale; None: 1/√n_out.
        distribution: ``"uniform"`` or ``"normal"``.
        seed: seed of the projections (fixed for the life of a bound runner).
        max_trace_bytes: memory limit of one exact trace.
        jacobians, trace_dtype: as in :class:`~ostl.rules.ostl.TraceRule`.

    Targets must be float tensors of shape (B, n_out) in the network's dtype (one-hot for
    classes), or None at steps without a target.
    """

    name = "osttp"

    def bind(self, net: Network) -> OSTTPRunner:
        return OSTTPRunner(self, net)


class OSTTPRunner(OSTLRunner):
    """OSTTP bound to a network.

    Attributes:
        projections: B_l of every layer (None for the output layer), fixed at bind.
        on_layer_update: if set, ``_step`` runs the update-unlocked schedule and calls
            ``on_layer_update(i)`` at every step with a target, right after layer i's own step
            and the accumulation of its gradient for that step, before layer i+1 runs.
    """

    rule: OSTTP

    def __init__(self, rule: OSTTP, net: Network) -> None:
        super().__init__(rule, net)
        self.projections = draw_projections(net, rule.seed, rule.scale, rule.distribution)
        self.on_layer_update: Callable[[int], None] | None = None

    def _step(self, x_t: Tensor, target_t: Any, loss_fn: LossFn) -> Tensor:
        if target_t is not None:
            self._check_projected_target(target_t)
        if self.on_layer_update is None:  # plain schedule: forward every layer, then signals
            return super()._step(x_t, target_t, loss_fn)
        return self._step_unlocked(x_t, target_t, loss_fn, self.on_layer_update)

    @torch.no_grad()
    def _step_unlocked(
        self, x_t: Tensor, target_t: Any, loss_fn: LossFn, on_update: Callable[[int], None]
    ) -> Tensor:
        """Layer by layer: own step, own signal, own update; the layers above have not run."""
        last = len(self.net.layers) - 1
        x = x_t
        for i in range(last + 1):
            x_in = x
            x, _ = self._layer_step(i, x_in)
            if target_t is None:
                continue
            if i < last:
                L = self._projected(i, target_t)
            else:  # the output layer: its true error needs its own output only
                L = self._loss_signal(x, target_t, loss_fn)
            self._apply_signal(i, L, x_in)
            on_update(i)
        return x

    def _signals(
        self, L_out: Tensor, target: Any, inputs: list[Tensor], jacs: list[NeuronJacobians | None]
    ) -> list[Tensor]:
        """B_l y*_t / n_batch for every hidden layer, the true error for the output layer."""
        n = len(self.net.layers)
        return [self._projected(i, target) for i in range(n - 1)] + [L_out]

    def _projected(self, i: int, target: Tensor) -> Tensor:
        B = self.projections[i]
        assert B is not None
        return target @ B.T / target.shape[0]

    def _check_projected_target(self, target: Tensor) -> None:
        net, batch = self.net, self.batch_size
        want = f"a float target y*_t of shape ({batch}, {net.n_out}) in {net.dtype}"
        if not target.is_floating_point():
            raise DTypeError(
                f"OSTTP projects the target vector itself: expected {want} (one-hot for classes), "
                f"got {target.dtype} of shape {tuple(target.shape)}. For class labels pass "
                f"torch.nn.functional.one_hot(labels, {net.n_out}).to({net.dtype}) and a loss "
                "that takes one-hot targets."
            )
        if tuple(target.shape) != (batch, net.n_out):
            raise ShapeError(
                f"OSTTP projects the target onto every hidden layer: expected {want}, got shape "
                f"{tuple(target.shape)} (its last dimension must equal the network's output)"
            )
        if target.dtype != net.dtype:
            raise DTypeError(f"OSTTP: expected {want}, got dtype {target.dtype}")
        self._finite(target, "target_t")

    def _state_extra(self) -> dict[str, Any]:
        return {**super()._state_extra(), "projections": _fixed(self.projections)}

    def _load_extra(self, extra: dict[str, Any], loss_fn: LossFn | None) -> None:
        super()._load_extra(extra, loss_fn)
        self.projections = _load_fixed(self.projections, extra["projections"], "projections")

    def state_tensors(self) -> Iterator[Tensor]:
        yield from super().state_tensors()
        yield from (B for B in self.projections if B is not None)


def check_unlockable(runner: Runner) -> OSTTPRunner:
    """The runner, if it can run the update-unlocked schedule; else a clear error."""
    if not isinstance(runner, OSTTPRunner):
        raise UnsupportedError(
            f"{runner.rule!r} is update-locked: its learning signals need the whole forward pass "
            "at step t (and a backward sweep across layers, or through time); only OSTTP's hidden "
            "updates need nothing from the layers above. Use ostl.rules.OSTTP, or unlocked=False."
        )
    return runner
