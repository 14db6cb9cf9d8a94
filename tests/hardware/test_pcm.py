"""PCM crossbars: the analog forward pass against the digital one, noise, drift, compensation."""

from __future__ import annotations

import torch

import ostl
from ostl.hardware import PCMConfig, PCMCrossbar, crossbars, drift_network, map_network


def _net(cell: str = "rnn") -> ostl.Network:
    return ostl.Network([ostl.Layer(16, 24, cell=cell, recurrent=True), ostl.Readout(24, 5)])


def test_noiseless_ideal_equals_digital() -> None:
    net = _net("snu")
    xs = (torch.rand(8, 4, 16) < 0.3).float()
    ref = net(xs).detach()
    map_network(net, PCMConfig.noiseless(quantised=False))
    torch.testing.assert_close(net(xs).detach(), ref, atol=1e-5, rtol=1e-5)


def test_noiseless_quantised_within_quantisation_tolerance() -> None:
    """DAC/ADC only: each output off by at most half an ADC step plus the DAC's rounding."""
    readout = ostl.Readout(32, 10)
    net = ostl.Network([readout])
    x = torch.rand(64, 32)
    ref = net(x[None])[0].detach()
    cfg = PCMConfig.noiseless()
    xbar = map_network(net, cfg)["layers.0.W"]
    W = readout.W.detach()
    out_step = 2 * 12.0 / (2 ** (cfg.out_bits - 1) - 1) * xbar.w_max  # aihwkit: res·2·out_bound
    inp_step = 2 * 1.0 / (2 ** (cfg.inp_bits - 1) - 1)  # inputs scaled to [-1, 1] (abs-max)
    scale = x.abs().amax(1, keepdim=True)  # noise management: per-row input scale
    bound = scale * (out_step / 2 + inp_step / 2 * W.abs().sum(1))
    err = (net(x[None])[0].detach() - ref).abs()
    assert (err <= bound + 1e-5).all()
    assert err.max() > 0  # quantisation is on


def test_noiseless_quantised_rnn_close_to_digital() -> None:
    net = _net("rnn")
    xs = torch.rand(10, 4, 16)
    ref = net(xs).detach()
    map_network(net, PCMConfig.noiseless(headroom=1.0))  # the ADC step scales with w_max
    rel = (net(xs).detach() - ref).norm() / ref.norm()
    assert 0 < rel < 0.02


def test_state_dict_keys_unchanged() -> None:
    net = _net()
    keys = list(net.state_dict())
    map_network(net, PCMConfig())
    assert list(net.state_dict()) == keys
    ostl.Network(
        [ostl.Layer(16, 24, cell="rnn", recurrent=True), ostl.Readout(24, 5)]
    ).load_state_dict(net.state_dict())


def test_noise_makes_outputs_differ() -> None:
    net = _net("rnn")
    xs = torch.rand(10, 4, 16)
    ref = net(xs).detach()
    map_network(net, PCMConfig())
    rel = (net(xs).detach() - ref).norm() / ref.norm()
    assert rel > 0.01


def test_programming_noise_follows_aihwkit_model() -> None:
    """A full write of a zero weight leaves |g| of order c0 = 0.26 µS (aihwkit's PCM fit)."""
    xbar = PCMCrossbar(torch.zeros(200, 200), PCMConfig(), w_max=1.0)
    g = xbar.g_pos
    assert 0.1 < float(g.mean()) < 0.4  # half-normal of σ≈0.26 clipped at 0: mean ≈ 0.1
    assert xbar.writes == 2 * 200 * 200


def test_drift_grows_with_time_and_compensation_helps() -> None:
    torch.manual_seed(1)
    W = torch.empty(64, 64).uniform_(-1, 1)
    xbar = PCMCrossbar(W, PCMConfig(prog_noise=0.0, out_noise=0.0, compensation=False), w_max=1.0)
    x = torch.rand(256, 64)
    fresh = xbar.mvm(x)
    errors = []
    for t in (1.0, 3600.0, 86400.0, 3.156e7):
        xbar.drift_to(t)
        errors.append(float((xbar.mvm(x) - fresh).norm() / fresh.norm()))
    assert errors == sorted(errors) and errors[-1] > 2 * errors[0]
    # global drift compensation rescales the outputs: far smaller error after a year
    from aihwkit.inference import GlobalDriftCompensation

    xbar.rpu.drift_compensation = GlobalDriftCompensation()
    xbar.drift_to(None)
    xbar.drift_to(3.156e7)
    compensated = float((xbar.mvm(x) - fresh).norm() / fresh.norm())
    assert compensated < 0.5 * errors[-1]


def test_drift_network_toggles_compensation() -> None:
    net = _net("rnn")
    map_network(net, PCMConfig())
    drift_network(net, 3600.0, compensation=False)
    assert all(x.rpu.drift_compensation is None for x in crossbars(net).values())
    drift_network(net, 3600.0, compensation=True)
    assert all(x.rpu.drift_compensation is not None for x in crossbars(net).values())
    assert all(x.t_inference == 3600.0 for x in crossbars(net).values())
