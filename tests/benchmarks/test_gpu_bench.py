"""The GPU benchmark (python -m benchmarks.gpu): its section, goals, speed processes, sync count
and memory sweep.

The numbers of a GPU run cannot be produced here: the section is rendered from made-up rows,
and the code paths that run on any device (the speed processes, the sync count, the memory
sweep's control flow with an injected out-of-memory error) run for real on the CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from benchmarks.gpu import main, make_gpu_plan, run_speed, speed_jobs
from benchmarks.gpu_memory import (
    CPU_BYTES_PER_SAMPLE_STEP,
    OOM,
    bytes_per_sample_step,
    choose_batch,
    memory_sweep,
    target_steps,
)
from benchmarks.gpu_report import goal_lines, goals, markdown
from benchmarks.gpu_sync import count_syncs
from benchmarks.memory import measure_memory
from benchmarks.workload import (
    HEADLINE,
    NetSpec,
    build_network,
    input_pool,
    make_learner,
    one_hot_targets,
)

from benchmarks import gpu_sync
from ostl.run.sections import read_sections, write_section

ROOT = Path(__file__).resolve().parents[2]
TINY = NetSpec(n_in=4, hidden=8, batch=2)
GIB = 2**30
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")


# -- the section, from made-up rows -------------------------------------------------------------
def _data(
    ms: dict[tuple[str, str], list[float]], sync: dict[str, Any], memory: dict[str, Any]
) -> dict[str, Any]:
    """A run's raw results: ``ms[(role, method)]`` is the ms/step of each round."""
    plan = make_gpu_plan(quick=False)
    speed = []
    for rnd, job in speed_jobs(plan, "cuda"):
        role = next(r for r, n in plan.nets.items() if n.to_dict() == job.net)
        v = ms[(role, job.method)][rnd]
        speed.append({"job": job.to_dict(), "round": rnd, "threads": 1, "ms_per_step": v,
                      "ms_per_step_all": [v]})  # fmt: skip
    machine = {"date": "2030-01-01 00:00 UTC", "cpu": "Some CPU", "usable_cores": 16,
               "torch": "2.13.0", "commit": "abc", "gpu": "NVIDIA H200",
               "gpu_memory_bytes": 140 * GIB, "cuda_version": "12.8"}  # fmt: skip
    meta: dict[str, Any] = {"command": "python -m benchmarks.gpu --device cuda --out BENCHMARKS.md",
                            "device": "cuda", "mode": "full", "machine": machine}  # fmt: skip
    meta["wall_seconds"] = 201.0
    return {"meta": meta, "plan": plan.to_dict(), "speed": speed, "sync": sync, "memory": memory}


def _sync(between: int, control: int = 1) -> dict[str, Any]:
    return {"counter": "CUDA's sync debug mode", "control": control, "between_steps": 18,
            "syncs_between": between, "updates": 6, "syncs_at_updates": 6, "update_every": 4,
            "between_examples": [], "update_examples": ["x"]}  # fmt: skip


def _memory(ostl_at_oom: str = "ok") -> dict[str, Any]:
    rows = []
    for T, bptt, ostl in ((1000, "ok", "ok"), (2000, "ok", "ok"), (4000, "ok", "ok"),
                          (8000, OOM, ostl_at_oom)):  # fmt: skip
        rows.append({"method": "bptt", "steps": T, "status": bptt, "seconds": T / 1000,
                     "peak_bytes": T * 25 * 2**20 if bptt == "ok" else None})  # fmt: skip
        rows.append({"method": "ostl", "steps": T, "status": ostl, "seconds": T / 500,
                     "peak_bytes": GIB + T if ostl == "ok" else None})  # fmt: skip
    if ostl_at_oom == "ok":
        rows.append({"method": "ostl", "steps": 16000, "status": "ok", "seconds": 32.0,
                     "peak_bytes": GIB + 16000})  # fmt: skip
    return {"net": HEADLINE.with_(batch=3136).to_dict(), "per_sample_step": 8500.0,
            "batch_choice": "sized", "free_bytes": 139 * GIB, "total_bytes": 140 * GIB,
            "predicted_oom_steps": 5600.0, "rows": rows, "out_of_memory_at": 8000,
            "stop": "BPTT ran out"}  # fmt: skip


