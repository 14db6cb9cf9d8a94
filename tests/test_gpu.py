"""Device-agnostic core: the exact rules still equal BPTT on a CUDA device (skipped without)."""

from __future__ import annotations

import pytest
import torch

import ostl

from .helpers import make_net, mse, sequence

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


@pytest.mark.parametrize("cell", ["snu", "lif", "alif", "lstm"])
@pytest.mark.parametrize("rule", ["ostl", "osttp", "eprop", "snap"])
def test_rules_run_on_cuda_and_match_cpu(cell: str, rule: str) -> None:
    net = make_net(cell, [3, 5], recurrent=True)
    xs, ts = sequence(10, 3, 3)
    cpu = ostl.gradients(net, rule, xs, ts, mse)
    gpu = ostl.gradients(net.to("cuda"), rule, xs.cuda(), ts.cuda(), mse)
    for n, g in cpu.items():
        torch.testing.assert_close(gpu[n].cpu(), g, rtol=1e-9, atol=1e-12)


def test_shallow_exact_ostl_equals_bptt_on_cuda() -> None:
    net = make_net("lif", [3, 5], recurrent=True).to("cuda")
    xs, ts = (t.cuda() for t in sequence(12, 3, 3))
    rep = ostl.compare_to_bptt(net, ostl.OSTL(recurrence="exact"), xs, ts, mse)
    assert rep.max_relative_error < 1e-8
