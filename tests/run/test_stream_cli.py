"""``ostl stream``: the folder it writes, its table, bad input, and interrupts."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from ostl.learner import Learner
from ostl.run.cli import main
from ostl.run.parser import build_parser
from ostl.run.sections import read_sections, write_section
from ostl.run.stream_outputs import STREAM_FILES, format_recovery, format_stream_table

# a short drift stream with two drifts, two rules, a small network: a second or two
DRIFT = [
    "--task", "drift", "--task-opt", "length=160", "--task-opt", "min_gap=50",
    "--task-opt", "mean_gap=50", "--hidden", "4", "--window", "20", "--threads", "1",
    "--no-progress",
]  # fmt: skip
RULES = ["--rules", "ostl,tbptt-4"]


def test_a_stream_run_writes_every_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    assert main(["stream", *DRIFT, *RULES, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| ostl |" in printed and "| tbptt-4 |" in printed and str(out) in printed
    for name in STREAM_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    table = (out / "table.md").read_text()
    assert "| ostl |" in table and "| tbptt-4 |" in table and "held memory" in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stream"]["drifts"] == [50, 100, 150] and not summary["interrupted"]
    rows = {r["rule"]: r for r in summary["rules"]}
    assert rows["ostl"]["steps"] == 160 and rows["tbptt-4"]["updates"] == 40
    assert len(rows["ostl"]["recovery"]) == 3
    assert rows["tbptt-4"]["held_bytes"] > rows["ostl"]["held_bytes"]
    errors = {r: np.load(out / "errors" / f"{r}.npy") for r in rows}
    assert errors["ostl"].shape == (160,) and errors["ostl"].dtype == np.float32
    assert rows["ostl"]["final_error"] == pytest.approx(float(errors["ostl"].mean()), rel=1e-5)
    lines = (out / "curves.csv").read_text().splitlines()
    assert lines[0] == "step,ostl:windowed,ostl:cumulative,tbptt-4:windowed,tbptt-4:cumulative"
    assert len(lines) == 161 and lines[-1].startswith("160,")


def test_the_command_in_config_json_reruns_the_run_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    assert main(["stream", *DRIFT, "--rules", "tbptt-2", "--seed", "3", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 3 and config["task_options"]["length"] == 160
    monkeypatch.chdir(tmp_path)  # rerun into the default folder
    capsys.readouterr()
    assert main(shlex.split(config["command"])[1:]) == 0
    # stderr is not a terminal: a line per rule (and one every 30 s in long runs), no bars
    err = capsys.readouterr().err
    assert err.startswith("tbptt-2 160 steps: prequential squared error ") and "\r" not in err
    (again,) = (tmp_path / "runs").iterdir()
    assert again.name.startswith("stream-drift-")
    assert json.loads((again / "config.json").read_text()) == config
    errors = np.load(out / "errors" / "tbptt-2.npy")
    np.testing.assert_array_equal(np.load(again / "errors" / "tbptt-2.npy"), errors)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "nope"], "unknown stream 'nope'"),
        (["--rules", "ostl,nope"], "unknown stream rule 'nope'"),
        (["--task-opt", "colour=red"], "no option 'colour'"),
        (["--cell", "nope"], "unknown cell 'nope'"),
        (["--task-opt", "length=0"], "length must be an integer >= 1"),
        (["--steps", "100000"], "has 160 steps, asked for 100,000"),
        (["--device", "cuda:7"], "device"),
    ],
)
def test_bad_input_is_one_line_status_2_and_no_folder(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    assert main(["stream", *DRIFT, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()


def test_full_bptt_is_refused_with_the_memory_it_would_need(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    assert main(["stream", *DRIFT, "--rules", "ostl,bptt", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and not out.exists()
    assert "full BPTT cannot learn on a stream" in err and "grows with the stream" in err
    assert "per step here" in err and "after the 160 steps of this stream" in err
    assert "tbptt-16" in err


def test_a_folder_holding_a_stream_run_is_refused_without_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "summary.json").write_text("{}")
    assert main(["stream", *DRIFT, *RULES, "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_a_rule_that_fails_mid_stream_keeps_the_steps_it_took(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"  # a step size far too large: the weights overflow within a few steps
    assert main(["stream", *DRIFT, "--rules", "ostl", "--lr", "1e30", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and err.count("\n") == 1 and "Traceback" not in err
    (row,) = json.loads((out / "summary.json").read_text())["rules"]
    assert row["interrupted"] and 0 < row["steps"] < 160
    assert np.load(out / "errors" / "ostl.npy").shape == (row["steps"],)
    assert "(stopped)" in (out / "table.md").read_text() and (out / "stream.png").is_file()


def _stop_at(call: int, stop: Callable[[], None]) -> Callable[..., Any]:
    """A Learner.step that calls through, and calls ``stop`` after its ``call``-th call."""
    real, calls = Learner.step, [0]

    def step(self: Learner, x: Any, target: Any = None) -> Any:
        y = real(self, x, target)
        calls[0] += 1
        if calls[0] == call:
            stop()
        return y

    return step


main_thread_only = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers can only be set in the main thread",
)


def _sigterm() -> None:
    signal.raise_signal(signal.SIGTERM)


def _ctrl_c() -> None:
    raise KeyboardInterrupt


@main_thread_only
@pytest.mark.parametrize(
    ("stop", "status", "name", "steps"),
    [
        (_sigterm, 143, "SIGTERM", 100),  # recorded: the step ends, is scored, the run stops
        (_ctrl_c, 130, "SIGINT", 99),  # raised inside step 100: that step is not scored
    ],
)
def test_an_interrupted_run_keeps_the_rules_done_and_the_partial_one(
    stop: Callable[[], None],
    status: int,
    name: str,
    steps: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "s"
    handler = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(Learner, "step", _stop_at(160 + 100, stop))  # step 100 of tbptt-4
    assert main(["stream", *DRIFT, *RULES, "--out", str(out)]) == status
    err = capsys.readouterr().err
    assert f"interrupted by {name} after step {steps} of tbptt-4" in err and str(out) in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert signal.getsignal(signal.SIGTERM) == handler  # restored
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["rule"]: r for r in summary["rules"]}
    assert summary["interrupted"] and rows["tbptt-4"]["interrupted"]
    assert rows["ostl"]["steps"] == 160 and not rows["ostl"]["interrupted"]
    assert rows["tbptt-4"]["steps"] == steps and rows["tbptt-4"]["length"] == 160
    assert np.load(out / "errors" / "tbptt-4.npy").shape == (steps,)
    assert f"| {steps} (stopped) |" in (out / "table.md").read_text()
    assert (out / "stream.png").is_file() and (out / "curves.csv").is_file()


def test_the_stream_options_show_their_defaults() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices["stream"]
    formatter = parser._get_formatter()
    shown = [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]
    for action in shown:
        if action.default not in (None, False, argparse.SUPPRESS):
            assert f"(default: {action.default})" in formatter._expand_help(action)


def test_the_table_formats_recovery_memory_and_stopped_runs() -> None:
    assert format_recovery([]) == "no drifts"
    assert format_recovery([None, None]) == "none of 2"
    assert format_recovery([100, None, 300]) == "200 / 300 (2/3)"
    row = {
        "rule": "ostl", "metric": "squared error", "final_error": 0.5, "last_window_error": None,
        "recovery": [40], "held_bytes": 2048, "steps_per_second": 1234.5, "updates": 7,
        "steps": 7, "interrupted": True,
    }  # fmt: skip
    table = format_stream_table([row])
    assert "prequential squared error" in table.splitlines()[0]
    assert "| ostl | 0.5000 | n/a | 40 / 40 (1/1) | 2.0 KiB | 1,234 | 7 | 7 (stopped) |" in table


# -- the Streams section of RESULTS.md -------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_entry() -> dict[str, Any]:
    row = {
        "rule": "ostl", "metric": "squared error", "steps": 10_000, "length": 10_000,
        "interrupted": False, "window": 500, "final_error": 0.25, "last_window_error": 0.125,
        "drifts": [4000], "recovery": [700], "tol": 0.1, "atol": 0.01, "held_bytes": 3072,
        "seconds": 10.0, "steps_per_second": 1000.0, "updates": 10_000,
    }  # fmt: skip
    tbptt = {**row, "rule": "tbptt-64", "recovery": [None], "held_bytes": 65536, "updates": 156}
    config = {
        "task": "drift", "rules": ["ostl", "tbptt-64"], "steps": 10_000, "window": 500,
        "seed": 0, "task_options": {"length": 10_000}, "lr": 0.003, "cell": "lstm",
        "hidden": [32], "device": "cpu", "threads": 1, "chunk": 1000, "tol": 0.1, "atol": 0.01,
        "command": "ostl stream --task drift",
    }  # fmt: skip
    meta = {
        "summary": "sum of sinusoids", "budget": "the whole stream", "wall": 42.0,
        "machine": "a test machine", "date": "2026-01-01", "command": "python scripts/results.py "
        "--streams drift",
    }  # fmt: skip
    stream = {"name": "drift", "kind": "regression", "metric": "squared error",
              "length": 10_000, "drifts": [4000]}  # fmt: skip
    return {"config": config, "stream": stream, "rules": [row, tbptt],
            "bptt_bytes_per_step": 1024.0, "meta": meta}  # fmt: skip


def test_the_streams_section_renders_its_rows_and_renders_again_from_its_data(
    tmp_path: Path,
) -> None:
    streams = _script("stream_results")
    text = streams.section({"drift": _fake_entry()})
    assert "### drift" in text and "Full BPTT cannot run on an endless stream" in text
    assert "Sum of sinusoids. Network: lstm [32]" in text and "1 drift at steps 4,000" in text
    assert (
        "| ostl | 0.2500 | 0.1250 | 700 / 700 (1/1) | 3.0 KiB | 1,000 | 10,000 | 10,000 |" in text
    )
    assert "| tbptt-64 | 0.2500 | 0.1250 | none of 1 | 64.0 KiB |" in text
    assert "about 1.0 KiB per step here, 9.8 MiB after these 10,000 steps" in text
    assert "42 s wall on a test machine" in text
    assert "command `python scripts/results.py --streams drift`" in text
    assert "runs/results/streams/drift/stream.png" in text
    assert "Not run yet: weather" in text
    # written into RESULTS.md as a marked section, it renders again from its embedded data,
    # and a rewrite of the task tables keeps it
    results = tmp_path / "RESULTS.md"
    shutil.copy(ROOT / "RESULTS.md", results)
    write_section(results, "streams", text)
    assert streams.load(results) == {"drift": _fake_entry()}
    before = results.read_text()
    assert _script("results").main(["--streams", "all", "--render-only", "--output",
                                    str(results)]) == 0  # fmt: skip
    assert results.read_text() == before
    assert _script("results").main(["--render-only", "--output", str(results)]) == 0
    assert read_sections(results.read_text())["streams"] == read_sections(before)["streams"]


def test_the_verdict_against_truncated_bptt_at_equal_memory_is_computed_both_ways() -> None:
    streams = _script("stream_results")
    entry = _fake_entry()  # equal errors; ostl recovers in 700, tbptt-64 never (6,000 to the end)
    text = streams.verdict(entry)
    assert text.startswith("**ostl against truncated BPTT at equal or larger memory** (tbptt-64)")
    assert "prequential error no higher" in text and "at least as fast (mean 700 steps" in text
    entry["rules"][1] = {**entry["rules"][1], "final_error": 0.2, "recovery": [600]}
    text = streams.verdict(entry)
    assert "error higher than tbptt-64" in text and "slower than tbptt-64" in text
    entry["rules"][1]["held_bytes"] = 1024  # less memory than ostl's: no peer
    assert "no comparison at equal memory" in streams.verdict(entry)
    entry["rules"] = entry["rules"][:1]
    assert streams.verdict(entry) == ""
