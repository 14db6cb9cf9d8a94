"""Spiking networks to and from NIR, the Neuromorphic Intermediate Representation.

NIR (https://neuroir.org) describes a network as a graph of continuous-time primitives that
simulators (snnTorch, Norse, Sinabs, Rockpool, Lava) and neuromorphic chips read.
:func:`to_nir` writes an ostl :class:`~ostl.Network` of LIF layers as such a graph and
:func:`from_nir` reads one back; ``nir.write(path, graph)`` and ``nir.read(path)`` store it in
a file, and the command ``ostl export-nir RUN_DIR OUT.nir`` exports a trained run. Both
functions need the ``nir`` package (``pip install 'ostl[nir]'``); without it they raise
:class:`~ostl.tasks.MissingDependencyError`, which says so. ``import ostl`` never imports it.

**What is exported.** Layer ``i`` of ``net.layers`` becomes these nodes, between one ``input``
and one ``output`` node:

| ostl | NIR node |
|---|---|
| ``Layer``: synapses ``W x + b`` | ``layer<i>.in``: ``Affine(W, b)`` (``Linear(W)`` without b) |
| its LIF cell, hard reset | ``layer<i>.neurons``: ``LIF`` (``IF`` when every α is 1) |
| its recurrent weights ``H`` | ``layer<i>.rec``: ``Linear(H)``, a loop neurons → rec → neurons |
| ``Readout``: ``W x + b`` | ``layer<i>.readout``: ``Affine(W, b)`` (``Linear(W)`` without b) |

The readout stays a memoryless affine map, as in ostl (no leaky-integrator node). Other cells
(SNU, sSNU, ALIF, RNN, LSTM, GRU, resonate-and-fire) and the subtractive reset have no NIR
primitive with the same dynamics: :func:`to_nir` refuses them with
:class:`~ostl.UnsupportedError`, as it refuses a layer whose products go through a
``synapses`` hook (:mod:`ostl.hardware`): a reader would use the plain weights instead.

**The time step.** NIR's LIF is the ODE ``τ dv/dt = (v_leak - v) + R I``, with a spike
``z = Θ(v - v_threshold)`` and a reset to ``v_reset``. ostl's LIF step with the hard reset,
``v_t = α v_{t-1} (1 - z_{t-1}) + a_t`` (:mod:`ostl.cells.lif`), is the forward-Euler step of
length ``dt`` of that ODE with::

    τ = dt / (1 - α)    R = τ / dt    v_leak = 0    v_threshold = ϑ    v_reset = 0

(``R dt / τ = 1``: one step adds the synaptic current ``a_t`` itself). An ``IF`` neuron,
``dv/dt = R I``, is the case α = 1, with ``R = 1 / dt``. NIR leaves the time step to the
reader: the graph reproduces ostl exactly in a simulator that takes Euler steps of the same
``dt``. The default, :data:`DEFAULT_DT` = 1e-4 s, is the step snnTorch 1.0 reads NIR with
(its β = 1 - dt/τ); pass the step of the tool you deploy to. A reader that integrates the ODE
exactly decays by ``exp(-dt/τ)`` per step instead of α: close, not equal, dynamics.

**Metadata.** The graph's metadata holds ``dt`` (seconds) and ``generator``. Each neuron
node's holds ``ostl`` (JSON: the reset, the surrogate, the trained per-neuron parameters and
``detach_reset``, which matter for training only) and ``ostl_decay``, the exact α (``1 -
dt/τ`` may differ from it in the last bit). :func:`from_nir` uses them when they agree with the
NIR fields, and ostl's defaults otherwise.

**Reading.** :func:`from_nir` accepts what :func:`to_nir` writes and graphs of other tools
built from the same primitives, such as snnTorch's ``export_to_nir`` of ``nn.Linear`` with
``Leaky`` / ``RLeaky`` layers: a chain ``input → Affine | Linear → LIF | IF → ... → output``,
a recurrent ``Affine`` / ``Linear`` loop on a neuron node, nested subgraphs. A neuron node's
input gain ``R dt / τ`` other than 1 is folded into its synapses' weights and bias and its
``v_leak`` into the bias (exact for the Euler step); a recurrent ``Affine``'s bias joins the
layer's bias. ``v_reset`` must be 0 (the hard reset) and ``τ ≥ dt`` (α ≥ 0). Any other node
(``CubaLIF``, ``LI``, convolutions, ...), a branch or a merge raises
:class:`~ostl.UnsupportedError` naming the node.

**snnTorch 1.0.** ``snntorch.import_nir.import_from_nir`` runs the exported feed-forward
networks with ostl's spikes and outputs. It recognises the recurrent loop as an ``RLeaky``
layer, but then (with nirtorch 2.6) feeds the layer's input through the recurrent weights, for
the graphs of its own ``export_to_nir`` too; ``nirtorch.nir_to_torch`` with snnTorch's neuron
modules runs the recurrent graphs as ostl does. Its reader takes one threshold per layer
(ostl's thresholds are one value per layer unless they are trained), and it does not run
``IF`` nodes as integrators (it asks for R = 1 and builds a leaky neuron with β = 0.9), so
layers with α = 1 do not carry over.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._version import __version__
from ..cells import LIF
from ..errors import LayerTypeError, OptionError, UnsupportedError
from ..layer import Layer, Network, Readout
from ._nir_reader import network_of_graph, nir_package

if TYPE_CHECKING:
    import nir

__all__ = ["DEFAULT_DT", "to_nir", "from_nir"]

#: The time step (seconds) that :func:`to_nir` and :func:`from_nir` assume unless told: the
#: one snnTorch 1.0 uses when it reads NIR.
DEFAULT_DT = 1e-4


def _check_dt(dt: object) -> float:
    if isinstance(dt, bool) or not isinstance(dt, int | float) or not math.isfinite(dt) or dt <= 0:
        raise OptionError(f"dt must be a positive number of seconds, got {dt!r}")
    return float(dt)


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


# -- ostl -> NIR ---------------------------------------------------------------------------
def _synapse(W: torch.Tensor, b: torch.Tensor | None) -> nir.NIRNode:
    nir = nir_package()
    return nir.Linear(weight=_array(W)) if b is None else nir.Affine(_array(W), _array(b))


def _cell_options(cell: LIF) -> str:
    """What NIR has no field for: training options of the cell, as JSON."""
    s = cell.surrogate
    options: dict[str, Any] = asdict(s) if is_dataclass(s) and not isinstance(s, type) else {}
    return json.dumps(
        {
            "cell": "lif",
            "reset": cell.reset,
            "surrogate": {"name": s.name, **options},
            "trainable": list(cell.trainable_names),
            "detach_reset": cell.detach_reset,
        }
    )


def _neurons(layer: Layer, i: int, dt: float) -> nir.NIRNode:
    """The LIF (or IF) node of the LIF layer ``i`` (see the module docstring)."""
    nir, cell = nir_package(), layer.cell
    if type(cell) is not LIF:
        raise UnsupportedError(
            f"layer {i} has a {type(cell).__name__} cell, which has no NIR primitive: NIR "
            "export supports LIF layers (hard reset, as NIR LIF nodes, or IF when the decay "
            "is 1; recurrent weights and biases allowed) and Readouts"
        )
    if cell.reset != "hard":
        raise UnsupportedError(
            f"layer {i}: NIR has no subtractive reset (v - ϑ after a spike; NIR's LIF resets "
            "to v_reset): export a LIF trained with reset='hard'"
        )
    p = cell.neuron_params()
    alpha, threshold = _array(p["decay"]), _array(p["threshold"])
    if not np.all((alpha >= 0) & (alpha <= 1)):
        raise UnsupportedError(
            f"layer {i}: a LIF decay α outside [0, 1] (got {alpha.min()} to {alpha.max()}) "
            "is no leaky neuron: NIR's τ = dt / (1 - α) needs 0 ≤ α ≤ 1"
        )
    meta = {"ostl": _cell_options(cell), "ostl_decay": alpha}
    zero = np.zeros_like(threshold)
    if np.all(alpha == 1):
        r = np.full_like(threshold, 1 / dt)
        return nir.IF(r=r, v_threshold=threshold, v_reset=zero, metadata=meta)
    if np.any(alpha == 1):
        raise UnsupportedError(
            f"layer {i}: some neurons have decay α = 1 (IF) and others α < 1 (LIF); a NIR "
            "node is one or the other"
        )
    tau = dt / (1 - alpha)
    return nir.LIF(
        tau=tau, r=tau / dt, v_leak=zero, v_threshold=threshold, v_reset=zero, metadata=meta
    )


def to_nir(net: Network, dt: float = DEFAULT_DT) -> nir.NIRGraph:
    """The network as a NIR graph (the mapping and the time step: see the module docstring).

    Args:
        net: a :class:`~ostl.Network` of LIF layers (hard reset, with or without recurrent
            weights and biases) and Readouts.
        dt: the time step in seconds that one ostl step stands for; a reader must simulate the
            graph with the same step (default :data:`DEFAULT_DT`, snnTorch's).

    Returns:
        A ``nir.NIRGraph`` (write it with ``nir.write(path, graph)``), its arrays in the
            network's dtype.

    Raises:
        UnsupportedError: a cell other than LIF, a subtractive reset, a decay outside [0, 1],
            or a layer with a ``synapses`` hook.
        MissingDependencyError: the ``nir`` package is not installed.
    """
    nir = nir_package()
    if not isinstance(net, Network):
        raise LayerTypeError(f"to_nir expects an ostl.Network, got {type(net).__name__}")
    dt = _check_dt(dt)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array([net.n_in])})}
    edges: list[tuple[str, str]] = []
    prev, width = "input", len(str(len(net.layers) - 1))  # names sort in layer order
    for i, layer in enumerate(net.typed_layers):
        name = f"layer{i:0{width}d}"
        if layer.synapses is not None:
            raise UnsupportedError(
                f"layer {i} computes its products through a synapses hook (e.g. ostl.hardware); "
                "NIR holds plain weights: remove the hook (layer.synapses = None) to export them"
            )
        if isinstance(layer, Readout):
            nodes[f"{name}.readout"] = _synapse(layer.W, layer.b)
            edges.append((prev, f"{name}.readout"))
            prev = f"{name}.readout"
            continue
        nodes[f"{name}.in"] = _synapse(layer.W, layer.b)
        nodes[f"{name}.neurons"] = _neurons(layer, i, dt)
        edges += [(prev, f"{name}.in"), (f"{name}.in", f"{name}.neurons")]
        if layer.H is not None:
            nodes[f"{name}.rec"] = _synapse(layer.H, None)
            edges += [(f"{name}.neurons", f"{name}.rec"), (f"{name}.rec", f"{name}.neurons")]
        prev = f"{name}.neurons"
    nodes["output"] = nir.Output(output_type={"output": np.array([net.n_out])})
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes, edges, metadata={"dt": dt, "generator": f"ostl {__version__}"})


def from_nir(
    graph: nir.NIRGraph | str | Path, *, dt: float | None = None, dtype: torch.dtype | None = None
) -> Network:
    """An ostl network that runs a NIR graph (what it accepts: see the module docstring).

    Args:
        graph: a ``nir.NIRGraph``, or the path of a NIR file (read with ``nir.read``).
        dt: the time step in seconds of one ostl step (default: the graph's ``dt`` metadata,
            which :func:`to_nir` writes, else :data:`DEFAULT_DT`).
        dtype: the network's dtype (default: float64 if the graph's weights are float64,
            else float32).

    Returns:
        A :class:`~ostl.Network` of LIF layers (hard reset) and Readouts: for a graph that
            :func:`to_nir` wrote at the same ``dt``, the network it came from, with equal
            weights and per-neuron parameters.

    Raises:
        UnsupportedError: a node ostl cannot run (named), a graph that is not a chain,
            a reset other than to 0, or a τ shorter than ``dt``.
        MissingDependencyError: the ``nir`` package is not installed.
    """
    nir = nir_package()
    if isinstance(graph, str | Path):
        if not Path(graph).is_file():
            raise OptionError(f"{graph}: no such NIR file")
        try:
            graph = nir.read(graph)
        except (OSError, KeyError, ValueError, TypeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise OptionError(f"{graph}: not a readable NIR file ({first})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise OptionError(
            f"from_nir expects a nir.NIRGraph or a file path, got {type(graph).__name__}"
        )
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    if dt is None:
        try:
            dt = float(meta.get("dt", DEFAULT_DT))
        except (TypeError, ValueError):
            raise OptionError(f"the NIR graph's dt metadata is no number: {meta['dt']!r}") from None
    dt = _check_dt(dt)
    if dtype is not None and dtype not in (torch.float32, torch.float64):
        raise OptionError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return network_of_graph(graph, dt, dtype)
