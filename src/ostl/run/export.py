"""``ostl export-nir RUN_DIR OUT.nir``: a trained run's network as a NIR file.

The command loads the run's model (:func:`~ostl.run.model.load`, ``--which best|last``),
converts it with :func:`ostl.interop.nir.to_nir` (``--dt``: the time step, in seconds, that one
step of the network stands for) and writes it with ``nir.write``, atomically: a failed export
leaves no partial file. Only LIF networks (hard reset) have a NIR form; train one with ``ostl
train --cell lif``. Errors (not a run folder, a cell NIR cannot express, no ``nir`` package,
an unwritable OUT) are reported by :mod:`.cli` as one line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import OptionError, UnsupportedError
from ..layer import Layer, Network

__all__ = ["cmd_export_nir", "describe"]


def describe(net: Network) -> str:
    """One line for the layers of ``net``, e.g. ``64 → LIF 8 (recurrent) → readout 10``."""
    parts = [str(net.n_in)]
    for layer in net.typed_layers:
        if isinstance(layer, Layer):
            rec = " (recurrent)" if layer.recurrent else ""
            parts.append(f"{type(layer.cell).__name__} {layer.n_out}{rec}")
        else:
            parts.append(f"readout {layer.n_out}")
    return " → ".join(parts)


def _stateful(net: Network) -> list[Layer]:
    return [layer for layer in net.typed_layers if isinstance(layer, Layer)]


def cmd_export_nir(args: argparse.Namespace) -> int:
    """Write the NIR file ``args.out`` of the run ``args.run``; print what was written."""
    from ..interop._nir_reader import nir_package
    from ..interop.nir import to_nir
    from .model import load

    nir = nir_package()  # first: a missing package is said before the run is read
    out = Path(args.out)
    if out.is_dir():
        raise OptionError(f"{out} is a folder: name the NIR file to write, e.g. {out}/model.nir")
    if not out.parent.is_dir():
        raise OptionError(f"{out.parent}: no such folder to write {out.name} in")
    net, _ = load(args.run, args.which)
    other = sorted({type(layer.cell).__name__ for layer in _stateful(net)} - {"LIF"})
    if other:
        raise UnsupportedError(
            f"{args.run} holds a network of {', '.join(other)} cells, which has no NIR form: "
            "NIR export supports LIF networks (train one with --cell lif)"
        )
    try:
        graph = to_nir(net, dt=args.dt)
    except UnsupportedError as e:
        raise UnsupportedError(f"{args.run}: {e}") from None
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        nir.write(tmp, graph)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {out}: {describe(net)}, NIR {nir.version}, time step dt = {args.dt} s")
    return 0
