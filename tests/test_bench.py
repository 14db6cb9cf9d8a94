"""The benchmark harness (ostl.bench): report rows, memory flat in T for every online rule.

Timing is benchmarked, not tested: these tests check the instrument, on tiny networks.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from ostl import kernels
from ostl.bench import Job, NetSpec, SuiteConfig, build_jobs, main, make_plan, run_job, run_suite
from ostl.bench.machine import machine_info
from ostl.bench.memory import measure_memory
from ostl.bench.report import render
from ostl.bench.results import Results
from ostl.bench.suite import Plan
from ostl.bench.workload import online_rules, registered_bench_rules

TINY = NetSpec(n_in=4, hidden=8, batch=2)
MIB = 2**20


def test_quick_run_has_the_expected_rows(tmp_path: Path) -> None:
    plan = replace(make_plan(quick=True), memory_steps=(10, 20), speed_steps=3, speed_repeats=1)
    cfg = SuiteConfig(quick=True)
    jobs = build_jobs(cfg, plan)
    results = run_suite(jobs, isolate=False, log=lambda s: None)
    assert not [r for r in results if "error" in r], [r.get("error") for r in results]
    assert kernels.ENABLED  # the in-process "ostl-torch" run turned the kernel off only for itself
    res = Results(results)
    rules = registered_bench_rules()
    for net, methods in plan.speed:
        for m in methods:
            r = res.speed[(net, m)]
            assert "skipped" in r or r["ms_per_step"] > 0
        if net.factorised:  # the LIF whose traces factorise: OSTL against BPTT
            assert set(methods) == {"forward", "bptt", "ostl"}
            continue
        assert set(methods) >= {"forward", "torch", "snntorch", *rules}
        for m in rules:  # every rule ran and reports its traces (BPTT has none)
            assert (res.speed[(net, m)]["trace_bytes"] is None) == (m == "bptt")
    head = plan.headline
    # the factorised trace holds B·(n_in + 1) floats per layer, not B·N·(n_in + 1)
    fact = next(net for net, _ in plan.speed if net.factorised)
    assert res.speed[(fact, "ostl")]["trace_bytes"] < res.speed[(head, "ostl")]["trace_bytes"] / 4
    for m in ("ostl-bf16", "ostl-fp16"):  # half the trace bytes, a measured gradient error
        r = res.speed[(head, m)]
        assert r["trace_bytes"] * 2 == res.speed[(head, "ostl")]["trace_bytes"]
        assert 0.99 < r["grad_cosine"] <= 1.0 + 1e-6 and 0 < r["grad_rel_error"] < 0.05
    assert {m for m, _ in res.memory} == {"bptt", *(r for r in rules if r != "bptt")}
    assert res.gbps is not None and res.gbps > 0

    meta = {
        "command": "python -m ostl.bench --quick",
        "mode": "quick",
        "device": "cpu",
        "wall_seconds": 1.0,
        "registered": rules,
        "machine": machine_info(),
    }
    md = render(results, meta, plan, plot=None)
    for heading in (
        "## Machine",
        "## Goals",
        "## Peak memory",
        "## Time per training step",
        "## Memory-bandwidth floor",
        "## Low-precision traces",
    ):
        assert heading in md
    assert "`python -m ostl.bench --quick`" in md
    assert "OSTL, diagonal" in md and "ostl BPTT" in md and "snnTorch" in md
    assert "T = 10 ÷ T = 10" not in md  # the growth column compares the first and last T
    assert "Closed-form Jacobians (LIF)" in md and "Factorised traces (LIF" in md
    assert "bfloat16 traces" in md
    assert "| not measured |" not in md.split("## Peak")[0]  # every goal measured
    for net, _ in plan.speed:
        assert f"**{net.label}**" in md


def test_cli_writes_report_and_json_and_renders_again(tmp_path: Path) -> None:
    out, raw_path = tmp_path / "sub" / "B.md", tmp_path / "B.json"
    argv = ["--quick", "--only", "bandwidth", "--in-process", "--no-plot", "--out", str(out)]
    assert main([*argv, "--json", str(raw_path)]) == 0
    md = out.read_text()
    assert "--only bandwidth" in md and "GB/s" in md
    raw = json.loads(raw_path.read_text())
    assert raw["results"][0]["job"]["kind"] == "bandwidth"
    assert make_plan(quick=True) == Plan.from_dict(raw["plan"])

    notes = tmp_path / "notes.md"
    notes.write_text("Why the goals are missed.")
    again = tmp_path / "again.md"
    assert (
        main(
            ["--from-json", str(raw_path), "--no-plot", "--out", str(again), "--notes", str(notes)]
        )
        == 0
    )
    text = again.read_text()
    assert "Rendered again from its raw results" in text and "Why the goals are missed." in text
    assert (
        text.split("## Machine")[1].split("## Notes")[0]
        == md.split("## Machine")[1].split("## Notes")[0]
    )


@pytest.mark.parametrize("rule", online_rules())
def test_learner_memory_does_not_grow_with_T(rule: str) -> None:
    """Tensors held by every online rule's learner: the same after 100 and 2000 steps."""
    held = measure_memory(TINY, rule, 2000, held_at=(100,))["held_bytes_at"]
    assert held[100] > 0
    assert held[2000] == held[100]


