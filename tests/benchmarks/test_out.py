"""The benchmark commands write a report only where --out says, and make bench says so."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import cli, denormal, distributed, soak

ROOT = Path(__file__).resolve().parents[2]

COMMANDS: dict[str, tuple[Callable[[list[str]], int], list[str]]] = {
    "python -m benchmarks": (cli.main, ["--quick"]),
    "python -m benchmarks.soak": (soak.main, ["--steps", "1000"]),
    "python -m benchmarks.denormal": (denormal.main, ["--steps", "4", "--window", "2"]),
    "python -m benchmarks.distributed": (distributed.main, ["--procs", "1"]),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_without_out_the_command_stops_before_measuring(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    main, argv = COMMANDS[command]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--out is required: --out BENCHMARKS.md updates the report" in err
    assert f"{command}: error:" in err and not any(tmp_path.iterdir())  # nothing written


def test_every_benchmark_command_in_the_makefile_names_its_out() -> None:
    lines = (ROOT / "Makefile").read_text().splitlines()
    calls = [
        line for line in lines if line.startswith("\t") and re.search(r"-m benchmarks\b", line)
    ]
    assert calls, "make bench runs python -m benchmarks"
    for line in calls:
        assert "--out BENCHMARKS.md" in line, line