def _ms(head: float, wide: float) -> dict[tuple[str, str], list[float]]:
    """ms/step per round; OSTL ÷ BPTT is ``head`` / ``wide`` in round 1 and 0.1 more in round 2."""
    out = {}
    for role, r in (("headline", head), ("hidden 1024", wide), ("batch 256", 1.0)):
        out[(role, "bptt")] = [1.0, 2.0]
        out[(role, "ostl")] = [r, 2 * (r + 0.1)]
        out[(role, "osttp")] = [1.1, 2.4]
    return out


def test_the_section_shows_medians_ratios_and_the_oom_row_and_meets_the_goals() -> None:
    data = _data(_ms(1.2, 1.4), _sync(0), _memory())
    md = markdown(data)
    head = "| headline: LIF 64→256→256→10, B=32 |"
    # BPTT 1.0 and 2.0 ms/step: median 1.5; OSTL 1.2 and 2.6: ratios 1.2 and 1.3, median 1.25
    assert (
        f"{head} BPTT (`update_every=None`: backward once per sequence) | 1.500 | 1.000–2.000 | – |"
        in md
    )
    assert (
        f"{head} OSTL, diagonal (`update_every=1`) | 1.900 | 1.200–2.600 | 1.25× (1.20–1.30) |"
        in md
    )
    assert "| 8000 | **out of memory** | 1.00 | 8.0 | 16.0 |" in md
    assert "| 16000 | not run | 1.00 | – | 32.0 |" in md
    assert "NVIDIA H200 (140.0 GiB), CUDA 12.8" in md and "201 s wall time" in md
    assert "between two doublings of T; BPTT should run out at T ≈ 5,600." in md
    assert [g.met for g in goals(data)] == [True, True, True, True]
    assert "4 of 4 goals met." in md
    memory_goal = goals(data)[3].measured
    assert "BPTT out of memory at T = 8000; OSTL ran at T = 8000, 16000" in memory_goal
    lines = goal_lines(data)
    assert len(lines) == 4 and all(line.startswith("goal: met | ") for line in lines)


def test_the_goals_are_missed_when_the_numbers_miss_them() -> None:
    data = _data(_ms(1.6, 1.2), _sync(2), _memory(ostl_at_oom=OOM))
    got = goals(data)
    assert [g.met for g in got] == [False, True, False, False]
    assert (
        got[0].measured.startswith("1.65× (rounds 1.60–1.70×;")
        and "1.10× the limit" in got[0].measured
    )
    assert got[2].measured.startswith("2 in 18 steps between updates")
    assert "OSTL too: out of memory" in got[3].measured
    md = markdown(data)
    assert "1 of 4 goals met." in md and md.count("| **not met** |") == 3
    assert [line.split(" | ")[0] for line in goal_lines(data)] == [
        "goal: NOT MET", "goal: met", "goal: NOT MET", "goal: NOT MET"
    ]  # fmt: skip


def test_unmeasured_goals_say_why() -> None:
    memory = {"skipped": "needs CUDA"}
    data = _data(_ms(1.2, 1.2), _sync(0, control=0), memory)
    data["speed"] = [r for r in data["speed"] if r["job"]["net"]["hidden"] != 1024]
    got = goals(data)
    assert [g.met for g in got] == [True, None, None, None]
    assert "missed a deliberate" in got[2].measured and "needs CUDA" in got[3].measured
    moved = {**_sync(0), "schedule_ok": False}  # updates elsewhere: the split means nothing
    (g,) = goals(_data(_ms(1.2, 1.2), moved, memory))[2:3]
    assert g.met is None and "not at the steps counted as updates" in g.measured
    never = {**_memory(), "out_of_memory_at": None, "stop": "reached the T cap (64000)"}
    never["rows"] = [r for r in never["rows"] if r["status"] == "ok"]
    (g,) = goals(_data(_ms(1.2, 1.2), _sync(0), never))[3:]
    assert g.met is None and "never ran out (reached the T cap (64000))" in g.measured