@pytest.mark.slow
def test_process_memory_flat_for_ostl_and_growing_for_bptt() -> None:
    """Whole-process RSS, each measurement in its own process (the harness's default)."""
    jobs = [
        Job("memory", m, TINY.to_dict(), T)
        for m, T in (("ostl", 100), ("ostl", 2000), ("bptt", 2000))
    ]
    with ThreadPoolExecutor(len(jobs)) as pool:  # memory, not time: concurrency is harmless
        ostl_short, ostl_long, bptt_long = pool.map(run_job, jobs)
    for r in (ostl_short, ostl_long, bptt_long):
        assert "error" not in r, r.get("error")
        assert r["peak_method"] == "VmHWM after clear_refs"
    # OSTL: a leak of 2 KiB per step would add ~4 MiB over these 1900 extra steps.
    assert ostl_long["extra_bytes"] - ostl_short["extra_bytes"] < 4 * MIB
    # BPTT keeps its graph: the instrument must see it grow.
    assert bptt_long["extra_bytes"] > ostl_long["extra_bytes"] + 16 * MIB


def test_memory_entries_are_the_median_of_their_processes() -> None:
    plan = replace(make_plan(quick=True), memory_repeats=3)
    mem = build_jobs(SuiteConfig(quick=True, kinds=("memory",)), plan)
    assert len(mem) == 3 * len(plan.memory_methods) * len(plan.memory_steps)
    job = mem[0].to_dict()
    rs = [
        {"job": job, "extra_bytes": e, "peak_bytes": e + 7, "threads": 1}
        for e in (5 * MIB, 2 * MIB, 9 * MIB)
    ]
    rs.append({"job": job, "error": "boom", "threads": 1})  # a failed process is left out
    res = Results(rs)
    key = (mem[0].method, mem[0].steps)
    assert res.extra(*key) == 5 * MIB
    assert res.memory[key]["peak_bytes"] == 5 * MIB + 7  # the whole record of that process
    assert len(res.memory_all[key]) == 4


def test_denormal_bench_runs_each_mode_in_its_own_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ostl.bench import denormal

    out = tmp_path / "B.md"
    out.write_text("# kept\n")
    argv = ["--steps", "4", "--window", "2", "--threads", "1", "--out", str(out)]
    assert denormal.main(argv) == 0
    text = out.read_text()
    assert text.startswith("# kept\n") and "<!-- section:denormal -->" in text
    rows = [line for line in text.splitlines() if line.startswith(("| ieee", "| scoped"))]
    assert len(rows) == 2 and all(" | 1 | " in r for r in rows)
    with pytest.raises(SystemExit) as e:
        denormal.main(["--threads", "two"])
    assert e.value.code == 2
    assert "thread counts" in capsys.readouterr().err
