"""The reading half of :mod:`ostl.interop.nir`: a NIR graph to an ostl network.

The conventions (which graphs, the time step, the folding of gains and leaks) are documented
once, in :mod:`ostl.interop.nir`; :func:`network_of_graph` is :func:`~ostl.interop.nir.from_nir`
after its arguments are checked. Everything here works on float64 NumPy arrays until the
network is built in the dtype asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..cells import LIF
from ..errors import OptionError, ShapeError, UnsupportedError
from ..layer import Layer, Network, Readout
from ..surrogate import SURROGATES

if TYPE_CHECKING:
    import nir

__all__ = ["SUPPORTED", "nir_package", "network_of_graph"]

#: What :func:`network_of_graph` reads, for the errors that refuse the rest.
SUPPORTED = (
    "ostl reads chains of Affine/Linear synapses and LIF/IF neurons (reset to 0, optionally "
    "with a recurrent Affine/Linear loop) between one Input and one Output"
)


def nir_package() -> ModuleType:
    """The ``nir`` package, or a one-line error saying how to install it."""
    try:
        import nir
    except ImportError:
        from ..tasks.data import MissingDependencyError

        raise MissingDependencyError(
            "NIR export and import need the package 'nir', which is not installed: "
            "pip install 'ostl[nir]'"
        ) from None
    return nir


_PASS = object()  # a subgraph's own Input/Output node, contracted away by _flatten


def _flatten(graph: nir.NIRGraph, where: str = "") -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The nodes and edges of ``graph`` with every nested subgraph inlined (``sub.node``)."""
    nir = nir_package()
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    entry: dict[str, str] = {}  # subgraph name -> its inner Input / Output node
    exit_: dict[str, str] = {}
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.NIRGraph):
            nodes[name] = node
            continue
        inner, inner_edges = _flatten(node, f"{where}{name}.")
        ins = [k for k, v in inner.items() if isinstance(v, nir.Input)]
        outs = [k for k, v in inner.items() if isinstance(v, nir.Output)]
        if len(ins) != 1 or len(outs) != 1:
            raise UnsupportedError(
                f"NIR subgraph {where}{name!r} has {len(ins)} Input and {len(outs)} Output "
                f"nodes; {SUPPORTED}"
            )
        for k, v in inner.items():
            nodes[f"{name}.{k}"] = _PASS if k in (ins[0], outs[0]) else v
        edges += [(f"{name}.{a}", f"{name}.{b}") for a, b in inner_edges]
        entry[name], exit_[name] = f"{name}.{ins[0]}", f"{name}.{outs[0]}"
    edges += [(exit_.get(a, a), entry.get(b, b)) for a, b in graph.edges]
    for p in [k for k, v in nodes.items() if v is _PASS]:
        into = [a for a, b in edges if b == p]
        out_of = [b for a, b in edges if a == p]
        edges = [e for e in edges if p not in e] + [(a, c) for a in into for c in out_of]
        del nodes[p]
    return nodes, edges


def _chain(nodes: dict[str, Any], edges: list[tuple[str, str]]) -> tuple[list[str], dict[str, str]]:
    """The nodes from the Input to the Output in order, and the recurrent synapse (if any)
    of each neuron node; anything else than such a chain is refused."""
    nir = nir_package()
    kinds = (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.LIF, nir.IF)
    for name, node in nodes.items():
        if not isinstance(node, kinds):
            raise UnsupportedError(
                f"NIR node {name!r} is a {type(node).__name__}, which ostl cannot run: {SUPPORTED}"
            )
    neuron, synapse = (nir.LIF, nir.IF), (nir.Affine, nir.Linear)
    recurrent: dict[str, str] = {}  # neuron node -> its recurrent synapse node
    for s, node in nodes.items():
        ins, outs = [a for a, b in edges if b == s], [b for a, b in edges if a == s]
        loop = isinstance(node, synapse) and ins == outs and len(ins) == 1
        if loop and isinstance(nodes[ins[0]], neuron) and ins[0] not in recurrent:
            recurrent[ins[0]] = s
    rest = [(a, b) for a, b in edges if a not in recurrent.values() and b not in recurrent.values()]
    for kind in (nir.Input, nir.Output):
        found = [k for k, v in nodes.items() if isinstance(v, kind)]
        if len(found) != 1:
            raise UnsupportedError(
                f"the NIR graph has {len(found)} {kind.__name__} nodes; {SUPPORTED}"
            )
    order = [next(k for k, v in nodes.items() if isinstance(v, nir.Input))]
    while not isinstance(nodes[order[-1]], nir.Output):
        outs = [b for a, b in rest if a == order[-1]]
        if len(outs) != 1 or len([a for a, b in rest if b == outs[0]]) != 1 or outs[0] in order:
            what = "ends" if not outs else "branches or merges"
            raise UnsupportedError(f"the NIR graph {what} at node {order[-1]!r}: {SUPPORTED}")
        order.append(outs[0])
    unused = sorted(set(nodes) - set(order) - set(recurrent.values()))
    if unused:
        raise UnsupportedError(
            f"NIR nodes {unused} are not on the path from Input to Output; {SUPPORTED}"
        )
    return order, recurrent


