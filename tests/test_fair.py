"""The fair-comparison protocol (scripts/fair.py, scripts/fair_report.py): the lr chosen by the
validation metric, the cells and gaps, the computed verdicts and claims, the kept runs skipped on
a rerun, and one real quick run on digits."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fair  # noqa: E402
import fair_claims as claims  # noqa: E402
import fair_data as data  # noqa: E402
import fair_report as report  # noqa: E402

from ostl.run.sections import read_sections, write_section  # noqa: E402


def _rec(variant: str, net: str, schedule: str, factor: float, seed: int, test: float,
         valid: float, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A record as fair.py keeps it (slim), of task ``t`` whose base lr is 0.01."""
    return dict(task="t", variant=variant, net=net, schedule=schedule, factor=factor,
                lr=0.01 * factor, seed=seed, test=test, valid=valid, wall=1.0, **extra)  # fmt: skip


# -- the learning rate comes from the validation metric ------------------------------------
@pytest.mark.parametrize("hib", [True, False])
def test_the_sweep_picks_the_best_validation_not_the_best_test(hib: bool) -> None:
    good, bad = (0.9, 0.5) if hib else (0.1, 0.5)  # "good" by the direction of the metric
    sweep = [
        _rec("ostl", "shallow", "sequence", 1, 0, test=good, valid=bad),  # best test
        _rec("ostl", "shallow", "sequence", 0.5, 0, test=bad, valid=good),  # best validation
        _rec("ostl", "shallow", "sequence", 2, 0, test=good, valid=math.nan),
        _rec("ostl", "shallow", "sequence", 4, 0, test=good, valid=good, error="NonFiniteError"),
    ]
    assert report.choose_lr(sweep, hib) is sweep[1]


def test_ties_go_to_the_earlier_factor_and_failures_never_win() -> None:
    a = _rec("ostl", "shallow", "sequence", 1, 0, test=0.1, valid=0.8)
    b = _rec("ostl", "shallow", "sequence", 0.5, 0, test=0.9, valid=0.8)
    assert report.choose_lr([a, b], True) is a and report.choose_lr([b, a], True) is b
    failed = [_rec("ostl", "shallow", "sequence", 1, 0, test=1, valid=1, error="NaN")]
    assert report.choose_lr(failed, True) is None


def test_a_cell_is_the_seeds_at_the_chosen_lr_only() -> None:
    rs = [
        _rec("ostl", "deep", "online", 1, 0, test=0.80, valid=0.70),
        _rec("ostl", "deep", "online", 2, 0, test=0.60, valid=0.75),  # chosen (validation)
        _rec("ostl", "deep", "online", 1, 1, test=0.99, valid=0.99),  # another lr: not counted
        _rec("ostl", "deep", "online", 2, 1, test=0.64, valid=0.70),
        _rec("ostl", "deep", "online", 2, 2, test=0, valid=0, error="NonFiniteError: step 3"),
    ]
    c = report.cell(rs, sweep_seed=0, hib=True)
    assert c.lr == 0.02 and c.n == 2 and c.failed == 1
    assert c.mean == pytest.approx(0.62) and c.std == pytest.approx(math.sqrt(0.0008))
    skipped = report.cell([{**rs[0], "skipped": "needs a Readout"}], 0, True)
    assert skipped.lr is None and skipped.note == "skipped: needs a Readout"


# -- rendering: cells, gaps, verdicts, claims ---------------------------------------------
COMMAND: dict[str, Any] = {
    "command": "python scripts/fair.py --tasks t", "machine": "a test", "date": "2026-01-01",
    "wall": 1.0, "ran": 4, "jobs": 1, "factors": [1], "extend": 0, "seeds": [0, 1],
}  # fmt: skip


def _task(bptt: float, ostl: float, osttp: float) -> list[dict[str, Any]]:
    """Seeds 0 and 1 (±0.01 around the given mean) of three rules, one lr."""
    out = []
    for variant, mean, schedules in [
        ("bptt", bptt, ["sequence"]), ("ostl", ostl, ["sequence", "online"]),
        ("osttp", osttp, ["sequence", "online"]),
    ]:  # fmt: skip
        for s in schedules:
            for k, d in ((0, -0.01), (1, 0.01)):
                out.append(_rec(variant, "shallow", s, 1, k, mean + d, 0.5))
    return out


