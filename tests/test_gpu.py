"""Device-agnostic core: every rule computes on a CUDA device what it computes on the CPU, for
every cell (skipped without CUDA).

Float64 throughout: on the CPU the exact rules equal BPTT to 1e-9 (tests/test_equivalence.py),
so the same sequence on CUDA must give the CPU's gradients to 1e-9, whatever the rule (the
approximate rules too: each is a deterministic function of the same inputs; only the order of
the sums differs between the devices).
"""

from __future__ import annotations

import re

import pytest
import torch

import ostl
from ostl.errors import UnsupportedError

from .helpers import make_net, mse, sequence
from .registry import CELL_NAMES, RULE_NAMES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_every_rule_and_cell_on_cuda_matches_cpu(cell: str, rule: str) -> None:
    net = make_net(cell, [3, 5], recurrent=True)
    xs, ts = sequence(10, 3, 3)
    try:
        cpu = ostl.gradients(net, rule, xs, ts, mse)
    except UnsupportedError as e:  # a combination the rule refuses: refused on CUDA too
        with pytest.raises(UnsupportedError, match=re.escape(str(e)[:40])):
            ostl.gradients(net.to("cuda"), rule, xs.cuda(), ts.cuda(), mse)
        return
    gpu = ostl.gradients(net.to("cuda"), rule, xs.cuda(), ts.cuda(), mse)
    assert set(gpu) == set(cpu)
    for n, g in cpu.items():
        assert gpu[n].device.type == "cuda", n
        torch.testing.assert_close(gpu[n].cpu(), g, rtol=1e-9, atol=1e-12, msg=n)


def test_shallow_exact_ostl_equals_bptt_on_cuda() -> None:
    net = make_net("lif", [3, 5], recurrent=True).to("cuda")
    xs, ts = (t.cuda() for t in sequence(12, 3, 3))
    rep = ostl.compare_to_bptt(net, ostl.OSTL(recurrence="exact"), xs, ts, mse)
    assert rep.max_relative_error < 1e-8


@pytest.mark.parametrize("cell", ["lif", "lstm"])
@pytest.mark.parametrize("rule", ["ostl", "osttp", "eprop"])
def test_the_compiled_step_on_cuda_learns_like_the_eager_one(cell: str, rule: str) -> None:
    """``compile=True`` on CUDA: Inductor fuses the step (trace update and contraction
    included) into Triton kernels; outputs and weights after online updates equal the eager
    CUDA step's (float32, the dtype the kernels are generated for)."""

    def train(compile: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        net = make_net(cell, [3, 5, 4], recurrent=True).float().to("cuda")
        learner = ostl.Learner(
            net,
            rule,
            loss_fn=ostl.losses.mse,
            optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
            compile=compile,
        )
        xs, ts = (t.float().cuda() for t in sequence(8, 2, 3))
        learner.reset(2)
        ys = [learner.step(x, t if i % 2 else None) for i, (x, t) in enumerate(zip(xs, ts))]
        return torch.stack(ys).cpu(), {k: v.cpu() for k, v in net.state_dict().items()}

    (y0, w0), (y1, w1) = train(False), train(True)
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
    for k, v in w0.items():
        torch.testing.assert_close(w1[k], v, rtol=1e-4, atol=1e-5, msg=k)