def test_from_json_replaces_only_its_section(tmp_path: Path) -> None:
    raw, out = tmp_path / "G.json", tmp_path / "B.md"
    raw.write_text(json.dumps(_data(_ms(1.2, 1.4), _sync(0), _memory())))
    out.write_text("# report\n")
    write_section(out, "soak", "soak table\n")
    write_section(out, "gpu", "an old gpu section\n")
    assert main(["--from-json", str(raw), "--out", str(out)]) == 0
    text = out.read_text()
    sections = read_sections(text)
    assert text.startswith("# report\n") and "soak table" in sections["soak"]
    assert "an old gpu section" not in text and "4 of 4 goals met." in sections["gpu"]
    assert f"Rendered again by `python -m benchmarks.gpu --from-json {raw}" in sections["gpu"]


# -- the command line ---------------------------------------------------------------------------
@no_cuda
def test_cuda_without_a_cuda_device_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--device", "cuda", "--out", str(tmp_path / "B.md")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "python -m benchmarks.gpu: --device cuda: no CUDA device here\n"
    assert not any(tmp_path.iterdir())


def test_the_command_needs_out_and_a_known_device(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--device", "cpu"], "--out is required"),
        (["--device", "tpu", "--no-write"], "--device: expected cpu, cuda or cuda:N, got 'tpu'"),
        (["--rounds", "0", "--no-write"], "expected a positive integer, got '0'"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_speed_processes_run_a_b_b_a_and_skip_when_out_of_time() -> None:
    plan = make_gpu_plan(quick=False)
    jobs = speed_jobs(plan, "cuda")
    assert [n.hidden for n in plan.nets.values()] == [256, 1024, 256]
    assert [n.batch for n in plan.nets.values()] == [32, 32, 256]
    assert len(jobs) == plan.rounds * 3 * 3 and plan.rounds == 2
    first = [j.method for r, j in jobs if r == 0 and j.net["hidden"] == 1024]
    second = [j.method for r, j in jobs if r == 1 and j.net["hidden"] == 1024]
    assert first == ["bptt", "ostl", "osttp"] and second == first[::-1]
    assert all(j.kind == "speed" and j.device == "cuda" and j.steps == 50 for _, j in jobs)
    t0 = time.perf_counter()
    rows = run_speed(jobs[:3], deadline=time.perf_counter() - 1)  # past: nothing starts
    assert time.perf_counter() - t0 < 1
    assert [r["skipped"] for r in rows] == ["out of time (--budget)"] * 3
    assert [r["round"] for r in rows] == [0, 0, 0]


@pytest.mark.slow
def test_a_quick_cpu_run_end_to_end(tmp_path: Path) -> None:
    """The real command, every method in its own process, then rendered again from its JSON."""
    raw = tmp_path / "G.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--quick", "--no-write",
           "--json", str(raw)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    goal = [line for line in proc.stdout.splitlines() if line.startswith("goal: ")]
    assert len(goal) == 4
    assert goal[2].startswith("goal: met | No host sync between updates")
    assert goal[3].startswith("goal: not measured | BPTT runs out") and "needs CUDA" in goal[3]
    data = json.loads(raw.read_text())
    assert len(data["speed"]) == 18 and all(r["ms_per_step"] > 0 for r in data["speed"])
    assert data["sync"]["control"] == 1 and data["sync"]["syncs_between"] == 0
    assert markdown(data) in proc.stdout


# -- the sync count -----------------------------------------------------------------------------
def test_the_sync_count_finds_none_between_updates_and_each_update_read() -> None:
    got = count_syncs(TINY, device="cpu", every=3, steps=9)
    assert (got["between_steps"], got["updates"], got["control"]) == (6, 3, 1)
    assert got["syncs_between"] == 0 and got["syncs_at_updates"] == 3, got
    assert got["schedule_ok"] is True
    assert all("guard.py" in e for e in got["update_examples"])


def test_the_sync_count_sees_a_careless_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    loss = gpu_sync.loss_fn

    def logging_loss(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = loss(y, t)
        _ = out.detach().item()  # what a loss printed at every step would do
        return out

    monkeypatch.setattr(gpu_sync, "loss_fn", logging_loss)
    got = count_syncs(TINY, device="cpu", every=3, steps=9)
    assert got["syncs_between"] >= 6, got
    assert any("logging_loss" in e for e in got["between_examples"])


# -- the memory sweep ---------------------------------------------------------------------------
def _measured(log: list[tuple[str, int]], sleep: float = 0.0) -> Any:
    """A stand-in for the device measurement (the sweep's control flow is under test): BPTT's
    peak grows with T, OSTL's does not; each call sleeps ``sleep`` × T / 10 seconds."""

    def measure(spec: NetSpec, m: str, steps: int, **kw: Any) -> dict[str, Any]:
        log.append((m, steps))
        time.sleep(sleep * steps / 10)
        return {"device_extra_bytes": 100 * steps if m == "bptt" else 1000, "extra_bytes": 0}

    return measure


def _failing_at(T_oom: int, measure: Any, method: str = "bptt") -> Any:
    """``measure``, raising the allocator's error for ``method`` from ``T_oom`` steps on."""

    def failing(spec: NetSpec, m: str, steps: int, **kw: Any) -> dict[str, Any]:
        if m == method and steps >= T_oom:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return measure(spec, m, steps, **kw)

    return failing


EXPECTED = [("bptt", 10, "ok"), ("ostl", 10, "ok"), ("bptt", 20, "ok"), ("ostl", 20, "ok"),
            ("bptt", 40, OOM), ("ostl", 40, "ok"), ("ostl", 80, "ok")]  # fmt: skip


def test_the_sweep_records_the_oom_then_runs_ostl_there_and_at_the_next_T() -> None:
    calls: list[tuple[str, int]] = []
    got = memory_sweep(TINY, device="cpu", t0=10, t_max=10_000, time_cap=120,
                       measure=_failing_at(40, _measured(calls)))  # fmt: skip
    assert [(r["method"], r["steps"], r["status"]) for r in got["rows"]] == EXPECTED
    assert calls == [(m, T) for m, T, status in EXPECTED if status == "ok"]
    assert got["out_of_memory_at"] == 40
    assert got["stop"] == "BPTT ran out of memory at T = 40; OSTL ran there and at T = 80"
    assert [r["peak_bytes"] for r in got["rows"]] == [1000, 1000, 2000, 1000, None, 1000, 1000]
    other = _failing_at(10, lambda *a, **k: 1 / 0)  # a failure that is not out of memory
    broken = memory_sweep(TINY, device="cpu", t0=10, t_max=100, time_cap=120, measure=other)
    assert [r["status"] for r in broken["rows"]] == [
        OOM,
        "error: ZeroDivisionError: division by zero",
    ]
    assert broken["stop"] == "ostl at T = 10: error: ZeroDivisionError: division by zero"


def test_the_sweep_stops_at_the_T_cap_at_an_ostl_oom_and_at_the_time_cap() -> None:
    capped = memory_sweep(TINY, device="cpu", t0=10, t_max=20, time_cap=120, measure=_measured([]))
    assert [r["steps"] for r in capped["rows"]] == [10, 10, 20, 20]
    assert capped["out_of_memory_at"] is None and capped["stop"] == "reached the T cap (20)"
    both = memory_sweep(TINY, device="cpu", t0=10, t_max=1000, time_cap=120,
                        measure=_failing_at(20, _measured([]), "ostl"))  # fmt: skip
    assert [r["status"] for r in both["rows"]] == ["ok", "ok", "ok", OOM]
    assert both["stop"] == f"ostl at T = 20: {OOM}"
    none = memory_sweep(TINY, device="cpu", t0=10, t_max=1000, time_cap=0, measure=_measured([]))
    assert none["rows"] == [] and "time cap" in none["stop"]
    t0 = time.perf_counter()
    timed = memory_sweep(
        TINY, device="cpu", t0=10, t_max=10**6, time_cap=1.0, measure=_measured([], sleep=0.05)
    )  # 0.05 s, 0.1 s, 0.2 s, ... a call
    assert timed["stop"].startswith("the time cap (1 s) would be passed by ")
    assert timed["out_of_memory_at"] is None and len(timed["rows"]) >= 2
    assert time.perf_counter() - t0 < 1.0 + 0.5  # no call started that would end past the cap


@pytest.mark.slow
def test_the_sweep_with_the_real_measurement_and_an_injected_oom() -> None:
    got = memory_sweep(TINY, device="cpu", t0=10, t_max=1000, time_cap=300,
                       measure=_failing_at(20, measure_memory))  # fmt: skip
    order = [(r["method"], r["steps"], r["status"]) for r in got["rows"]]
    assert order == [("bptt", 10, "ok"), ("ostl", 10, "ok"), ("bptt", 20, OOM),
                     ("ostl", 20, "ok"), ("ostl", 40, "ok")]  # fmt: skip
    assert all(r["peak_bytes"] >= 0 for r in got["rows"] if r["status"] == "ok")


def test_the_batch_is_sized_to_run_out_between_two_doublings() -> None:
    b = choose_batch(140 * GIB, CPU_BYTES_PER_SAMPLE_STEP, target_steps(1000))
    assert b % 32 == 0 and 3000 < b < 3200
    full = lambda T: b * T * CPU_BYTES_PER_SAMPLE_STEP / GIB  # noqa: E731 - GiB of BPTT's graph
    assert full(4000) < 140 / 1.4 and full(8000) > 140 * 1.4
    assert choose_batch(1, 8000.0, 5000.0) == 32
    with pytest.raises(ValueError, match="positive"):
        choose_batch(GIB, 0.0, 5000.0)


def test_the_device_calibration_divides_the_growth_by_the_extra_sample_steps() -> None:
    # the allocator's figures of two runs (a CUDA measurement cannot run here)
    def fake(spec: NetSpec, m: str, steps: int, **kw: Any) -> dict[str, Any]:
        return {"device_extra_bytes": 5000 + 300 * spec.batch * steps, "extra_bytes": 0}

    assert bytes_per_sample_step(HEADLINE, device="cpu", measure=fake) == 300.0
    flat = lambda spec, m, steps, **kw: {"extra_bytes": 4096}  # noqa: E731
    assert bytes_per_sample_step(HEADLINE, device="cpu", measure=flat) is None


def test_the_graph_bytes_constant_is_what_bptt_saves_on_the_headline_network() -> None:
    def saved(T: int) -> int:
        learner = make_learner(build_network(HEADLINE), "bptt")
        pool, target = input_pool(HEADLINE, T), one_hot_targets(HEADLINE)
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        learner.reset(HEADLINE.batch)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            for x in pool:
                learner.step(x, target)
        return sum(storages.values())

    per = (saved(20) - saved(10)) / (10 * HEADLINE.batch)
    assert abs(per - CPU_BYTES_PER_SAMPLE_STEP) < 0.1 * CPU_BYTES_PER_SAMPLE_STEP, per


# -- on a GPU -----------------------------------------------------------------------------------
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.mark.gpu
@cuda_only
def test_on_cuda_the_sync_count_sees_its_control_and_no_sync_between_updates() -> None:
    got = count_syncs(TINY, device="cuda", every=3, steps=9)
    assert got["control"] >= 1 and got["schedule_ok"], got
    assert got["syncs_between"] == 0, got["between_examples"]


@pytest.mark.gpu
@cuda_only
def test_on_cuda_the_sweep_goes_on_after_an_injected_oom_and_ostl_stays_flat() -> None:
    assert (bytes_per_sample_step(TINY, device="cuda") or 0) > 0
    got = memory_sweep(TINY.with_(batch=64), device="cuda", t0=10, t_max=1000, time_cap=120,
                       measure=_failing_at(40, measure_memory))  # fmt: skip
    assert [(r["method"], r["steps"], r["status"]) for r in got["rows"]] == EXPECTED
    bptt = [r["peak_bytes"] for r in got["rows"] if r["method"] == "bptt" and r["status"] == "ok"]
    ostl = [r["peak_bytes"] for r in got["rows"] if r["method"] == "ostl"]
    assert bptt[1] > bptt[0] > 0  # the graph grows with T
    assert max(ostl) <= 1.05 * min(ostl), ostl  # OSTL holds nothing per step
