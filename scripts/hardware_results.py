"""Write RESULTS.md's PCM section: learning on simulated phase-change-memory crossbars.

    python scripts/hardware_results.py --jobs 2          # make results-pcm (~15 min, 2 cores)
    python scripts/hardware_results.py --render-only     # rewrite the section from runs/

Methods, per task and seed (every run is :func:`ostl.run.train.train`, ``--hardware pcm``):

- (i) BPTT in floating point, (ii) the same BPTT weights programmed onto PCM once
  (``--pcm-update offline``: one run gives both);
- (iii) OSTTP and (iv) OSTL trained online on the crossbars with mixed-precision updates;
- (v) OSTTP online with direct programming of every update (the naive scheme).

Each hardware row is then read at 1 s, 1 h, 1 day and 1 year after programming, without and with
global drift compensation (:meth:`ostl.hardware.run.HardwareSession.report`). The section goes
between ``<!-- section:pcm -->`` markers (``ostl.run.sections.write_section``), so
``scripts/results.py`` keeps it when it rewrites the rest of RESULTS.md. Run summaries go to
``runs/hardware/<task>/<method>-seed<k>/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ostl.hardware.run import DRIFT_TIMES
from ostl.run.sections import write_section
from ostl.run.train import TrainConfig, train
from ostl.torchrun import process_pool

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / ("hardware-quick" if "--quick" in sys.argv else "hardware")

#: Task -> (budget, why). Digits: the task's defaults; pattern: fewer epochs to fit the session.
TASKS: dict[str, tuple[TrainConfig, str]] = {
    "digits": (TrainConfig(task="digits"), "the task's default network and budget (10 epochs)"),
    "pattern": (
        TrainConfig(task="pattern", epochs=50),
        "the task's default network, 50 epochs instead of 200 (to fit the grid in the session)",
    ),
}
#: (key, rule, pcm_update); the BPTT run gives rows (i) and (ii).
METHODS = [
    ("bptt-offline", "bptt", "offline"),
    ("osttp-mixed", "osttp", "mixed"),
    ("ostl-mixed", "ostl", "mixed"),
    ("osttp-direct", "osttp", "direct"),
]
ROWS = [  # label, method key, where the numbers come from
    ("(i) BPTT, floating point (software)", "bptt-offline", "software"),
    ("(ii) BPTT in software, then programmed onto PCM", "bptt-offline", "pcm"),
    ("(iii) OSTTP online on PCM, mixed precision", "osttp-mixed", "pcm"),
    ("(iv) OSTL online on PCM, mixed precision", "ostl-mixed", "pcm"),
    ("(v) OSTTP online on PCM, direct programming", "osttp-direct", "pcm"),
]


def _run(cfg: TrainConfig, out: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    return train(cfg, out, progress=False).to_json()


def run_grid(tasks: list[str], seeds: list[int], jobs: int, quick: bool = False) -> None:
    grid = []
    for task in tasks:
        base = replace(TASKS[task][0], threads=1, hardware="pcm")
        if quick:  # a check of the script, not a result
            base = replace(
                base, epochs=1, task_options={"train_size": 200} if task == "digits" else {}
            )
        for s in seeds:
            for key, rule, update in METHODS:
                cfg = replace(base, rule=rule, pcm_update=update, seed=s)
                grid.append((cfg, str(RUNS / task / f"{key}-seed{s}")))
    # longest first: the online runs dominate
    grid.sort(key=lambda c: c[0].pcm_update == "offline")
    with process_pool(jobs) as pool:
        futures = [pool.submit(_run, cfg, out) for cfg, out in grid]
        for (cfg, _), fut in zip(grid, futures):
            r = fut.result()
            hw = r["hardware"]
            print(
                f"  {cfg.task} {cfg.rule}/{cfg.pcm_update} seed {cfg.seed}: software-side "
                f"{r['test_metric']:.4f}, on PCM {hw['test_programmed']:.4f}, 1y "
                f"{hw['drift']['1y']:.4f} / {hw['drift']['1y+comp']:.4f} (comp), "
                f"{hw['events_per_weight']:.1f} events/weight ({r['wall_seconds']:.0f} s)",
                flush=True,
            )


def _load(task: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for key, _, _ in METHODS:
        for path in sorted((RUNS / task).glob(f"{key}-seed*/summary.json")):
            out.setdefault(key, []).append(json.loads(path.read_text()))
    return out


def _pm(values: list[float]) -> str:
    if not values:
        return "—"
    m = statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.4f}"
    return f"{m:.4f} ± {statistics.stdev(values):.4f}"


def _table(runs: dict[str, list[dict[str, Any]]], comp: bool) -> list[str]:
    times = list(DRIFT_TIMES)
    suffix = "+comp" if comp else ""
    head = "| method | programming events per weight | programmed (t = 0) | "
    head += " | ".join(times) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(times)]
    for label, key, where in ROWS:
        rs = runs.get(key, [])
        if not rs:
            continue
        if where == "software":
            cells = ["—", _pm([r["test_metric"] for r in rs])] + ["—"] * len(times)
        else:
            hw = [r["hardware"] for r in rs]
            cells = [
                f"{statistics.fmean(h['events_per_weight'] for h in hw):.1f}",
                _pm([h["test_programmed"] for h in hw]),
            ] + [_pm([h["drift"][t + suffix] for h in hw]) for t in times]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def section(tasks: list[str], meta: dict[str, Any]) -> str:
    parts = [
        "## PCM hardware: online learning on simulated phase-change-memory crossbars",
        "",
        f"Generated by `{meta['command']}` (`make results-pcm`; do not edit by hand) on "
        f"{meta['machine']}, {meta['date']}, {meta['wall']:.0f} s wall ({meta['jobs']} processes, "
        "one thread each). Device model: IBM aihwkit's PCM model (programming noise, drift, 1/f "
        "read noise, global drift compensation) and its tile periphery (8-bit DAC, 10-bit ADC, "
        "output noise 0.02); see `docs/hardware.md` for what is and is not simulated.",
        "",
        "Rows (ii)-(v) are read on the crossbars: right after the end of training "
        "(*programmed*), then at 1 s, 1 h, 1 day and 1 year of drift, without and with global "
        "drift compensation (a fresh drift/read-noise draw per column). *Programming events "
        "per weight*: devices programmed (pairs, each write counted once) over the run, "
        "including the initial mapping, divided by the number of weights on PCM. Online rows "
        "report the last epoch's weights (no going back to an earlier epoch on the devices); "
        "BPTT's weights are those of its best validation epoch. Mean ± std over seeds "
        f"{', '.join(str(s) for s in meta['seeds'])}.",
        "",
    ]
    for task in tasks:
        runs = _load(task)
        if not runs:
            continue
        r0 = next(iter(runs.values()))[0]
        cfg = r0["config"]
        parts += [
            f"### {task}: test {r0['metric']} "
            f"({'higher' if r0['higher_is_better'] else 'lower'} is better)",
            "",
            f"Network: {cfg['cell']} {cfg['hidden']} + linear readout; {cfg['epochs']} epochs, "
            f"batch {cfg['batch_size']}, Adam lr {cfg['lr']}; budget: {TASKS[task][1]}.",
            "",
            "Without drift compensation:",
            "",
            *_table(runs, comp=False),
            "",
            "With global drift compensation:",
            "",
            *_table(runs, comp=True),
            "",
        ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default="digits,pattern")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--output", default=str(ROOT / "RESULTS.md"))
    p.add_argument("--quick", action="store_true", help="1 epoch per run: checks the script")
    p.add_argument("--render-only", action="store_true", help="rewrite from runs/hardware/")
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        p.error(f"unknown task(s) {unknown}: expected some of {list(TASKS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    if not args.render_only:
        run_grid(tasks, seeds, args.jobs, args.quick)
    wall = time.perf_counter() - t0
    meta_path = RUNS / "meta.json"
    if args.render_only and meta_path.exists():
        meta = json.loads(meta_path.read_text())
    else:
        meta = {
            "command": "python scripts/hardware_results.py " + " ".join(sys.argv[1:] or []),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, torch "
            f"{torch.__version__}",
            "date": time.strftime("%Y-%m-%d"),
            "wall": wall,
            "jobs": args.jobs,
            "seeds": seeds,
        }
        RUNS.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    write_section(args.output, "pcm", section(tasks, meta))
    print(f"wrote the pcm section of {args.output}")
    return 0 if not math.isnan(wall) else 1


if __name__ == "__main__":
    sys.exit(main())