def _field(node: Any, key: str, name: str, n: int) -> np.ndarray:
    """One per-neuron field of a neuron node, as float64 of shape (n,), finite."""
    value = np.asarray(getattr(node, key), dtype=np.float64)
    if value.shape != (n,):
        raise ShapeError(
            f"NIR node {name!r}: {key} has shape {value.shape}, expected ({n},) (one value per "
            "neuron of the synapses before it)"
        )
    if not np.all(np.isfinite(value)):
        raise UnsupportedError(f"NIR node {name!r}: {key} holds non-finite values")
    return value


def _dynamics(node: Any, name: str, n: int, dt: float) -> tuple[np.ndarray, ...]:
    """(α, ϑ, gain, drive) of a LIF/IF node, float64 (n,): its Euler step of ``dt`` is
    ``v_t = α v_{t-1} (1 - z_{t-1}) + gain · I_t + drive``."""
    nir = nir_package()
    if np.any(_field(node, "v_reset", name, n) != 0):
        raise UnsupportedError(
            f"NIR node {name!r} resets to v_reset != 0; ostl's LIF resets to 0 (hard reset)"
        )
    threshold, r = _field(node, "v_threshold", name, n), _field(node, "r", name, n)
    # A unit gain is taken as exactly 1 when R was written as 1/dt (IF) or τ/dt (LIF: ostl's
    # and snnTorch's choice): R dt/τ computed back may differ from 1 in the last bit.
    written_r = np.asarray(node.r)
    if isinstance(node, nir.IF):
        unit = np.array_equal(written_r, np.full_like(written_r, 1 / dt))
        return np.ones(n), threshold, np.ones(n) if unit else r * dt, np.zeros(n)
    tau = _field(node, "tau", name, n)
    if np.any(tau < dt):
        raise UnsupportedError(
            f"NIR node {name!r}: τ = {tau.min()} is shorter than the time step dt = {dt}; "
            "ostl's step is the Euler step α = 1 - dt/τ, which needs τ ≥ dt (pass the dt the "
            "graph was made for)"
        )
    alpha = 1 - dt / tau
    exact = node.metadata.get("ostl_decay") if isinstance(node.metadata, dict) else None
    if isinstance(exact, np.ndarray) and exact.shape == (n,):
        with np.errstate(divide="ignore"):  # ostl wrote this node at this dt: its exact α
            written_here = np.array_equal(dt / (1 - exact), node.tau)
        alpha = exact.astype(np.float64) if written_here else alpha
    unit = np.array_equal(written_r, np.asarray(node.tau) / dt)
    gain = np.ones(n) if unit else r * dt / tau
    return alpha, threshold, gain, dt / tau * _field(node, "v_leak", name, n)


