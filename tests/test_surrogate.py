"""Surrogate derivatives: each is the true derivative of its smooth proxy (gradcheck, float64)."""

from __future__ import annotations

import pytest
import torch

from ostl.surrogate import SURROGATES, SpikeFunction, get_surrogate, spike

NAMES = sorted(SURROGATES)


@pytest.mark.parametrize("name", NAMES)
def test_backward_is_derivative_of_proxy_gradcheck(name: str) -> None:
    s = get_surrogate(name)
    x = (torch.randn(64, dtype=torch.float64) * 0.7).requires_grad_()
    # The smooth form shares backward() with the spike: gradcheck compares that backward with
    # finite differences of the proxy, so the surrogate formula is proven, not assumed.
    assert torch.autograd.gradcheck(lambda x: SpikeFunction.apply(x, s, True), (x,))


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_heaviside_and_backward_is_surrogate(name: str) -> None:
    s = get_surrogate(name)
    x = torch.tensor([-1.0, -0.1, 0.0, 0.2, 3.0], dtype=torch.float64, requires_grad=True)
    z = spike(x, s)
    assert z.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    (g,) = torch.autograd.grad(z.sum(), x)
    torch.testing.assert_close(g, s.derivative(x.detach()))
    assert bool((g > 0).any()), "surrogate derivative vanishes everywhere"


@pytest.mark.parametrize("name", NAMES)
def test_works_under_torch_func(name: str) -> None:
    """The trace engine takes VJPs of the spike under vmap."""
    s = get_surrogate(name)
    x = torch.randn(5, 3, dtype=torch.float64)
    jac = torch.func.vmap(torch.func.jacrev(lambda v: spike(v, s)))(x)
    torch.testing.assert_close(jac, torch.diag_embed(s.derivative(x)))


def test_unknown_surrogate_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="fast_sigmoid"):
        get_surrogate("nope")
