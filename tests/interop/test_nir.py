"""NIR: ostl -> NIR -> ostl exactly, snnTorch's reader and writer agree, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from ostl import Layer, Network, Readout
from ostl.errors import OptionError, ShapeError, UnsupportedError
from ostl.interop.nir import DEFAULT_DT, from_nir, to_nir

T, B, N_IN = 50, 4, 5

nir = pytest.importorskip("nir", reason="NIR export needs the nir package (pip install ostl[nir])")


def lif_net(
    hidden: tuple[int, ...],
    recurrent: bool,
    *,
    bias: bool = False,
    dtype: torch.dtype = torch.float64,
) -> Network:
    """LIF layers with per-neuron decays and thresholds that fire often, and a readout."""
    layers: list[Layer | Readout] = []
    n = N_IN
    for h in hidden:
        layer = Layer(n, h, "lif", recurrent=recurrent, bias=bias)
        with torch.no_grad():
            layer.W.mul_(3)
            layer.cell.decay.uniform_(0.5, 0.95)
            layer.cell.threshold.uniform_(0.5, 1.5)
            if bias:
                layer.b.uniform_(-0.3, 0.3)
        layers.append(layer)
        n = h
    return Network([*layers, Readout(n, 3)]).to(dtype)


def dyadic_lif_net(hidden: tuple[int, ...], recurrent: bool) -> Network:
    """A float32 LIF network whose decays survive float32 round trips through τ exactly, with
    one threshold per layer (snnTorch's reader takes one)."""
    net = lif_net(hidden, recurrent, bias=True, dtype=torch.float32)
    with torch.no_grad():
        for layer in net.layers[:-1]:
            choice = torch.randint(0, 3, (layer.n_out,))
            layer.cell.decay.copy_(torch.tensor([0.5, 0.75, 0.875])[choice])
            layer.cell.threshold.fill_(0.75)
    return net


def assert_same_network(a: Network, b: Network, xs: Tensor) -> None:
    """Equal weights and per-neuron parameters, and equal outputs of every layer."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)
    ya, yb = a.unroll(xs, per_layer=True)[0], b.unroll(xs, per_layer=True)[0]
    assert all(torch.equal(p, q) for p, q in zip(ya, yb))
    for spikes in ya[:-1]:  # the spikes compared are not all 0 or all 1
        assert 0.05 < spikes.mean() < 0.95


@pytest.mark.parametrize("recurrent", [False, True], ids=["feedforward", "recurrent"])
@pytest.mark.parametrize("hidden", [(7,), (7, 6)], ids=["1-hidden", "2-hidden"])
def test_ostl_to_nir_to_ostl_is_the_same_network(hidden: tuple[int, ...], recurrent: bool) -> None:
    net = lif_net(hidden, recurrent, bias=recurrent)
    back = from_nir(to_nir(net))
    assert back.dtype == torch.float64
    assert_same_network(net, back, torch.rand(T, B, N_IN, dtype=torch.float64))


def test_decays_come_back_bit_for_bit() -> None:
    """1 - dt/τ misses some α in the last bit (the exact α in the metadata restores them), and
    R dt/τ some gains of 1 (taken as 1 when R = τ/dt): weights and decays come back exact."""
    layer = Layer(N_IN, 200, "lif")
    net = Network([layer, Readout(200, 2)]).double()
    with torch.no_grad():
        layer.cell.decay.copy_(torch.linspace(0.3, 0.99, 200, dtype=torch.float64))
    graph = to_nir(net)
    alpha = layer.cell.decay.numpy()
    assert (1 - DEFAULT_DT / graph.nodes["layer0.neurons"].tau != alpha).sum() > 5
    back = from_nir(graph).layers[0]
    assert torch.equal(back.cell.decay, layer.cell.decay) and torch.equal(back.W, layer.W)


def test_nir_file_round_trip(tmp_path: Path) -> None:
    net = lif_net((7, 6), recurrent=True)
    nir.write(tmp_path / "net.nir", to_nir(net, dt=1e-3))
    graph = nir.read(tmp_path / "net.nir")
    assert float(graph.metadata["dt"]) == 1e-3
    xs = torch.rand(T, B, N_IN, dtype=torch.float64)
    assert_same_network(net, from_nir(graph), xs)
    assert_same_network(net, from_nir(tmp_path / "net.nir"), xs)
    # another time step reads the same τ as another decay: α' = 1 - dt'/τ
    slower = from_nir(graph, dt=5e-4)
    alpha = net.layers[0].cell.decay
    torch.testing.assert_close(slower.layers[0].cell.decay, 1 - 0.5 * (1 - alpha))


def test_nested_subgraphs_are_read(tmp_path: Path) -> None:
    """A recurrent layer as a subgraph (Input, LIF, recurrent Linear, Output), as NIR allows."""
    net = lif_net((6,), recurrent=True)
    g = to_nir(net)
    sub = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([6])), "lif": g.nodes["layer0.neurons"],
               "w_rec": g.nodes["layer0.rec"], "output": nir.Output(np.array([6]))},
        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
    )  # fmt: skip
    keep = ("input", "layer0.in", "layer1.readout", "output")
    nested = nir.NIRGraph(
        nodes={**{k: g.nodes[k] for k in keep}, "rlif": sub},
        edges=[("input", "layer0.in"), ("layer0.in", "rlif"), ("rlif", "layer1.readout"),
               ("layer1.readout", "output")],
        metadata=g.metadata,
    )  # fmt: skip
    nir.write(tmp_path / "nested.nir", nested)
    xs = torch.rand(T, B, N_IN, dtype=torch.float64)
    assert_same_network(net, from_nir(nested), xs)
    assert_same_network(net, from_nir(tmp_path / "nested.nir"), xs)


def test_graph_nodes_follow_the_documented_convention() -> None:
    dt = 1e-3
    net = lif_net((7, 6), recurrent=False)
    net.layers[1] = Layer(7, 6, "lif", recurrent=True, bias=True).double()
    graph = to_nir(net, dt=dt)
    kinds = {k: type(v).__name__ for k, v in graph.nodes.items()}
    assert kinds == {
        "input": "Input", "layer0.in": "Linear", "layer0.neurons": "LIF",
        "layer1.in": "Affine", "layer1.neurons": "LIF", "layer1.rec": "Linear",
        "layer2.readout": "Affine", "output": "Output",
    }  # fmt: skip
    assert ("layer1.neurons", "layer1.rec") in graph.edges
    assert ("layer1.rec", "layer1.neurons") in graph.edges
    lif, cell = graph.nodes["layer0.neurons"], net.layers[0].cell
    alpha = cell.decay.numpy()
    np.testing.assert_allclose(lif.tau, dt / (1 - alpha), rtol=1e-15)
    np.testing.assert_allclose(lif.r * dt / lif.tau, 1.0, rtol=1e-15)
    assert np.array_equal(lif.v_threshold, cell.threshold.numpy())
    assert not lif.v_leak.any() and not lif.v_reset.any()
    assert np.array_equal(graph.nodes["layer1.rec"].weight, net.layers[1].H.detach().numpy())
    options = json.loads(lif.metadata["ostl"])
    assert options["reset"] == "hard" and options["surrogate"]["name"] == "fast_sigmoid"


def test_training_options_survive_the_round_trip() -> None:
    layer = Layer(N_IN, 4, "lif", surrogate="triangle", trainable=("threshold",), detach_reset=True)
    back = from_nir(to_nir(Network([layer, Readout(4, 2)])))
    cell = back.layers[0].cell
    assert cell.surrogate == layer.cell.surrogate and cell.detach_reset
    assert cell.trainable_names == ("threshold",)


def test_decay_one_is_an_if_node() -> None:
    net = lif_net((6,), recurrent=True)
    with torch.no_grad():
        net.layers[0].cell.decay.fill_(1.0)
    graph = to_nir(net, dt=2e-4)
    node = graph.nodes["layer0.neurons"]
    assert isinstance(node, nir.IF) and np.allclose(node.r, 1 / 2e-4)
    assert_same_network(net, from_nir(graph), torch.rand(T, B, N_IN, dtype=torch.float64))


def test_gain_leak_and_recurrent_bias_are_folded_exactly() -> None:
    """A graph with R dt/τ != 1, v_leak != 0 and a recurrent Affine against its Euler steps."""
    rng, dt, n = np.random.default_rng(0), 1e-3, 6
    W, H = rng.normal(0, 1.5, (n, N_IN)), rng.normal(0, 0.5, (n, n))
    b, b_rec, W_out = rng.normal(0, 0.2, n), rng.normal(0, 0.2, n), rng.normal(0, 1, (2, n))
    tau, r = rng.uniform(2e-3, 2e-2, n), rng.uniform(1, 20, n)
    v_leak, thr = rng.uniform(-0.5, 0.5, n), rng.uniform(0.3, 1.0, n)
    nodes = {
        "in": nir.Input(np.array([N_IN])), "syn": nir.Affine(W, b),
        "lif": nir.LIF(tau=tau, r=r, v_leak=v_leak, v_threshold=thr, v_reset=np.zeros(n)),
        "rec": nir.Affine(H, b_rec), "out_w": nir.Linear(W_out), "out": nir.Output(np.array([2])),
    }  # fmt: skip
    edges = [("in", "syn"), ("syn", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out_w"),
             ("out_w", "out")]  # fmt: skip
    net = from_nir(nir.NIRGraph(nodes, edges), dt=dt)
    xs = rng.uniform(0, 1, (T, B, N_IN))
    v, z, ys = np.zeros((B, n)), np.zeros((B, n)), []
    for x in xs:  # τ dv/dt = v_leak - v + R (W x + b + H z + b_rec), Euler, reset to 0
        v = v * (1 - z)
        v = v + dt / tau * (v_leak - v + r * (x @ W.T + b + z @ H.T + b_rec))
        z = (v > thr).astype(float)
        ys.append(z @ W_out.T)
    with torch.no_grad():
        out = net(torch.from_numpy(xs)).numpy()
    np.testing.assert_allclose(out, np.stack(ys), rtol=1e-9, atol=1e-12)
    assert np.mean([y.any() for y in ys]) > 0.05 and net.layers[0].b is not None


# -- snnTorch -------------------------------------------------------------------------------
def _run_torch(module: torch.nn.Module, xs: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The outputs and every spiking layer's spikes of an imported graph over ``xs``."""
    snn = pytest.importorskip("snntorch", reason="the snnTorch comparison needs snntorch")
    pytest.importorskip("nirtorch", reason="snnTorch's NIR import needs nirtorch")
    spikes: dict[str, list[Tensor]] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, k=name: spikes.setdefault(k, []).append(out))
        for name, m in module.named_modules()
        if isinstance(m, snn.SpikingNeuron)
    ]
    state, ys = None, []
    with torch.no_grad():
        for x in xs:
            y, state = module(x, state)
            ys.append(y)
    for h in hooks:
        h.remove()
    return torch.stack(ys), [torch.stack(v) for v in spikes.values()]


