"""Bad input gets a clear error that says what was expected; nothing is silently broadcast."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import ostl
from ostl.rules import OSTL, RTRL

from .helpers import make_net, mse, sequence


@pytest.fixture
def net() -> ostl.Network:
    return make_net("lif", [3, 4], recurrent=True)


def test_layer_and_network_construction_errors() -> None:
    with pytest.raises(ValueError, match="n_in must be a positive int"):
        ostl.Layer(0, 3)
    with pytest.raises(ValueError, match="n_out must be a positive int"):
        ostl.Readout(3, -1)
    with pytest.raises(ostl.ShapeError, match="layer 1 expects n_in=5 but layer 0 has n_out=4"):
        ostl.Network([ostl.Layer(3, 4), ostl.Readout(5, 2)])
    with pytest.raises(TypeError, match="expected ostl.Layer or ostl.Readout"):
        ostl.Network([torch.nn.Linear(3, 4)])
    with pytest.raises(ValueError, match="at least one layer"):
        ostl.Network([])


@pytest.mark.parametrize(
    ("xs", "error", "message"),
    [
        (
            torch.rand(5, 2, 4, dtype=torch.float64),
            ostl.ShapeError,
            r"expected shape \(\*, \*, 3\)",
        ),
        (torch.rand(5, 3, dtype=torch.float64), ostl.ShapeError, r"got \(5, 3\)"),
        (torch.rand(5, 2, 3), ostl.DTypeError, "expected dtype torch.float64"),
        (torch.ones(5, 2, 3, dtype=torch.long), ostl.DTypeError, "expected dtype"),
        ([[0.0]], ostl.DTypeError, "expected a torch.Tensor"),
    ],
)
def test_sequence_errors(net: ostl.Network, xs: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        net(xs)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        ostl.gradients(net, "ostl", xs, [None] * 5, mse)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs(net: ostl.Network, bad: float) -> None:
    xs, ts = sequence(5, 2, 3)
    xs[2, 1, 0] = bad
    with pytest.raises(ostl.NonFiniteError, match="expected finite values"):
        net(xs)
    for rule in ("bptt", "ostl", "rtrl"):
        with pytest.raises(ostl.NonFiniteError):
            ostl.gradients(net, rule, xs, ts, mse)
    learner = ostl.Learner(
        net, "ostl", loss_fn=mse, optimizer=torch.optim.SGD(net.parameters(), 0.1)
    )
    learner.reset(2)
    with pytest.raises(ostl.NonFiniteError, match="x_t"):
        learner.step(xs[2], ts[2])
    ts[3, 0, 0] = bad
    with pytest.raises(ostl.NonFiniteError, match="target_t"):
        learner.step(xs[3], ts[3])


def test_device_mismatch_is_named(net: ostl.Network) -> None:
    xs = torch.rand(5, 2, 3, dtype=torch.float64, device="meta")
    with pytest.raises(ostl.DeviceError, match="expected a tensor on cpu"):
        net(xs)


def test_step_shape_errors(net: ostl.Network) -> None:
    layer = net.layers[0]
    state = layer.init_state(2)
    with pytest.raises(ostl.ShapeError, match=r"expected x_t of shape \(B, 3\)"):
        layer(torch.rand(2, 5, dtype=torch.float64), state)
    with pytest.raises(ostl.ShapeError, match="batch shape"):
        layer(torch.rand(3, 3, dtype=torch.float64), state)  # state is for batch 2: no broadcast
    with pytest.raises(ostl.ShapeError, match="state tuple of 2"):
        net.step(torch.rand(2, 3, dtype=torch.float64), (state,))
    with pytest.raises(ostl.ShapeError, match="expected a LIFState"):
        net.step(torch.rand(2, 3, dtype=torch.float64), state)  # a layer state, not the net's
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        net.layers[0].init_state(0)


def test_rule_step_errors(net: ostl.Network) -> None:
    runner = OSTL().bind(net)
    runner.reset(2)
    x = torch.rand(2, 3, dtype=torch.float64)
    with pytest.raises(ostl.ShapeError, match=r"x_t: expected shape \(2, 3\)"):
        runner.step(torch.rand(3, 3, dtype=torch.float64), None, mse)
    with pytest.raises(ostl.ShapeError, match="batch dimension of 2"):
        runner.step(x, torch.rand(3, 2, dtype=torch.float64), mse)
    with pytest.raises(ostl.ShapeError, match="scalar loss of one step"):
        runner.step(x, torch.rand(2, 2, dtype=torch.float64), lambda y, t: (y - t) ** 2)


def test_target_sequence_errors(net: ostl.Network) -> None:
    xs, ts = sequence(5, 2, 3)
    with pytest.raises(ostl.ShapeError, match="T=5"):
        ostl.gradients(net, "ostl", xs, ts[:4], mse)
    with pytest.raises(ostl.ShapeError, match="expected 5 entries"):
        ostl.gradients(net, "ostl", xs, [None] * 3, mse)


def test_unknown_rule_and_options() -> None:
    with pytest.raises(ValueError, match="unknown rule 'backprop'"):
        ostl.rules.get_rule("backprop")
    with pytest.raises(ValueError, match="recurrence must be"):
        OSTL(recurrence="full")
    with pytest.raises(ValueError, match="feedback must be"):
        OSTL(feedback="symmetric")
    with pytest.raises(ValueError, match="truncation"):
        ostl.BPTT(truncation=0)


def test_rule_refuses_what_it_cannot_handle() -> None:
    with pytest.raises(ostl.UnsupportedError, match="needs an ostl.Network"):
        OSTL().bind(torch.nn.Sequential(torch.nn.Linear(2, 2)))  # type: ignore[arg-type]
    net = make_net("lif", [3, 4], recurrent=True)
    for p in net.parameters():
        p.requires_grad_(False)
    with pytest.raises(ostl.UnsupportedError, match="no parameter with requires_grad"):
        OSTL().bind(net)


def test_exact_trace_too_large_fails_before_allocating() -> None:
    net = ostl.Network([ostl.Layer(500, 1000, "lif", recurrent=True), ostl.Readout(1000, 2)])
    runner = OSTL(recurrence="exact").bind(net)
    with pytest.raises(ostl.TraceTooLargeError, match=r"needs \d+\.\d+ GiB.*recurrence='diagonal'"):
        runner.reset(64)  # would need terabytes: a prompt error, not an out-of-memory crash
    OSTL(recurrence="diagonal").bind(net).reset(2)  # the suggested alternative works
    with pytest.raises(ostl.TraceTooLargeError, match="RTRL"):
        RTRL().bind(net).reset(8)


def test_frozen_parameters_get_no_gradient() -> None:
    net = make_net("snu", [3, 4], recurrent=True)
    net.layers[0].W.requires_grad_(False)
    xs, ts = sequence(6, 2, 3)
    for rule in ("bptt", "ostl", "rtrl"):
        g = ostl.gradients(net, rule, xs, ts, mse)
        assert "layers.0.W" not in g and "layers.0.H" in g


def test_a_known_torch_loss_broadcasts_nothing(net: ostl.Network) -> None:
    xs = torch.rand(5, 4, 3, dtype=torch.float64)
    narrow = torch.rand(5, 4, 1, dtype=torch.float64)  # (4, 1) against outputs (4, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not torch's broadcasting UserWarning: an error
        for rule in ("bptt", "ostl", "rtrl"):
            with pytest.raises(ostl.TargetError, match=r"output's shape \(4, 2\), got \(4, 1\)"):
                ostl.gradients(net, rule, xs, narrow, F.mse_loss)
        labels = torch.zeros(5, 4, 3, dtype=torch.long)  # (4, 3): not (4,) class indices
        with pytest.raises(ostl.TargetError, match=r"class indices of shape \(4,\)"):
            ostl.gradients(net, "bptt", xs, labels, F.cross_entropy)


def test_the_optimizer_must_hold_the_networks_parameters(net: ostl.Network) -> None:
    other = make_net("lif", [3, 4], recurrent=True)
    with pytest.raises(ostl.OptionError, match="holds none of the network's 6 trainable"):
        ostl.Learner(net, "ostl", loss_fn=mse, optimizer=torch.optim.SGD(other.parameters(), 0.1))
    some = torch.optim.SGD(net.layers[0].parameters(), 0.1)
    with pytest.raises(
        ostl.OptionError, match=r"holds only 4 of .*missing: layers\.1\.W, layers\.1\.b"
    ):
        ostl.Learner(net, "ostl", loss_fn=mse, optimizer=some)
    for lr in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ostl.OptionError, match="lr must be a finite number >= 0"):
            ostl.Learner(net, "ostl", loss_fn=mse, optimizer=_sgd_with_lr(net, lr))
    with pytest.raises(ostl.OptionError, match="max_skips must be a positive int"):
        ostl.Learner(net, "ostl", loss_fn=mse, optimizer=_sgd_with_lr(net, 0.1), max_skips=0)
    both = torch.optim.SGD([*net.parameters(), *other.parameters()], 0.1)  # extras are fine
    ostl.Learner(net, "ostl", loss_fn=mse, optimizer=both)


def _sgd_with_lr(net: ostl.Network, lr: float) -> torch.optim.Optimizer:
    opt = torch.optim.SGD(net.parameters(), 0.1)
    opt.param_groups[0]["lr"] = lr  # torch.optim refuses some of these itself
    return opt


def test_a_network_on_the_meta_device_is_refused() -> None:
    meta = make_net("lif", [3, 4], recurrent=True).to("meta")
    xs = torch.rand(5, 2, 3, dtype=torch.float64, device="meta")
    with pytest.raises(ostl.DeviceError, match="meta tensors have no data: move the network"):
        ostl.Learner(meta, "ostl", loss_fn=mse, optimizer=torch.optim.SGD(meta.parameters(), 0.1))
    for rule in ("ostl", "bptt"):
        with pytest.raises(ostl.DeviceError, match="meta device"):
            ostl.gradients(meta, rule, xs, xs[..., :2], mse)


def test_a_torch_module_in_a_network_is_an_ostl_error() -> None:
    with pytest.raises(ostl.LayerTypeError, match=r"layer 1 is a Linear; expected ostl\.Layer "
                       r"or ostl\.Readout.*ostl\.Readout\(n_in, n_out\)") as e:  # fmt: skip
        ostl.Network([ostl.Layer(3, 4), torch.nn.Linear(4, 2)])
    assert isinstance(e.value, ostl.OSTLError) and isinstance(e.value, TypeError)