def _tmeta(hib: bool, **command: Any) -> dict[str, Any]:
    st = {"metric": "accuracy" if hib else "nll", "higher_is_better": hib, "cell": "snu",
          "hidden": {"shallow": [8]}, "epochs": 2, "batch_size": 4, "task_options": {},
          "base_lr": 0.01}  # fmt: skip
    return {"settings": st, "budget": "a test budget", "sweep_seed": 0, "quick": False,
            "study": False, "commands": [{**COMMAND, **command}]}  # fmt: skip


def _meta(hib: bool) -> dict[str, Any]:
    return {"tasks": {"t": _tmeta(hib)}, "notes": {}}


def test_the_table_shows_mean_std_gap_and_lr_higher_is_better() -> None:
    text = report.section(_task(bptt=0.90, ostl=0.891, osttp=0.85), _meta(True))
    assert "### t: test accuracy (higher is better)" in text
    assert "| rule | shallow, sequence | shallow, online |" in text
    # BPTT's runs serve both schedules; std of (m - 0.01, m + 0.01) is 0.01 * sqrt(2)
    assert "| bptt | 0.9000 ± 0.0141 (n=2) · lr 0.01 | 0.9000 ± 0.0141 (n=2) · lr 0.01 |" in text
    assert "| ostl | 0.8910 ± 0.0141 (n=2) · +1.00 % · lr 0.01 |" in text
    assert "OSTL within 2 % of BPTT under the sequence schedule: shallow **yes** (+1.00 %)" in text
    assert "OSTTP within 5 % of BPTT under the sequence schedule: shallow **no** (+5.56 %)" in text


def test_osttps_gap_by_kind_of_target_is_computed_from_the_cells() -> None:
    meta = {**_meta(True), "targets": {"t": "a class, at every step"}}
    text = report.section(_task(bptt=0.90, ostl=0.891, osttp=0.85), meta)
    assert "| t | a class, at every step | +5.6 % | — | +1.0 % | — |" in text
    no_osttp = [r for r in _task(0.90, 0.891, 0.85) if r["variant"] != "osttp"]
    assert "OSTTP by kind of target" not in report.section(no_osttp, meta)


def test_lower_is_better_gaps_and_verdicts() -> None:
    text = report.section(_task(bptt=2.0, ostl=2.05, osttp=2.08), _meta(False))
    assert "(lower is better)" in text
    assert "| ostl | 2.0500 ± 0.0141 (n=2) · +2.50 % · lr 0.01 |" in text  # worse: positive
    assert "shallow **no** (+2.50 %)" in text and "shallow **yes** (+4.00 %)" in text
    better = report.section(_task(bptt=2.0, ostl=1.9, osttp=2.0), _meta(False))
    assert "· -5.00 % ·" in better and "shallow **yes** (-5.00 %)" in better


def test_the_section_embeds_its_data_and_renders_the_same_again(tmp_path: Path) -> None:
    records, meta = _task(0.9, 0.891, 0.85), _meta(True)
    text = report.section(records, meta)
    assert data.embedded(text) == (records, meta["tasks"])
    out = tmp_path / "R.md"
    write_section(out, "other", "## Other\n\nkept")
    write_section(out, fair.SECTION, text)
    before = read_sections(out.read_text())
    assert fair.main(["--render-only", "--out", str(out)]) == 0
    after = read_sections(out.read_text())
    assert after["fair"] == before["fair"] and after["other"] == before["other"]
    assert after["claims"].startswith("<!-- section:claims -->\n## Claims -> evidence")
    assert "Tasks in the fair comparison: t." in after["claims"]
    assert "| OSTTP has no update locking" in after["claims"]


