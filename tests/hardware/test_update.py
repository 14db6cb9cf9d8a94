"""Programming schemes: mixed-precision thresholds, direct programming, the optimizer hook."""

from __future__ import annotations

import torch

import ostl
from ostl.hardware import (
    DirectProgramming,
    MixedPrecision,
    PCMConfig,
    PCMCrossbar,
    attach_scheme,
    map_network,
)


def _xbar() -> PCMCrossbar:
    # noiseless writes: the programmed weight is exactly the target
    return PCMCrossbar(torch.zeros(3, 4), PCMConfig.noiseless(), w_max=1.0)


def test_mixed_precision_below_threshold_programs_nothing() -> None:
    xbar, scheme = _xbar(), MixedPrecision(granularity=0.5)
    eps = scheme.epsilon(xbar)  # 0.5 µS of 25 µS at w_max 1: 0.02
    assert abs(eps - 0.02) < 1e-9
    delta = torch.zeros(3, 4)
    delta[0, 0] = 0.6 * eps
    scheme.apply("w", xbar, delta)
    assert scheme.events == 0 and xbar.writes == 2 * 12
    assert torch.equal(xbar.weight(), torch.zeros(3, 4))
    assert abs(float(scheme.chi["w"][0, 0]) - 0.6 * eps) < 1e-9


def test_mixed_precision_above_threshold_programs_once() -> None:
    xbar, scheme = _xbar(), MixedPrecision(granularity=0.5)
    eps = scheme.epsilon(xbar)
    delta = torch.zeros(3, 4)
    delta[1, 2] = 0.6 * eps
    scheme.apply("w", xbar, delta)  # 0.6 ε accumulated: nothing
    scheme.apply("w", xbar, delta)  # 1.2 ε: one event of ε, 0.2 ε kept
    assert scheme.events == 1
    w = xbar.weight()
    assert abs(float(w[1, 2]) - eps) < 1e-6 and int((w != 0).sum()) == 1
    assert abs(float(scheme.chi["w"][1, 2]) - 0.2 * eps) < 1e-6
    # a negative change programs the other device of the pair
    scheme.apply("w", xbar, -3.0 * delta)  # χ = 0.2ε - 1.8ε = -1.6ε: one event of -ε
    assert scheme.events == 2 and abs(float(xbar.weight()[1, 2])) < 1e-6
    assert float(xbar.g_neg[1, 2]) > 0


def test_direct_programs_every_nonzero_update() -> None:
    xbar, scheme = _xbar(), DirectProgramming()
    delta = torch.zeros(3, 4)
    delta[0, :3] = 1e-4
    scheme.apply("w", xbar, delta)
    assert scheme.events == 3
    torch.testing.assert_close(xbar.weight(), delta)


def test_refresh_when_a_device_saturates() -> None:
    xbar = PCMCrossbar(torch.full((1, 2), 0.9), PCMConfig.noiseless(), w_max=1.0)
    n = xbar.increment(torch.tensor([[0.05, 0.3]]), torch.ones(1, 2, dtype=torch.bool))
    assert n == 2
    torch.testing.assert_close(xbar.weight(), torch.tensor([[0.95, 1.0]]))  # clipped at w_max


def test_optimizer_hook_programs_the_update() -> None:
    net = ostl.Network([ostl.Readout(4, 2, bias=True)])
    xbars = map_network(net, PCMConfig.noiseless())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scheme = MixedPrecision()
    attach_scheme(net, opt, scheme)
    w0 = net.layers[0].W.detach().clone()
    net.layers[0].W.grad = torch.full_like(w0, 1e-6)  # far below ε: nothing programmed
    net.layers[0].b.grad = torch.ones(2)
    opt.step()
    assert scheme.events == 0
    torch.testing.assert_close(net.layers[0].W.detach(), w0)
    torch.testing.assert_close(net.layers[0].b.detach(), torch.full((2,), -0.1))  # digital
    net.layers[0].W.grad = torch.ones_like(w0)  # Δ = -0.1: many ε
    opt.step()
    assert scheme.events == w0.numel()
    torch.testing.assert_close(net.layers[0].W.detach(), xbars["layers.0.W"].weight())
    assert (net.layers[0].W.detach() < w0).all()