def _weights(node: Any, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(W, b) of an Affine/Linear node (b None for Linear), float64."""
    W = np.asarray(node.weight, dtype=np.float64)
    if W.ndim != 2:
        raise UnsupportedError(
            f"NIR node {name!r}: weight of shape {W.shape}; ostl's synapses are matrices "
            "(n_out, n_in) over flat signals"
        )
    bias = getattr(node, "bias", None)
    b = None if bias is None else np.asarray(bias, dtype=np.float64)
    if b is not None and b.shape != (W.shape[0],):
        raise ShapeError(f"NIR node {name!r}: bias of shape {b.shape}, expected ({W.shape[0]},)")
    return W, b


def _cell(node: Any, n: int) -> LIF:
    """A LIF cell of n neurons with the training options ostl stored in ``node`` (if any)."""
    raw = node.metadata.get("ostl") if isinstance(node.metadata, dict) else None
    try:
        opts = json.loads(raw) if isinstance(raw, str | bytes) else {}
        surrogate = dict(opts.get("surrogate", {}))
        kind = SURROGATES.get(surrogate.pop("name", None))  # unknown: the default, no options
        return LIF(
            n,
            surrogate=kind(**surrogate) if kind is not None else "fast_sigmoid",
            trainable=opts.get("trainable", ()),
            detach_reset=bool(opts.get("detach_reset", False)),
        )
    except (ValueError, TypeError, AttributeError) as e:
        raise OptionError(f"NIR neuron node: its 'ostl' metadata cannot be read ({e})") from None


@dataclass
class _Spec:
    """One ostl layer read from the graph, its arrays in float64 until the network is built:
    a Readout without ``cell``, else a LIF Layer with its per-neuron ``params``."""

    W: np.ndarray
    b: np.ndarray | None
    cell: LIF | None = None
    H: np.ndarray | None = None
    params: dict[str, np.ndarray] = field(default_factory=dict)


def _layers(
    nodes: dict[str, Any], order: list[str], recurrent: dict[str, str], dt: float
) -> list[_Spec]:
    nir = nir_package()
    specs: list[_Spec] = []
    shape = tuple(np.asarray(nodes[order[0]].input_type["input"]).reshape(-1))
    if len(shape) != 1:
        raise UnsupportedError(
            f"the NIR graph's input has shape {shape}; ostl's inputs are flat vectors (n_in,)"
        )
    n = int(shape[0])
    pending: tuple[np.ndarray, np.ndarray | None] | None = None
    for name in order[1:]:
        node = nodes[name]
        if isinstance(node, nir.Affine | nir.Linear):
            if pending is not None:  # two synapses in a row: the first is a readout
                specs.append(_Spec(*pending))
            W, b = _weights(node, name)
            if W.shape[1] != n:
                raise ShapeError(f"NIR node {name!r} takes {W.shape[1]} inputs, but {n} arrive")
            pending, n = (W, b), W.shape[0]
            continue
        if isinstance(node, nir.Output):
            if pending is not None:
                specs.append(_Spec(*pending))
            break
        # a neuron node: the synapses before it (none: identity), its recurrent loop, folded
        W, b = pending if pending is not None else (np.eye(n), None)
        pending = None
        alpha, threshold, gain, drive = _dynamics(node, name, n, dt)
        spec = _Spec(gain[:, None] * W, None, _cell(node, n))
        if name in recurrent:
            H, b_rec = _weights(nodes[recurrent[name]], recurrent[name])
            if H.shape != (n, n):
                raise ShapeError(
                    f"NIR node {recurrent[name]!r}: recurrent weight of shape {H.shape}, "
                    f"expected ({n}, {n})"
                )
            spec.H = gain[:, None] * H
            b = b_rec if b is None else b if b_rec is None else b + b_rec
        if b is not None or np.any(drive != 0):
            spec.b = gain * (0 if b is None else b) + drive
        spec.params = {"decay": alpha, "threshold": threshold}
        specs.append(spec)
    return specs


def _build(specs: list[_Spec], dtype: torch.dtype) -> Network:
    layers: list[Layer | Readout] = []
    for s in specs:
        n_out, n_in = s.W.shape
        if s.cell is None:
            layers.append(Readout(n_in, n_out, bias=s.b is not None))
        else:
            layers.append(
                Layer(n_in, n_out, s.cell, recurrent=s.H is not None, bias=s.b is not None)
            )
    net = Network(layers).to(dtype)
    with torch.no_grad():
        for s, layer in zip(specs, net.typed_layers):
            arrays = {"W": s.W, "H": s.H, "b": s.b}
            for key, value in arrays.items():
                if value is not None:
                    getattr(layer, key).copy_(torch.from_numpy(value))
            if isinstance(layer, Layer):
                for key, value in s.params.items():
                    getattr(layer.cell, key).copy_(torch.from_numpy(value))
    return net


def network_of_graph(graph: nir.NIRGraph, dt: float, dtype: torch.dtype | None) -> Network:
    """The network that runs ``graph`` with time step ``dt`` (checked by the caller)."""
    nodes, edges = _flatten(graph)
    order, recurrent = _chain(nodes, edges)
    if dtype is None:  # float64 if every weight is
        weights = [np.asarray(v.weight) for v in nodes.values() if hasattr(v, "weight")]
        f64 = bool(weights) and all(w.dtype == np.float64 for w in weights)
        dtype = torch.float64 if f64 else torch.float32
    specs = _layers(nodes, order, recurrent, dt)
    if not specs:
        raise UnsupportedError(f"the NIR graph has no synapses or neurons; {SUPPORTED}")
    return _build(specs, dtype)