def _assert_runs_like(net: Network, module: torch.nn.Module) -> None:
    xs = torch.rand(T, B, N_IN)
    ours = net.unroll(xs, per_layer=True)[0]
    ys, spikes = _run_torch(module, xs)
    assert len(spikes) == len(ours) - 1
    for a, b in zip(ours, spikes):
        assert torch.equal(a, b) and 0.05 < a.mean() < 0.95
    torch.testing.assert_close(ys, ours[-1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("hidden", [(7,), (7, 6)], ids=["1-hidden", "2-hidden"])
def test_snntorch_import_runs_the_exported_network(hidden: tuple[int, ...], tmp_path: Path) -> None:
    pytest.importorskip("snntorch", reason="the snnTorch comparison needs snntorch")
    pytest.importorskip("nirtorch", reason="snnTorch's NIR import needs nirtorch")
    from snntorch.import_nir import import_from_nir

    net = dyadic_lif_net(hidden, recurrent=False)
    nir.write(tmp_path / "net.nir", to_nir(net))
    _assert_runs_like(net, import_from_nir(nir.read(tmp_path / "net.nir")))


def _snntorch_neurons() -> dict[type, Any]:
    from snntorch.import_nir import _nir_to_snntorch_module

    kinds = (nir.Affine, nir.Linear, nir.LIF)
    return {k: lambda n: _nir_to_snntorch_module(n, init_hidden=True) for k in kinds}


@pytest.mark.parametrize("hidden", [(7,), (7, 6)], ids=["1-hidden", "2-hidden"])
def test_recurrent_graph_runs_in_nirtorch_with_snntorch_neurons(hidden: tuple[int, ...]) -> None:
    pytest.importorskip("snntorch", reason="the snnTorch comparison needs snntorch")
    pytest.importorskip("nirtorch", reason="snnTorch's NIR import needs nirtorch")
    import nirtorch

    net = dyadic_lif_net(hidden, recurrent=True)
    _assert_runs_like(net, nirtorch.nir_to_torch(to_nir(net), _snntorch_neurons()))


@pytest.mark.xfail(
    strict=True,
    reason="snnTorch 1.0's import_from_nir (nirtorch 2.6) feeds an RLeaky layer's input through "
    "its recurrent weights, for its own exports too (see the module docstring)",
)
def test_snntorch_import_of_a_recurrent_graph() -> None:
    pytest.importorskip("snntorch", reason="the snnTorch comparison needs snntorch")
    pytest.importorskip("nirtorch", reason="snnTorch's NIR import needs nirtorch")
    from snntorch.import_nir import import_from_nir

    net = dyadic_lif_net((7,), recurrent=True)
    _assert_runs_like(net, import_from_nir(to_nir(net)))


@pytest.mark.filterwarnings("ignore:nirtorch.extract_nir_graph:DeprecationWarning")
def test_snntorch_export_runs_in_ostl(tmp_path: Path) -> None:
    snn = pytest.importorskip("snntorch", reason="the snnTorch comparison needs snntorch")
    pytest.importorskip("nirtorch", reason="snnTorch's NIR import needs nirtorch")
    import snntorch.utils
    from snntorch.export_nir import export_to_nir

    lif = dict(reset_mechanism="zero", reset_delay=False, init_hidden=True)
    fc1, fc2, fc3 = torch.nn.Linear(N_IN, 7), torch.nn.Linear(7, 6), torch.nn.Linear(6, 3)
    with torch.no_grad():
        fc1.weight.mul_(4), fc2.weight.mul_(3)
    rleaky = snn.RLeaky(beta=0.8, threshold=0.5, linear_features=7, **lif)
    leaky = snn.Leaky(beta=torch.full((6,), 0.9), threshold=torch.full((6,), 0.5), **lif)
    model = torch.nn.Sequential(fc1, rleaky, fc2, leaky, fc3)
    nir.write(tmp_path / "snn.nir", export_to_nir(model, torch.rand(N_IN)))
    snntorch.utils.reset(model)  # the export ran a step
    net = from_nir(tmp_path / "snn.nir")
    assert [type(m).__name__ for m in net.layers] == ["Layer", "Layer", "Readout"]
    assert net.layers[0].recurrent and net.dtype == torch.float32
    hooks = {name: [] for name in ("rleaky", "leaky")}
    rleaky.register_forward_hook(lambda _m, _i, out: hooks["rleaky"].append(out))
    leaky.register_forward_hook(lambda _m, _i, out: hooks["leaky"].append(out))
    xs = torch.rand(T, B, N_IN)
    with torch.no_grad():
        ys = torch.stack([model(x) for x in xs])
    ours = net.unroll(xs, per_layer=True)[0]
    assert torch.equal(ours[0], torch.stack(hooks["rleaky"])) and 0.05 < ours[0].mean() < 0.95
    assert torch.equal(ours[1], torch.stack(hooks["leaky"])) and 0.05 < ours[1].mean() < 0.95
    torch.testing.assert_close(ours[2], ys, rtol=1e-6, atol=1e-6)


# -- refusals -------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["snu", "ssnu", "alif", "rnn", "lstm", "gru", "rf"])
def test_cells_without_a_nir_form_are_refused(cell: str) -> None:
    net = Network([Layer(N_IN, 4, "lif"), Layer(4, 4, cell), Readout(4, 2)])
    name = type(net.layers[1].cell).__name__
    with pytest.raises(UnsupportedError, match=rf"layer 1 has a {name} cell.*supports LIF"):
        to_nir(net)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda layer: setattr(layer.cell, "reset", "subtract"), "no subtractive reset"),
        (lambda layer: layer.cell.decay.fill_(1.5), r"decay α outside \[0, 1\]"),
        (lambda layer: layer.cell.decay[:2].fill_(1.0), "α = 1 \\(IF\\) and others"),
        (lambda layer: setattr(layer, "synapses", lambda name, x: x), "synapses hook"),
    ],
    ids=["subtract", "decay", "mixed-if", "hook"],
)
def test_lif_layers_without_a_faithful_nir_form_are_refused(change: Any, message: str) -> None:
    net = lif_net((6,), recurrent=False)
    with torch.no_grad():
        change(net.layers[0])
    with pytest.raises(UnsupportedError, match=message):
        to_nir(net)


