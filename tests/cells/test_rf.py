"""Resonate-and-fire cell: exact discretisation, derived Jacobians, resonance, rules exact."""

from __future__ import annotations

import cmath
import math

import pytest
import torch

import ostl
from ostl.cells import ResonateAndFire
from ostl.cells.base import dense
from ostl.engine import neuron_jacobians
from ostl.rules import OSTL

from ..helpers import DT, make_net, mse, sequence

THETA = 1.0
# The cell stores φ in float32 before .double(): use the stored values in the references.
_stored = ResonateAndFire(1, decay=0.9, frequency=math.pi / 4).double()
R, PHI = float(_stored.decay[0]), float(_stored.frequency[0])


def _cell(n: int = 1, threshold: float = THETA) -> ResonateAndFire:
    return ResonateAndFire(n, decay=R, frequency=PHI, threshold=threshold).double()


def _run(cell: ResonateAndFire, a: list[float]) -> list[tuple[float, float, float]]:
    state = cell.init_state(1, dtype=DT)
    out = []
    for a_t in a:
        state = cell(torch.tensor([[[a_t]]], dtype=DT), None, state)
        out.append(tuple(float(v) for v in state))
    return out


def test_hand_computed_trajectory_in_complex_arithmetic() -> None:
    """z_t = A z_{t-1} + c a_t - iϑ s_{t-1}, s_t = [Im z_t > ϑ], A = r e^{iφ},
    c = (A - 1)/(ln r + iφ): an independent evaluation with Python complex numbers."""
    a = [1.5, 0.0, 0.0, 2.0, 0.0, 0.0]
    A = R * cmath.exp(1j * PHI)
    c = (A - 1) / (math.log(R) + 1j * PHI)
    z, s, want = 0j, 0.0, []
    for a_t in a:
        z = A * z + c * a_t - 1j * THETA * s
        s = float(z.imag > THETA)
        want.append((z.real, z.imag, s))
    got = _run(_cell(), a)
    assert any(w[2] == 1.0 for w in want) and any(w[2] == 0.0 for w in want)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-12)


def test_step_is_the_exact_solution_for_an_input_held_over_the_step() -> None:
    """Without a spike, one step equals the ODE's exact flow with constant input (zero-order
    hold): exp of the augmented matrix [[b, -ω, 1], [ω, b, 0], [0, 0, 0]]."""
    b = math.log(R)
    M = torch.tensor([[b, -PHI, 1.0], [PHI, b, 0.0], [0.0, 0.0, 0.0]], dtype=DT)
    F = torch.linalg.matrix_exp(M)
    cell = _cell(threshold=1e6)  # no spikes
    u0, w0, a = 0.3, -0.2, 0.7
    state = cell.State(*(torch.tensor([[v]], dtype=DT) for v in (u0, w0, 0.0)))
    new = cell(torch.tensor([[[a]]], dtype=DT), None, state)
    want = F @ torch.tensor([u0, w0, a], dtype=DT)
    torch.testing.assert_close(torch.cat([new.u[0], new.w[0]]), want[:2], rtol=1e-12, atol=1e-14)


def test_derived_jacobians_match_the_closed_form() -> None:
    """The trace engine derives the full 3×3 block (a scaled rotation plus the reset) and the
    input column from the step alone; ∂z_t/∂a_t ≠ 0 (the spike sees this step's input)."""
    cell = _cell(4)
    g = torch.Generator().manual_seed(0)
    state = cell.State(
        *(torch.randn(3, 4, generator=g, dtype=DT) for _ in range(2)),
        (torch.rand(3, 4, generator=g, dtype=DT) > 0.5).to(DT),
    )
    a_in = torch.randn(3, 1, 4, generator=g, dtype=DT) + 1.0
    new, J_entries = neuron_jacobians(cell, a_in, None, state)
    J = dense(J_entries, state[0], 1)
    A_re, A_im = R * math.cos(PHI), R * math.sin(PHI)
    c = (R * cmath.exp(1j * PHI) - 1) / (math.log(R) + 1j * PHI)
    psi = cell.surrogate.derivative(new.w - THETA)  # (3, 4)
    one = torch.ones_like(psi)
    want_s = torch.stack(
        [
            torch.stack([A_re * one, -A_im * one, 0 * one], -1),
            torch.stack([A_im * one, A_re * one, -THETA * one], -1),
            torch.stack([psi * A_im, psi * A_re, -psi * THETA], -1),
        ],
        -2,
    )
    torch.testing.assert_close(J.state, want_s, rtol=1e-12, atol=1e-14)
    want_in = torch.stack([c.real * one, c.imag * one, psi * c.imag], -1).unsqueeze(-1)
    torch.testing.assert_close(J.a_in, want_in, rtol=1e-12, atol=1e-14)
    assert float(J.a_in[..., 2, 0].abs().min()) > 0


def test_the_neuron_resonates() -> None:
    """Pulses at the neuron's period (2π/φ = 8 steps) build up; the same pulses at another
    rhythm do not."""
    cell = _cell(threshold=1e6)

    def peak(period: int) -> float:
        a = [1.0 if t % period == 0 else 0.0 for t in range(48)]
        return max(abs(w) for _, w, _ in _run(cell, a)[-16:])

    assert peak(8) > 2.0 * max(peak(5), peak(4), peak(12))


@pytest.mark.parametrize("recurrent", [False, True])
def test_ostl_is_exact_for_the_rf_cell(recurrent: bool) -> None:
    """With every per-neuron parameter trained: the generic traces need no RF-specific code."""
    net = make_net("rf", [3, 5], recurrent, trainable=("decay", "frequency", "threshold"))
    xs, ts = sequence(15, 3, 3)
    state, spikes = net.init_state(3), []
    with torch.no_grad():
        for x in xs:
            _, state = net.step(x, state)
            spikes.append(state[0].z)
    rate = float(torch.stack(spikes).mean())
    assert 0.02 < rate < 0.9, rate
    rule = OSTL(recurrence="exact" if recurrent else "diagonal")
    rep = ostl.compare_to_bptt(net, rule, xs, ts, mse)
    for row in rep.rows:
        assert row.reference_norm > 0 and row.relative_error <= 1e-10, rep.table()


def test_registry_and_options() -> None:
    assert ostl.CELLS["rf"] is ResonateAndFire
    layer = ostl.Layer(3, 4, "rf", frequency=0.5)
    assert layer.cell.State._fields == ("u", "w", "z") and layer.cell.output == "z"
    assert float(layer.cell.frequency[0]) == 0.5
    with pytest.raises(ValueError, match="decay"):
        ResonateAndFire(3, decay=1.0)
    with pytest.raises(ValueError, match="cannot train"):
        ResonateAndFire(3, trainable=("tau",))
