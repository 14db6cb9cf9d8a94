"""The schedules benchmark: the section from its rows, and a real run of two schedules."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.schedules import main, markdown

from ostl.run.sections import read_sections


def _row(schedule: str, seed: int, value: float, updates: int) -> dict[str, object]:
    return {"schedule": schedule, "seed": seed, "test_metric": value, "metric": "accuracy",
            "higher_is_better": True, "updates": updates, "steps": 100, "lr": 0.002,
            "epochs": 10, "wall": 1.0}  # fmt: skip


def test_the_section_gives_mean_std_and_updates_per_schedule() -> None:
    rows = [_row("online", 0, 0.9, 100), _row("online", 1, 0.8, 100), _row("every-4", 0, 0.7, 25)]
    meta = {"command": "python -m benchmarks.schedules", "machine": "a machine",
            "date": "today", "wall": 12.0, "jobs": 2, "task": "digits", "rule": "ostl",
            "seeds": [0, 1]}  # fmt: skip
    text = markdown(rows, meta)
    assert "| online | 0.8500 ± 0.0707 | 100 | 2 |" in text  # stdev of 0.9, 0.8
    assert "| every-4 | 0.7000 ± 0.0000 | 25 | 1 |" in text
    assert "Task digits, rule ostl" in text and "(10 epochs, Adam lr 0.002)" in text


def test_bad_schedules_and_seeds_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in ((["--schedules", "every-0"], "schedule must be online"),
                          (["--seeds", "a"], "comma-separated integers")):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--no-write"])
        assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow  # two short trainings in worker processes: ~20 s on a loaded 2-core machine
def test_a_real_run_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    argv = ["--task", "recall", "--schedules", "online,every-4", "--seeds", "0", "--epochs", "1",
            "--jobs", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = read_sections(out.read_text())["schedules"]
    assert "| online |" in text and "| every-4 |" in text and "Task recall, rule ostl" in text
