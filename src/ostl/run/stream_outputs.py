"""The files of an ``ostl stream`` folder, its table and its figure.

- ``config.json``: the stream, its options and every setting of the run, and the command that
  reruns it (written before the first step);
- ``curves.csv``: per rule, the windowed and the cumulative mean error, at (at most)
  :data:`CURVE_POINTS` evenly spaced steps and the last one (``step`` counts the steps taken);
- ``errors/<rule>.npy``: every step's error, float32, NaN at steps without a target;
- ``summary.json``: per rule, :meth:`ostl.streams.PrequentialResult.to_json`, and the machine;
- ``table.md``: :func:`format_stream_table`;
- ``stream.png``: every rule's windowed error over the stream with the drifts marked, and the
  memory each rule held.

They are rewritten after every rule (the figure after the last one), and when a run is
interrupted (the rule running then with the steps it took), so a stopped run keeps what it did.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from .. import __version__
from ..streams.prequential import PrequentialResult
from .checkpoint import write_atomic
from .compare import format_bytes
from .sections import describe_machine

__all__ = [
    "STREAM_FILES",
    "CURVE_POINTS",
    "format_stream_table",
    "format_recovery",
    "write_stream_config",
    "write_stream_folder",
    "stream_plot",
]

#: What ``ostl stream`` writes into its folder (besides ``errors/``).
STREAM_FILES = ("config.json", "curves.csv", "summary.json", "table.md", "stream.png")
#: Points per curve in curves.csv (and the figure) at most.
CURVE_POINTS = 2000


def format_recovery(recovery: Sequence[int | None]) -> str:
    """``"120 / 480 (3/4)"``: mean / max steps over the drifts recovered from (and how many of
    them); ``"none of 2"`` if none, ``"no drifts"`` without drifts."""
    if not recovery:
        return "no drifts"
    back = [r for r in recovery if r is not None]
    if not back:
        return f"none of {len(recovery)}"
    mean = sum(back) / len(back)
    return f"{mean:.0f} / {max(back)} ({len(back)}/{len(recovery)})"


def _value(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def format_stream_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table, one row per rule, from :meth:`PrequentialResult.to_json` rows."""
    if not rows:
        return "(no rules)"
    metric = rows[0]["metric"]
    lines = [
        f"| rule | prequential {metric} | last window | recovery after drifts: mean / max "
        "steps (recovered) | held memory | steps/s | updates | steps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        steps = f"{r['steps']:,}" + (" (stopped)" if r["interrupted"] else "")
        rate = r["steps_per_second"]
        lines.append(
            f"| {r['rule']} | {_value(r['final_error'])} | {_value(r['last_window_error'])} "
            f"| {format_recovery(r['recovery'])} | {format_bytes(r['held_bytes'])} "
            f"| {'n/a' if rate is None else f'{rate:,.0f}'} | {r['updates']:,} | {steps} |"
        )
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


def write_stream_config(out: Path, config: dict[str, Any]) -> None:
    """``config.json`` (before the first step), and no ``errors/`` of an earlier run."""
    out.mkdir(parents=True, exist_ok=True)
    for old in (out / "errors").glob("*.npy"):
        old.unlink()
    _write_text(out / "config.json", json.dumps(config, indent=2) + "\n")


def _sample_steps(results: Sequence[PrequentialResult]) -> np.ndarray:
    """The steps (0-based) of the curves: evenly spaced over the longest run, and its last."""
    n = max(r.steps for r in results)
    stride = max(1, math.ceil(n / CURVE_POINTS))
    idx = np.arange(stride - 1, n, stride)
    return idx if len(idx) and idx[-1] == n - 1 else np.append(idx, n - 1)


def _write_curves(path: Path, results: Sequence[PrequentialResult]) -> None:
    idx = _sample_steps(results)
    head = ["step"] + [f"{r.label}:{k}" for r in results for k in ("windowed", "cumulative")]
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(head)
    curves = [(r.steps, r.windowed(), r.cumulative()) for r in results]
    for t in idx:
        row: list[Any] = [int(t) + 1]
        for steps, win, cum in curves:
            row += [f"{win[t]:.6g}", f"{cum[t]:.6g}"] if t < steps else ["", ""]
        w.writerow(row)
    _write_text(path, f.getvalue())


def stream_plot(
    results: Sequence[PrequentialResult], drifts: Sequence[int], title: str, path: Path
) -> Path:
    """Every rule's windowed error over the stream (drifts as vertical lines), and each rule's
    held memory."""
    fig = Figure(figsize=(13, 4.5), layout="constrained")
    a, b = fig.subplots(1, 2, width_ratios=(3, 1))
    idx = _sample_steps(results)
    for r in results:
        keep = idx[idx < r.steps]
        a.plot(keep + 1, r.windowed()[keep], label=r.label, linewidth=1)
    for i, d in enumerate(drifts):
        a.axvline(d, color="0.5", linestyle="--", linewidth=0.8, label="drift" if i == 0 else None)
    a.set_xlabel("step")
    a.set_ylabel(f"{results[0].metric}, mean of the last {results[0].window} steps")
    a.legend(fontsize="small")
    held = [max(r.held_bytes, 1) for r in results]
    b.barh([r.label for r in results], held, color="tab:gray")
    for i, n in enumerate(held):
        b.annotate(format_bytes(n), (n, i), xytext=(3, 0), textcoords="offset points",
                   va="center", fontsize="small")  # fmt: skip
    b.set_xscale("log")
    b.set_xlim(min(held) / 2, max(held) * 8)  # room for the labels
    b.invert_yaxis()
    b.set_xlabel("held memory (bytes, log scale)")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


def write_stream_folder(
    out: Path,
    config: dict[str, Any],
    stream: dict[str, Any],
    results: Sequence[PrequentialResult],
    *,
    plot: bool = True,
) -> None:
    """Every file of the folder but config.json, from the rules run so far (the last one
    possibly stopped); the figure only with ``plot`` (it takes a second or so)."""
    if not results:
        return
    (out / "errors").mkdir(parents=True, exist_ok=True)
    for r in results:
        buf = io.BytesIO()
        np.save(buf, r.errors)
        write_atomic(out / "errors" / f"{r.label}.npy", buf.getbuffer())
    _write_curves(out / "curves.csv", results)
    rows = [r.to_json() for r in results]
    summary = {
        "config": config,
        "stream": stream,
        "rules": rows,
        "interrupted": any(r.interrupted for r in results),
        "environment": {
            "ostl": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": describe_machine(),
        },
    }
    _write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    _write_text(out / "table.md", format_stream_table(rows) + "\n")
    if not plot:
        return
    title = f"{stream['name']}: {config['cell']} {config['hidden']}, seed {config['seed']}"
    stream_plot(results, stream["drifts"], title, out / "stream.png")
