"""PyTorch modules as ostl layers: the same outputs (float64), trainable, clear refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import ostl
from ostl.errors import LayerTypeError, OptionError, UnsupportedError
from ostl.interop.torch_modules import layers_from_torch

T, B, N_IN, H = 9, 3, 4, 6


def _xs() -> Tensor:
    return torch.randn(T, B, N_IN, dtype=torch.float64)


def _zero_b_hn(gru: nn.Module) -> nn.Module:
    """PyTorch initialises GRU's b_hn at random; ostl's GRU has none (see the module)."""
    with torch.no_grad():
        for k in range(gru.num_layers):
            getattr(gru, f"bias_hh_l{k}")[2 * gru.hidden_size :] = 0
    return gru


def _module(kind: str, **kw: object) -> nn.Module:
    cls = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[kind]
    m = cls(N_IN, H, **kw).double()
    with torch.no_grad():  # larger biases than the default, so a mapping error would show
        for name, p in m.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-1, 1)
    return _zero_b_hn(m) if kind == "gru" and m.bias else m


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_recurrent_modules_give_the_same_outputs(kind: str, num_layers: int, bias: bool) -> None:
    m = _module(kind, num_layers=num_layers, bias=bias)
    net = ostl.Network.from_torch(m)
    assert [layer.cell.__class__.__name__.lower() for layer in net.typed_layers] == [
        kind
    ] * num_layers
    assert all(layer.H is not None and (layer.b is not None) == bias for layer in net.typed_layers)
    xs = _xs()
    torch.testing.assert_close(net(xs), m(xs)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_layer_from_torch_matches_and_copies(kind: str) -> None:
    m = _module(kind)
    layer = ostl.Layer.from_torch(m)
    assert (layer.n_in, layer.n_out, layer.W.dtype) == (N_IN, H, torch.float64)
    xs = _xs()
    torch.testing.assert_close(ostl.Network([layer])(xs), m(xs)[0], rtol=0, atol=1e-12)
    # the weights are copies: changing the ostl layer leaves the module as it was
    before = m.weight_ih_l0.detach().clone()
    with torch.no_grad():
        layer.W.add_(1.0)
    assert torch.equal(m.weight_ih_l0.detach(), before)


def test_batch_first_only_changes_the_calling_convention() -> None:
    m = _module("lstm", batch_first=True)
    net = ostl.Network.from_torch(m)
    xs = _xs()  # time-major for ostl
    want = m(xs.transpose(0, 1))[0].transpose(0, 1)
    torch.testing.assert_close(net(xs), want, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("cls", "kind"), [(nn.RNNCell, "rnn"), (nn.GRUCell, "gru"), (nn.LSTMCell, "lstm")]
)
def test_one_step_cells_convert_too(cls: type[nn.Module], kind: str) -> None:
    cell = cls(N_IN, H).double()
    with torch.no_grad():
        if kind == "gru":
            cell.bias_hh[2 * H :] = 0
    layer = ostl.Layer.from_torch(cell)
    state, hx = layer.init_state(B), None
    for x in _xs():
        y, state = layer(x, state)
        hx = cell(x, hx)
        h = hx[0] if isinstance(hx, tuple) else hx
        torch.testing.assert_close(y, h, rtol=0, atol=1e-12)


def test_linear_becomes_a_readout_and_network_from_torch_chains() -> None:
    lstm, linear = _module("lstm", num_layers=2), nn.Linear(H, 3).double()
    readout = ostl.Readout.from_torch(linear)
    x = torch.randn(B, H, dtype=torch.float64)
    torch.testing.assert_close(readout(x)[0], linear(x), rtol=0, atol=1e-12)
    assert ostl.Readout.from_torch(nn.Linear(H, 3, bias=False)).b is None
    net = ostl.Network.from_torch(lstm, linear)
    assert len(net.layers) == 3 and isinstance(net.layers[-1], ostl.Readout)
    xs = _xs()
    torch.testing.assert_close(net(xs), linear(lstm(xs)[0]), rtol=0, atol=1e-12)
    # a list works, and ostl layers are taken as they are
    same = ostl.Network.from_torch([lstm, readout])
    torch.testing.assert_close(same(xs), net(xs), rtol=0, atol=1e-12)


def test_float32_modules_stay_float32() -> None:
    net = ostl.Network.from_torch(nn.GRU(N_IN, H, bias=False), nn.Linear(H, 2))
    assert net.dtype == torch.float32


@pytest.mark.parametrize("rule", ["bptt", "ostl"])
@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn"])
def test_a_converted_network_trains_with_a_learner(kind: str, rule: str) -> None:
    net = ostl.Network.from_torch(_module(kind), nn.Linear(H, 2).double())
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    learner = ostl.Learner(
        net,
        rule,
        loss_fn=ostl.losses.mse,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        update_every=None,
    )
    learner.reset(B)
    for x in _xs():
        learner.step(x, torch.ones(B, 2, dtype=torch.float64))
    loss = learner.mean_loss
    learner.end_sequence()
    assert learner.updates == 1 and math.isfinite(loss) and loss > 0
    moved = [n for n, p in net.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert {"layers.0.W", "layers.0.H", "layers.0.b", "layers.1.W"} <= set(moved)


def test_gru_with_a_nonzero_candidate_bias_is_refused() -> None:
    gru = nn.GRU(N_IN, H)  # PyTorch's initial b_hn is random, not zero
    with pytest.raises(UnsupportedError, match=r"b_hn .*bias_hh\[12:\].* not zero"):
        ostl.Layer.from_torch(gru)
    _zero_b_hn(gru)
    ostl.Layer.from_torch(gru)  # once zeroed it converts


@pytest.mark.parametrize(
    ("module", "error", "message"),
    [
        (nn.RNN(N_IN, H, nonlinearity="relu"), UnsupportedError, "tanh only"),
        (nn.LSTM(N_IN, H, bidirectional=True), UnsupportedError, "forward in time"),
        (nn.LSTM(N_IN, H, proj_size=2), UnsupportedError, "no output projection"),
        (nn.LSTM(N_IN, H, num_layers=2, dropout=0.5), UnsupportedError, "ignore_dropout=True"),
        (nn.LSTM(N_IN, H, num_layers=2), OptionError, "Network.from_torch"),
        (nn.Linear(N_IN, H), LayerTypeError, "Readout.from_torch"),
        (nn.Conv1d(N_IN, H, 3), LayerTypeError, "expected nn.RNN, nn.GRU, nn.LSTM"),
    ],
)
def test_unsupported_modules_and_options_are_clear_errors(
    module: nn.Module, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ostl.Layer.from_torch(module)


def test_dropout_is_dropped_only_when_asked_and_then_matches_eval_mode() -> None:
    m = _module("lstm", num_layers=2, dropout=0.5).eval()
    with pytest.raises(UnsupportedError, match="no dropout"):
        layers_from_torch(m)
    net = ostl.Network.from_torch(m, ignore_dropout=True)
    xs = _xs()
    torch.testing.assert_close(net(xs), m(xs)[0], rtol=0, atol=1e-12)
    # one layer: PyTorch applies no dropout at all, so it converts as it is
    with pytest.warns(UserWarning, match="dropout"):
        single = nn.LSTM(N_IN, H, dropout=0.5)
    ostl.Layer.from_torch(single)


def test_readout_from_torch_refuses_other_modules() -> None:
    with pytest.raises(LayerTypeError, match="Layer.from_torch"):
        ostl.Readout.from_torch(nn.GRU(N_IN, H))
    with pytest.raises(LayerTypeError, match="not initialised"):
        ostl.Readout.from_torch(nn.LazyLinear(3))
