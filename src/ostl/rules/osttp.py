"""Online spatio-temporal learning with target projection (OSTTP; Ortner et al., AICAS 2023).

OSTTP keeps OSTL's eligibility traces (:mod:`ostl.engine`) and replaces the learning signals of
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
right after its own forward step, before the layers above have run. :class:`ostl.Learner`
(``unlocked=True``) runs that schedule and applies each layer's update there; the result
equals the plain schedule's.

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

from typing import ClassVar

import torch

from ..engine.signals import draw_projections
from ..errors import OptionError
from .trace import TraceRule

__all__ = ["OSTTP", "ProjectionRule", "draw_projections"]


class ProjectionRule(TraceRule):
    """The presets whose hidden layers learn from fixed random projections (OSTTP, DFA): their
    shared options. A subclass names its signal (``signal_kind``) and nothing else.

    Args:
        recurrence: ``"diagonal"`` (default, O(N²)) or ``"exact"`` (keeps H, O(N³) memory).
        scale: scale of B_l: uniform in ±scale or normal with std scale; None: 1/√n_out.
        distribution: ``"uniform"`` or ``"normal"``.
        seed: seed of the projections (fixed for the life of a bound rule).
        max_trace_bytes: memory limit of one exact trace.
        jacobians: see :class:`~ostl.rules.trace.TraceRule`.
        trace_dtype: see :class:`~ostl.rules.trace.TraceRule`.
    """

    signal_kind: ClassVar[str]

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
        super().__init__(
            recurrence, self.signal_kind, seed=seed, scale=scale, distribution=distribution,
            max_trace_bytes=max_trace_bytes, jacobians=jacobians, trace_dtype=trace_dtype,
        )  # fmt: skip
        self._published(
            recurrence=recurrence, scale=scale, distribution=distribution, seed=seed,
            max_trace_bytes=max_trace_bytes, jacobians=jacobians, trace_dtype=trace_dtype,
        )  # fmt: skip


class OSTTP(ProjectionRule):
    """OSTTP: OSTL traces; output layer gets its error, hidden layers a projection of the target.

    Approximate w.r.t. BPTT except for the output layer (see the module docstring). No weight
    transport, no backward sweep, no update locking. Per step: OSTL's trace cost plus one
    (n_l × n_out) matrix-vector product per hidden layer. Options: see :class:`ProjectionRule`.

    Targets must be float tensors of shape (B, n_out) in the network's dtype (one-hot for
    classes), or None at steps without a target.
    """

    name = "osttp"
    signal_kind = "target"