def test_results_md_fair_and_claims_sections_are_what_the_script_renders(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text((ROOT / "RESULTS.md").read_text())
    assert fair.main(["--render-only", "--out", str(out)]) == 0
    before, after = read_sections((ROOT / "RESULTS.md").read_text()), read_sections(out.read_text())
    assert after[fair.SECTION] == before[fair.SECTION] and after[fair.CLAIMS] == before[fair.CLAIMS]


def test_results_md_keeps_the_claims_section_under_its_header(tmp_path: Path) -> None:
    """scripts/results.py rewrites RESULTS.md's task tables: the claims section stays on top."""
    import results  # scripts/ is on the path (above)

    out = tmp_path / "RESULTS.md"
    text = (ROOT / "RESULTS.md").read_text()
    old = read_sections(text).get(fair.CLAIMS)
    out.write_text(text.replace(old, "") if old else text)  # as before fair.py's first run
    write_section(out, fair.CLAIMS, claims.claims_section(_task(0.9, 0.891, 0.85), _meta(True)))
    assert out.read_text().index("section:claims") > out.read_text().index("section:pcm")
    assert results.main(["--render-only", "--output", str(out)]) == 0
    text = out.read_text()
    assert text.index("section:claims") < text.index("## digits") < text.index("section:pcm")
    assert text.count("<!-- section:claims -->") == 1


def test_claims_verdicts_are_computed_from_the_numbers(tmp_path: Path) -> None:
    cells_ok = report.task_cells(_task(0.90, 0.891, 0.85), 0, True)
    cells_far = report.task_cells(_task(0.90, 0.80, 0.85), 0, True)
    rows = claims.claims({"a": (cells_ok, True), "b": (cells_far, True)}, ["shallow"])
    verdict = {c: v for c, _, v in rows}
    ostl = (
        "Tuned alike and updating once per sequence, OSTL is within 2 % of BPTT (shallow networks)"
    )
    assert verdict[ostl] == "**mixed**: yes on 1 of 2 tasks (a +1.0 %)"
    osttp = ostl.replace("OSTL is within 2", "OSTTP is within 5")
    assert verdict[osttp] == "**does not hold**: yes on 0 of 2 tasks"
    rows = claims.claims({"a": (cells_ok, True)}, ["shallow"])
    assert {c: v for c, _, v in rows}[ostl].startswith("**holds**: yes on 1 of 1")
    assert all(v == "a test (run by `make test`)" for _, e, v in rows if "::" in e)
    elsewhere = claims.claims({}, ["shallow"], root=tmp_path)  # no such test files there
    assert all(v == "**no such test**" for _, e, v in elsewhere if "::" in e)
    assert "not measured" in {v for _, _, v in elsewhere}


def test_the_truncated_bptt_claim_compares_the_online_columns() -> None:
    tbptt = [_rec("tbptt-8", "shallow", "online", 1, k, 0.8, 0.5) for k in (0, 1)]
    cells = report.task_cells(_task(0.90, 0.891, 0.85) + tbptt, 0, True)
    rows = {c: v for c, _, v in claims.claims({"a": (cells, True)}, ["shallow"])}
    claim = next(c for c in rows if "does better than truncated BPTT" in c)
    assert rows[claim] == "**holds**: yes on 1 of 1 tasks (a)"  # ostl online 0.891 > 0.8
    worse = [{**r, "test": 0.95} for r in tbptt]
    cells = report.task_cells(_task(0.90, 0.891, 0.85) + worse, 0, True)
    rows = {c: v for c, _, v in claims.claims({"a": (cells, True)}, ["shallow"])}
    assert rows[claim] == "**does not hold**: yes on 0 of 1 tasks"


def test_the_shared_lr_claim_reads_results_md_data() -> None:
    def run(rule: str, value: float) -> dict[str, Any]:
        return {"config": {"rule": rule}, "test_metric": value, "higher_is_better": True}

    data = {
        "x": {"runs": [run("bptt", 0.9), run("ostl", 0.89)]},
        "y": {"runs": [run("bptt", 0.9), run("ostl", 0.80)]},
    }
    row = claims.claims({}, ["shallow"], results_data=data)[-1]
    assert row[1].startswith("RESULTS.md") and row[2] == "**mixed**: yes on 1 of 2 tasks (x +1.1 %)"


def test_a_command_adds_to_the_section_and_a_changed_setting_starts_again() -> None:
    """Records of another rule or lr are kept, the same (rule, network, schedule, lr, seed) is
    replaced; each command is listed once; another budget drops the task's older runs."""
    old = (_task(0.9, 0.891, 0.85), {"t": _tmeta(True)})
    rnd = [{**r, "variant": "ostl-rnd", "test": 0.7} for r in _task(0.9, 0.891, 0.85)
           if r["variant"] == "ostl"]  # fmt: skip
    again = [{**r, "test": 0.5} for r in old[0] if r["variant"] == "osttp" and r["seed"] == 0]
    later = _tmeta(True, command="python scripts/fair.py --rules ostl-rnd", date="2026-02-02")
    records, tasks = data.merge(old, (rnd + again, {"t": later}))
    assert len(records) == len(old[0]) + len(rnd)
    assert sorted(r["test"] for r in records if r["variant"] == "osttp")[:2] == [0.5, 0.5]
    assert [c["command"] for c in tasks["t"]["commands"]] == [
        COMMAND["command"],
        later["commands"][0]["command"],
    ]
    text = report.section(records, {"tasks": tasks, "notes": {}})
    assert "| ostl-rnd | 0.7000 ± 0.0000 (n=2) · +22.22 % · lr 0.01 |" in text
    assert text.count("  - `python scripts/fair.py") == 2
    same = data.merge((records, tasks), ([], {"t": later}))[1]["t"]["commands"]
    assert len(same) == 2  # the same command again: listed once
    # settings read from runs of another version (an option added since) but the same budget
    # as asked: the same table
    asked = {**_tmeta(True), "request": {"task": "t", "epochs": 2}}
    other = {**asked, "settings": {**asked["settings"], "task_options": {"new_option": 1}}}
    kept, _ = data.merge((records, {"t": asked}), (rnd, {"t": other}))
    assert len(kept) == len(records)
    again, _ = data.merge((records, {"t": asked}), (rnd, {"t": asked}), fresh=True)
    assert again == rnd  # --fresh: the task starts again from the command's runs
    changed = {**asked, "request": {"task": "t", "epochs": 9}}
    records, tasks = data.merge((records, {"t": asked}), (rnd, {"t": changed}))
    assert records == rnd and tasks["t"]["request"]["epochs"] == 9


def test_a_command_run_again_with_every_run_kept_keeps_its_earlier_entry() -> None:
    first = {**COMMAND, "ran": 40, "wall": 300.0}
    rerun = {**COMMAND, "ran": 0, "kept": 40, "wall": 2.0}
    old = (_task(0.9, 0.891, 0.85), {"t": {**_tmeta(True), "commands": [first]}})
    _, tasks = data.merge(
        old, (_task(0.9, 0.891, 0.85), {"t": {**_tmeta(True), "commands": [rerun]}})
    )
    assert tasks["t"]["commands"] == [first]
    redone = {**COMMAND, "ran": 5, "kept": 35, "wall": 30.0}
    _, tasks = data.merge(old, ([], {"t": {**_tmeta(True), "commands": [redone]}}))
    assert tasks["t"]["commands"] == [redone]
    line = report.command_line(redone)
    assert "ran 5 runs (kept 35 from earlier commands) in 30 s wall" in line


def test_a_section_of_the_first_format_is_read_with_its_sweep_order() -> None:
    """Sections written before per-task commands: one meta for the whole command."""
    rs = [_rec("ostl", "shallow", "sequence", f, 0, 0.5, 0.5) for f in (1, 0.5, 2)]
    meta = {"command": "c", "machine": "m", "date": "d", "wall": 1.0, "ran": 3, "jobs": 2,
            "quick": False, "tasks": ["t"], "seeds": [0, 1], "factors": [1, 0.5, 2],
            "settings": {"t": _tmeta(True)["settings"]}, "budgets": {"t": "b"}}  # fmt: skip
    blob = json.dumps({"meta": meta, "columns": sorted(rs[0]), "rows": [
        [r[k] for k in sorted(rs[0])] for r in rs]})  # fmt: skip
    records, tasks = data.embedded(f"<!-- fair-data\n{blob}\n-->")
    assert [r["order"] for r in records] == [0, 1, 2]  # ties go to the first factor, 1
    assert report.cell(records, 0, True).lr == 0.01
    assert tasks["t"]["commands"][0]["factors"] == [1, 0.5, 2] and tasks["t"]["budget"] == "b"


# -- the plan and the kept runs ------------------------------------------------------------
def test_the_plan_shares_bptt_runs_and_builds_the_deep_network() -> None:
    sweep, rest = fair.plan(["digits"], ["bptt", "ostl-rnd"], ["shallow", "deep"],
                            ["sequence", "online"], [1, 0.5, 2], [0, 1, 2], False)  # fmt: skip
    bptt = [j for j in sweep if j.variant == "bptt"]
    assert len(bptt) == 2 * 3 and {j.schedule for j in bptt} == {"sequence"}
    assert len(sweep) == 6 + 2 * 2 * 3 and all(len(rest[j]) == 2 for j in sweep)
    assert {j.lr for j in sweep} == {0.002, 0.001, 0.004} and {j.seed for j in sweep} == {0}
    assert [j.order for j in sweep[:3]] == [0, 1, 2]
    deep = next(j for j in sweep if j.variant == "ostl-rnd" and j.net == "deep")
    cfg = fair.request(deep, fair.budget("digits", False)[0])
    assert cfg.hidden == (128, 128) and cfg.rule == "ostl"
    assert cfg.rule_options == {"feedback": "random", "seed": 0} and cfg.schedule == deep.schedule
    seed2 = fair.request(rest[deep][1], fair.budget("digits", False)[0])
    assert seed2.rule_options == {"feedback": "random", "seed": 2} and seed2.seed == 2
    quick = fair.budget("digits", True)[0]
    assert quick.epochs == 1 and quick.task_options["train_size"] <= 256


def _keep(runs: Path, job: fair.Job, quick: bool, valid: float, test: float) -> dict[str, Any]:
    """A kept record of ``job`` (as a finished run writes it), with made-up metrics."""
    req = fair.request(job, fair.budget(job.task, quick)[0]).to_json()
    record = {**dataclasses.asdict(job), "request": req, "test": test, "valid": valid, "wall": 0.5,
              "result": {"higher_is_better": False}}  # fmt: skip
    path = runs / f"{job.path}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return record


def test_kept_runs_are_not_run_again_and_the_lr_follows_validation(tmp_path: Path) -> None:
    """Every run kept: the protocol runs nothing (made-up numbers come back untouched) and takes
    the seeds at the lr of the best validation (lower is better here), not the best test."""
    sweep, rest = fair.plan(["chorales"], ["ostl"], ["shallow"], ["sequence"], [1, 2], [0, 1],
                            quick=True)  # fmt: skip
    runs = tmp_path / "runs"
    for job, valid, test in zip(sweep, (3.0, 2.0), (1.0, 9.0)):  # lr × 2: best validation
        _keep(runs, job, True, valid, test)
        _keep(runs, rest[job][0], True, valid, test + 0.5)
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*.json")}
    records, ran = fair.protocol((sweep, rest), runs, n_jobs=1, quick=True)
    assert ran == 0
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*.json")} == stamps
    assert [(r["factor"], r["seed"], r["test"]) for r in records] == [
        (1, 0, 1.0), (2, 0, 9.0), (2, 1, 9.5)
    ]  # fmt: skip


@pytest.mark.parametrize("valids,extra", [
    ((0.5, 0.4, 0.6), [(4, 0.7), (8, 0.8)]),  # the best at the largest: on to x4, x8 (limit 2)
    ((0.5, 0.6, 0.4), [(0.25, 0.7), (0.125, 0.8)]),  # at the smallest: on to x1/4, x1/8
    ((0.5, 0.4, 0.6), [(4, 0.5)]),  # x4 is worse: the best (x2) is no longer at the edge
    ((0.6, 0.5, 0.4), []),  # inside the range: no more runs
])  # fmt: skip
def test_the_sweep_goes_on_past_an_edge_while_the_best_is_there(
    tmp_path: Path, valids: tuple[float, ...], extra: list[tuple[float, float]]
) -> None:
    """Kept runs with made-up validation metrics: the extensions asked for are those expected,
    the seeds run at the lr the whole sweep chose."""
    sweep, rest = fair.plan(["chorales"], ["ostl"], ["shallow"], ["sequence"], [1, 0.5, 2],
                            [0, 1], quick=True)  # fmt: skip
    runs = tmp_path / "runs"
    for job, valid in zip(sweep, valids):
        _keep(runs, job, True, -valid, 1.0)  # lower is better: the negated metric
    base, job = sweep[0], sweep[0]
    for order, (factor, valid) in enumerate(extra, start=3):
        job = dataclasses.replace(base, factor=factor, lr=round(0.005 * factor, 12), order=order)
        _keep(runs, job, True, -valid, 1.0)
    best = max([*zip((1, 0.5, 2), valids), *extra], key=lambda fv: fv[1])[0]
    _keep(runs, dataclasses.replace(base, factor=best, lr=round(0.005 * best, 12), seed=1),
          True, 0.0, 2.0)  # fmt: skip
    records, ran = fair.protocol((sweep, rest), runs, n_jobs=1, quick=True, extend=2)
    assert ran == 0  # every run asked for was kept: no other was asked for
    assert [r["factor"] for r in records if r["seed"] == 0] == [1, 0.5, 2, *(f for f, _ in extra)]
    assert [(r["factor"], r["test"]) for r in records if r["seed"] == 1] == [(best, 2.0)]


def test_a_kept_run_of_another_request_or_cut_short_is_run_again(tmp_path: Path) -> None:
    job = fair.Job("digits", "ostl", "shallow", "sequence", 1, 0.002, 0)
    req = fair.request(job, fair.budget("digits", True)[0]).to_json()
    path = tmp_path / "r.json"
    assert fair.load_record(path, req) is None  # absent
    path.write_text(json.dumps({"request": req, "test": 0.5}))
    assert fair.load_record(path, req) == {"request": req, "test": 0.5}
    assert fair.load_record(path, {**req, "epochs": 7}) is None  # the budget changed
    path.write_text(json.dumps({"request": req})[:20])  # killed mid-write (by another tool)
    assert fair.load_record(path, req) is None


def test_bad_lists_are_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in [
        (["--rules", "ostl,nope"], "--rules: unknown ['nope']"),
        (["--tasks", "ptb"], "--tasks: unknown ['ptb']"),
        (["--lrs", "1,-2"], "--lrs positive"),
        (["--seeds", "a"], "--seeds takes integers"),
        (["--extend", "-1"], "--extend takes a count >= 0"),
    ]:
        with pytest.raises(SystemExit) as e:
            fair.main([*argv, "--out", "/nonexistent/R.md"])
        assert e.value.code == 2 and message in capsys.readouterr().err


# -- one real run ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_quick_run_on_digits_writes_the_section_and_resumes(tmp_path: Path) -> None:
    """Two rules, one seed, one lr, the quick budget: real runs, then a rerun that runs none."""
    out, runs = tmp_path / "R.md", tmp_path / "runs"
    write_section(out, "pcm", "## PCM\n\nkept")
    argv = ["--quick", "--tasks", "digits", "--rules", "bptt,ostl", "--seeds", "0", "--lrs", "1",
            "--nets", "shallow", "--schedules", "sequence,online", "--out", str(out),
            "--runs", str(runs)]  # fmt: skip
    assert fair.main(argv) == 0
    kept = sorted(p.relative_to(runs).as_posix() for p in runs.rglob("*.json"))
    assert kept == [
        "digits/shallow/online/ostl/lr0.002-seed0.json",
        "digits/shallow/sequence/bptt/lr0.002-seed0.json",
        "digits/shallow/sequence/ostl/lr0.002-seed0.json",
    ]
    record = json.loads((runs / kept[2]).read_text())
    assert record["valid"] == record["result"]["valid_metric"]
    assert record["result"]["config"]["schedule"] == "sequence"
    text = read_sections(out.read_text())
    assert "## PCM\n\nkept" in text["pcm"]
    fair_text = text[fair.SECTION]
    assert "### digits: test accuracy (higher is better)" in fair_text
    assert "| bptt |" in fair_text and "| ostl |" in fair_text and "Quick budget" in fair_text
    # OSTL with one stateful layer, once per sequence, equals BPTT: the same test accuracy
    assert "OSTL within 2 % of BPTT under the sequence schedule: shallow **yes** (+0.00 %)" in (
        fair_text
    )
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*.json")}
    assert fair.main(argv) == 0  # everything kept: nothing runs again
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*.json")} == stamps


def test_the_recorded_command_leaves_out_where_runs_and_the_section_go() -> None:
    argv = ["--tasks", "recall", "--runs", "/tmp/x/runs", "--out=/abs/R.md", "--jobs", "2"]
    assert fair.recorded(argv) == "python scripts/fair.py --tasks recall --jobs 2"
    old = "python scripts/fair.py --tasks recall --runs /tmp/x --out /abs/R.md --jobs 2"
    assert fair.recorded(old) == "python scripts/fair.py --tasks recall --jobs 2"
