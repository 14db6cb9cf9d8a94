import torch

import ostl


def test_shallow_ostl_matches_bptt_smoke() -> None:
    net = ostl.Network([ostl.Layer(3, 4, "snu"), ostl.Readout(4, 2)]).double()
    xs = torch.rand(10, 2, 3, dtype=torch.float64) * 3
    ts = torch.randn(10, 2, 2, dtype=torch.float64)
    rep = ostl.compare_to_bptt(net, "ostl", xs, ts, lambda y, t: ((y - t) ** 2).mean())
    assert rep.max_relative_error < 1e-8
