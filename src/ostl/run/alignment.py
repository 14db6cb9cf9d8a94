"""Alignment of every rule's gradient with BPTT's: ``python -m ostl.run.alignment``.

For every rule × cell × network shape (1 or 2 stateful layers, without or with recurrent H, a
linear Readout on top) it computes the gradient of one sequence's loss with
:func:`ostl.gradients`, weights fixed, in float64 with fixed seeds, and reports its cosine
similarity and relative error ‖g - g_BPTT‖ / ‖g_BPTT‖ to BPTT's. Both are taken over the
parameters of the *stateful* layers: the Readout's gradient is exact for every rule here and
would mask the differences. The table is written to ``docs/alignment.md`` with the command, the
machine and the time it took::

    python -m ostl.run.alignment                      # every cell and rule, about a minute
    python -m ostl.run.alignment --cells lif rnn --out /tmp/a.md
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..api import gradients
from ..cells import CELLS
from ..layer import Layer, Network, Readout
from ..rules import BPTT, DFA, OSTL, OSTTP, RTRL, EProp, Rule, SnAp
from .sections import describe_machine

__all__ = ["RULE_SET", "SETTINGS", "Entry", "Setting", "Result", "align", "render", "main"]


@dataclass(frozen=True)
class Entry:
    """One row of the report: a label, the rule, and whether it runs on the network's twin
    whose LIF/ALIF reset is not differentiated (``detach_reset=True``, e-prop's convention)."""

    label: str
    make: Callable[[], Rule]
    detach_reset: bool = False


#: The rules in the report: a table, because its rows are rules *with options* (variants) and
#: labels; tests/run/test_alignment.py fails when a registered rule (``ostl.RULES``) has no row.
RULE_SET: list[Entry] = [
    Entry("RTRL", RTRL),
    Entry("OSTL exact", lambda: OSTL(recurrence="exact")),
    Entry("OSTL diagonal", lambda: OSTL(recurrence="diagonal")),
    Entry("OSTL rnd", lambda: OSTL(feedback="random")),
    Entry("OSTTP", OSTTP),
    Entry("e-prop", EProp, detach_reset=True),
    Entry("e-prop rnd", lambda: EProp(feedback="random"), detach_reset=True),
    Entry("SnAp-1", SnAp),
    Entry("DFA", DFA),
    Entry("TBPTT k=5", lambda: BPTT(truncation=5)),
]

#: Spiking cells (``Cell.spiking``, from the registry): their input weights are scaled up so
#: that they fire (see ``_network``).
SPIKING = frozenset(name for name, cls in CELLS.items() if cls.spiking)
T, BATCH, N_IN, HIDDEN, N_OUT = 30, 4, 3, 8, 2
DTYPE = torch.float64


@dataclass(frozen=True)
class Setting:
    """A network shape: ``depth`` stateful layers of HIDDEN neurons, with or without H."""

    depth: int
    recurrent: bool

    @property
    def title(self) -> str:
        h = "with H" if self.recurrent else "without H"
        sizes = " → ".join([str(N_IN)] + [str(HIDDEN)] * self.depth + [f"{N_OUT} (Readout)"])
        return f"{self.depth} stateful layer{'s' if self.depth > 1 else ''}, {h}: {sizes}"


SETTINGS = [Setting(d, r) for d in (1, 2) for r in (False, True)]


@dataclass(frozen=True)
class Result:
    setting: Setting
    cell: str
    rule: str
    cosine: float
    relative_error: float


def _network(cell: str, setting: Setting, seed: int = 0, detach_reset: bool = False) -> Network:
    """The network of a setting; ``detach_reset`` applies to the cells that have that option.

    With the same seed the weights are the same with and without ``detach_reset`` (the option
    changes no parameter), so the two networks have the same forward pass.
    """
    torch.manual_seed(seed)
    sizes = [N_IN] + [HIDDEN] * setting.depth
    kw = {"detach_reset": True} if detach_reset and _has_option(cell, "detach_reset") else {}
    layers: list[Layer | Readout] = [
        Layer(a, b, cell, recurrent=setting.recurrent, **kw) for a, b in zip(sizes, sizes[1:])
    ]
    layers.append(Readout(HIDDEN, N_OUT))
    net = Network(layers).to(DTYPE)
    gain = 3.0 if cell in SPIKING else 1.0  # so that spiking layers fire from the start
    with torch.no_grad():
        for layer in net.typed_layers[:-1]:
            layer.W.mul_(gain)
    return net


def _has_option(cell: str, option: str) -> bool:
    return option in inspect.signature(CELLS[cell]).parameters


def _data(seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(T, BATCH, N_IN, generator=g, dtype=DTYPE) * 2
    ts = torch.randn(T, BATCH, N_OUT, generator=g, dtype=DTYPE)
    return xs, ts


def _mse(y: Tensor, target: Tensor) -> Tensor:
    return ((y - target) ** 2).mean()


def _flat(grads: dict[str, Tensor], names: list[str]) -> Tensor:
    return torch.cat([grads[n].flatten() for n in names])


def align(
    cells: Sequence[str] | None = None,
    rules: Sequence[str] | None = None,
    settings: Sequence[Setting] = tuple(SETTINGS),
) -> list[Result]:
    """Cosine and relative error to BPTT for every (setting, cell, rule); see the module doc."""
    cells = list(CELLS) if cells is None else list(cells)
    chosen = [e for e in RULE_SET if rules is None or e.label in rules]
    xs, ts = _data()
    out = []
    for setting in settings:
        for cell in cells:
            nets = {False: _network(cell, setting)}
            if any(e.detach_reset for e in chosen):
                nets[True] = _network(cell, setting, detach_reset=True)
            readout = f"layers.{setting.depth}."
            names = [n for n, p in nets[False].named_parameters() if not n.startswith(readout)]
            ref = _flat(gradients(nets[False], BPTT(), xs, ts, _mse), names)
            for e in chosen:
                g = _flat(gradients(nets[e.detach_reset], e.make(), xs, ts, _mse), names)
                nr, ng = float(ref.norm()), float(g.norm())
                if nr == 0 or ng == 0:  # a silent network: nothing to compare
                    cos = rel = math.nan
                else:
                    cos = float(g @ ref) / (ng * nr)
                    rel = float((g - ref).norm()) / nr
                out.append(Result(setting, cell, e.label, cos, rel))
    return out


def _entry(r: Result) -> str:
    if math.isnan(r.cosine):
        return "—"
    return f"{r.cosine:.3f} / {r.relative_error:.1e}"


def machine() -> str:
    """Cores, CPU, torch and Python versions, threads used."""
    return describe_machine()


def render(results: Sequence[Result], command: str, seconds: float) -> str:
    """The markdown report."""
    cells = list(dict.fromkeys(r.cell for r in results))
    rules = list(dict.fromkeys(r.rule for r in results))
    settings = list(dict.fromkeys(r.setting for r in results))
    by_key = {(r.setting, r.cell, r.rule): r for r in results}
    lines = [
        "# Gradient alignment of the online rules with BPTT",
        "",
        f"Generated by `{command}` (do not edit by hand) on {machine()}, in {seconds:.0f} s.",
        "",
        "Each entry is **cosine similarity / relative error** ‖g − g_BPTT‖ / ‖g_BPTT‖ of the "
        "gradient of one sequence's loss, weights fixed, over the parameters of the stateful "
        "layers (the Readout's gradient is exact for every rule here). "
        f"float64; T = {T} steps, batch {BATCH}, {HIDDEN} neurons per stateful layer, inputs "
        f"uniform in [0, 2), Gaussian targets, loss MSE; seeds fixed (network 0, data 1); input "
        "weights of spiking cells × 3 so that they fire; every cell with its default options. "
        "— marks a network whose BPTT gradient is zero.",
        "",
        "Expected (docs/theory.md): RTRL is exact everywhere; OSTL exact is exact with one "
        "stateful layer; OSTL diagonal, e-prop and SnAp-1 are exact with one stateful layer "
        "without H; the rest are approximations. The e-prop rows follow the paper: the LIF/ALIF "
        "reset is not differentiated (`detach_reset=True`, same weights and forward pass), "
        "compared with BPTT of the network whose reset is (the default); on the other cells "
        "e-prop equals OSTL diagonal (rnd). The rules with fixed random matrices (OSTL rnd, "
        "e-prop rnd, OSTTP, DFA) are not gradient estimates at initialisation: their updates "
        "come to align with the gradient during learning (feedback alignment), so at the "
        "untrained weights used here their cosines scatter around 0.",
    ]
    for s in settings:
        lines += ["", f"## {s.title}", ""]
        lines.append("| rule | " + " | ".join(cells) + " |")
        lines.append("|---|" + "---|" * len(cells))
        for rule in rules:
            row = [_entry(by_key[(s, c, rule)]) for c in cells]
            lines.append(f"| {rule} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ostl.run.alignment", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", type=Path, default=Path("docs/alignment.md"))
    p.add_argument("--cells", nargs="+", choices=sorted(CELLS), default=None)
    p.add_argument("--rules", nargs="+", choices=[e.label for e in RULE_SET], default=None)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    argv_used = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m ostl.run.alignment", *argv_used])
    start = time.perf_counter()
    results = align(args.cells, args.rules)
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, command, seconds))
    print(f"wrote {args.out} ({len(results)} comparisons in {seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