def _graph(**changes: Any) -> Any:
    """A small valid graph (Input, Affine, LIF, Affine, Output) with nodes replaced."""
    n = 3
    lif = nir.LIF(tau=np.full(n, 1e-3), r=np.full(n, 10.0), v_leak=np.zeros(n),
                  v_threshold=np.ones(n), v_reset=np.zeros(n))  # fmt: skip
    nodes = {"input": nir.Input(np.array([2])), "w": nir.Affine(np.ones((n, 2)), np.zeros(n)),
             "lif": lif, "out_w": nir.Linear(np.ones((1, n))),
             "output": nir.Output(np.array([1]))}  # fmt: skip
    edges = [("input", "w"), ("w", "lif"), ("lif", "out_w"), ("out_w", "output")]
    nodes.update(changes.pop("nodes", {}))
    edges += changes.pop("edges", [])
    return nir.NIRGraph(nodes, edges, type_check=False)


def test_a_foreign_graph_reads() -> None:
    net = from_nir(_graph())
    assert [type(m).__name__ for m in net.layers] == ["Layer", "Readout"]
    decay = net.layers[0].cell.decay
    torch.testing.assert_close(
        decay, torch.full((3,), 0.9, dtype=torch.float64), rtol=0, atol=1e-15
    )
    assert torch.equal(
        net.layers[0].W, torch.ones(3, 2, dtype=torch.float64)
    )  # R dt/τ = 10 · 1e-4 / 1e-3 = 1


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"nodes": {"lif": nir.CubaLIF(tau_syn=np.ones(3), tau_mem=np.ones(3), r=np.ones(3),
          v_leak=np.zeros(3), v_threshold=np.ones(3))}}, UnsupportedError, "'lif' is a CubaLIF"),
        ({"nodes": {"lif": nir.LI(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3))}},
         UnsupportedError, "'lif' is a LI"),
        ({"nodes": {"lif": nir.LIF(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3),
          v_threshold=np.ones(3), v_reset=np.full(3, 0.5))}}, UnsupportedError, "v_reset != 0"),
        ({"nodes": {"lif": nir.LIF(tau=np.full(3, 1e-5), r=np.ones(3), v_leak=np.zeros(3),
          v_threshold=np.ones(3))}}, UnsupportedError, "shorter than the time step"),
        ({"nodes": {"w2": nir.Linear(np.ones((1, 3)))}, "edges": [("lif", "w2"), ("w2", "output")]},
         UnsupportedError, "branches or merges at node 'lif'"),
        ({"nodes": {"x": nir.Input(np.array([2]))}, "edges": [("x", "w")]},
         UnsupportedError, "2 Input nodes"),
        ({"nodes": {"w": nir.Affine(np.ones((3, 4)), np.zeros(3))}}, ShapeError,
         "takes 4 inputs, but 2 arrive"),
    ],
    ids=["cubalif", "li", "v_reset", "tau", "branch", "inputs", "shape"],
)  # fmt: skip
def test_graphs_ostl_cannot_run_are_refused(
    changes: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        from_nir(_graph(**changes))


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="no such NIR file"):
        from_nir(tmp_path / "none.nir")
    (tmp_path / "text.nir").write_text("not HDF5")
    with pytest.raises(OptionError, match="text.nir: not a readable NIR file"):
        from_nir(tmp_path / "text.nir")
    with pytest.raises(OptionError, match="nir.NIRGraph or a file path"):
        from_nir(42)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="dt must be a positive number"):
        to_nir(lif_net((3,), recurrent=False), dt=0)
    with pytest.raises(TypeError, match="expects an ostl.Network"):
        to_nir(Layer(3, 3, "lif"))  # type: ignore[arg-type]
