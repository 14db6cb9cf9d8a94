"""The online Learner: update schedules, online learning works, memory does not grow with T."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch

import ostl
from ostl.rules import BPTT, OSTL, RTRL

from .helpers import make_net, mse, sequence


def _params(net: ostl.Network) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("rule", [BPTT(), OSTL(recurrence="exact"), RTRL()])
def test_update_at_end_of_sequence_is_one_sgd_step_with_bptt_gradients(rule: object) -> None:
    net = make_net("snu", [3, 4], recurrent=True)
    xs, ts = sequence(10, 2, 3)
    lr = 0.1
    grads = ostl.gradients(net, BPTT(), xs, ts, mse)
    want = {n: p - lr * grads[n] for n, p in _params(net).items()}
    learner = ostl.Learner(
        net,
        rule,
        loss_fn=mse,
        optimizer=torch.optim.SGD(net.parameters(), lr=lr),
        update_every=None,
    )
    learner.reset(2)
    for x, t in zip(xs, ts):
        learner.step(x, t)
    assert learner.updates == 0
    learner.end_sequence()
    assert learner.updates == 1
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), want[n], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cell", ["snu", "lstm"])
def test_online_ostl_equals_online_rtrl_for_a_shallow_net(cell: str) -> None:
    """With weights changing every step, shallow exact OSTL and RTRL are the same algorithm."""
    xs, ts = sequence(12, 2, 3)
    finals = []
    for rule in (OSTL(recurrence="exact"), RTRL()):
        net = make_net(cell, [3, 4], recurrent=True)
        learner = ostl.Learner(
            net, rule, loss_fn=mse, optimizer=torch.optim.SGD(net.parameters(), lr=0.05)
        )
        learner.reset(2)
        for x, t in zip(xs, ts):
            learner.step(x, t)
        assert learner.updates == 12
        finals.append(_params(net))
    moved = sum(
        float((finals[0][n] - p).norm()) for n, p in _params(make_net(cell, [3, 4], True)).items()
    )
    assert moved > 1e-3
    for n in finals[0]:
        torch.testing.assert_close(finals[0][n], finals[1][n], rtol=1e-9, atol=1e-12)


def test_bptt_updating_every_k_steps_is_truncated_bptt() -> None:
    xs, ts = sequence(12, 2, 3)
    k, lr = 4, 0.05
    net = make_net("lif", [3, 5], recurrent=True)
    learner = ostl.Learner(
        net, "bptt", loss_fn=mse, optimizer=torch.optim.SGD(net.parameters(), lr=lr), update_every=k
    )
    learner.reset(2)
    for x, t in zip(xs, ts):
        learner.step(x, t)
    assert learner.updates == 3
    # by hand: forward k steps from the carried (detached) state, backward, SGD step
    ref = make_net("lif", [3, 5], recurrent=True)
    params = list(ref.parameters())
    state = ref.init_state(2)
    for c in range(0, 12, k):
        state = tuple(type(s)(*(v.detach() for v in s)) for s in state)
        loss = torch.zeros((), dtype=xs.dtype)
        for t in range(c, c + k):
            y, state = ref.step(xs[t], state)
            loss = loss + mse(y, ts[t])
        gs = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, gs):
                p -= lr * g
    for (n, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-9, atol=1e-12, msg=n)


def test_window_without_target_does_not_step_the_optimizer() -> None:
    net = make_net("snu", [3, 4], recurrent=False)
    xs, ts = sequence(6, 2, 3)
    before = _params(net)
    learner = ostl.Learner(
        net,
        "ostl",
        loss_fn=mse,
        optimizer=torch.optim.Adam(net.parameters(), lr=0.1),
        update_every=2,
    )
    learner.reset(2)
    for x in xs[:4]:
        learner.step(x, None)
    assert learner.updates == 0
    assert all(torch.equal(p, before[n]) for n, p in _params(net).items())
    learner.step(xs[4], None)
    learner.step(xs[5], ts[5])
    assert learner.updates == 1


def test_online_snu_learns_a_regression_stream() -> None:
    """update_every=1: a shallow SNU network reduces a regression loss on a synthetic stream."""
    from ostl.run.demo import DemoConfig, pattern_task
    from ostl.run.demo import make_net as demo_net

    cfg = DemoConfig(steps=50, epochs=15, hidden=32)
    net = demo_net(cfg)
    xs, ts = pattern_task(cfg)
    learner = ostl.Learner(
        net, OSTL(), loss_fn=mse, optimizer=torch.optim.Adam(net.parameters(), lr=1e-2)
    )
    losses = []
    for _ in range(cfg.epochs):
        learner.reset(1)
        for x, t in zip(xs, ts):
            learner.step(x, t)
        losses.append(learner.mean_loss)
    assert learner.updates == cfg.epochs * cfg.steps
    assert losses[-1] < 0.5 * losses[0], losses


def _live_tensor_bytes() -> int:
    gc.collect()
    total = 0
    with warnings.catch_warnings():  # isinstance() pokes deprecated module attributes
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if isinstance(obj, torch.Tensor):
                    total += obj.numel() * obj.element_size()
            except Exception:  # objects that fail isinstance checks (weakref proxies)
                continue
    return total


@pytest.mark.parametrize(
    ("rule", "update_every"),
    [(OSTL(), 1), (OSTL(recurrence="exact"), None), (RTRL(), 5), (BPTT(), 1)],
)
def test_memory_does_not_grow_with_sequence_length(rule: object, update_every: int | None) -> None:
    net = make_net("lif", [3, 6, 4], recurrent=True)
    learner = ostl.Learner(
        net,
        rule,
        loss_fn=mse,
        optimizer=torch.optim.SGD(net.parameters(), lr=1e-3),
        update_every=update_every,
    )
    x, t = sequence(1, 2, 3)
    learner.reset(2)
    held, live = [], []
    for T in (100, 1000):
        while learner.runner.steps < T:
            learner.step(x[0], t[0])
        held.append(learner.state_bytes())
        live.append(_live_tensor_bytes())
    assert held[0] == held[1] > 0
    assert live[1] <= live[0], f"live tensor bytes grew from {live[0]} to {live[1]}"


def test_learner_checks_its_arguments() -> None:
    net = make_net("snu", [3, 4], recurrent=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="update_every"):
        ostl.Learner(net, "ostl", loss_fn=mse, optimizer=opt, update_every=0)
    with pytest.raises(TypeError, match="loss_fn"):
        ostl.Learner(net, "ostl", loss_fn=None, optimizer=opt)  # type: ignore[arg-type]
    learner = ostl.Learner(net, "ostl", loss_fn=mse, optimizer=opt)
    with pytest.raises(ostl.OSTLError, match="reset"):
        learner.step(torch.zeros(2, 3, dtype=torch.float64))


def test_a_compiled_step_learns_like_the_eager_one() -> None:
    """compile=True runs the same maths: outputs and weights after online updates agree."""

    def train(compile: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        net = make_net("lif", [3, 5, 4], recurrent=True).float()
        learner = ostl.Learner(
            net,
            "osttp",
            loss_fn=ostl.losses.mse,
            optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
            compile=compile,
        )
        xs, ts = sequence(8, 2, 3)
        learner.reset(2)
        ys = [learner.step(x.float(), t.float() if i % 2 else None) for i, (x, t) in
              enumerate(zip(xs, ts))]  # fmt: skip
        return torch.stack(ys), {k: v.clone() for k, v in net.state_dict().items()}

    (y0, w0), (y1, w1) = train(False), train(True)
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-6)
    for k, v in w0.items():
        torch.testing.assert_close(w1[k], v, rtol=1e-5, atol=1e-6)
    assert (
        float((w0["layers.0.W"] - make_net("lif", [3, 5, 4], True).float().layers[0].W).norm()) > 0
    )


def test_compile_is_refused_where_it_cannot_apply() -> None:
    net = make_net("lif", [3, 4], recurrent=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="online trace rules"):
        ostl.Learner(net, "bptt", loss_fn=mse, optimizer=opt, update_every=None, compile=True)
    with pytest.raises(ValueError, match="choose one"):
        ostl.Learner(net, "osttp", loss_fn=mse, optimizer=opt, unlocked=True, compile=True)
