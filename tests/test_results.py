"""RESULTS.md comes from scripts/results.py: its tables are rendered from the per-run summaries
embedded in the file, and a run rerun from its embedded configuration gives the same number."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from ostl.run.config import TrainConfig
from ostl.run.train import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "RESULTS.md"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("results_script", ROOT / "scripts" / "results.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _without_machine_and_date(text: str) -> str:
    """The header names the machine and the date of the rendering, not of the runs."""
    return re.sub(r"Machine: .*?Written \d{4}-\d\d-\d\d\.", "", text, flags=re.S)


def test_results_md_is_exactly_what_the_script_renders_from_its_runs(tmp_path: Path) -> None:
    copy = tmp_path / "RESULTS.md"
    shutil.copy(RESULTS, copy)
    assert _script().main(["--render-only", "--output", str(copy)]) == 0
    assert _without_machine_and_date(copy.read_text()) == _without_machine_and_date(
        RESULTS.read_text()
    )


@pytest.mark.slow
def test_a_digits_run_of_results_md_reproduces(tmp_path: Path) -> None:
    """BPTT, seed 0, on digits (about a minute): the embedded configuration, trained again,
    gives the test accuracy that RESULTS.md reports."""
    data = _script()._load_existing(RESULTS)
    run = next(
        r
        for r in data["digits"]["runs"]
        if r["config"]["rule"] == "bptt" and r["config"]["seed"] == 0
    )
    result = train(TrainConfig.from_json(run["config"]), tmp_path / "run", progress=False)
    assert result.test_metric == run["test_metric"]
    assert result.steps == run["steps"]


def test_the_language_models_name_their_published_reference_and_the_distance() -> None:
    script = _script()
    line = script.published_line("ptb", 229.0)[-1]
    assert line.startswith("Published reference: 114.5, test perplexity") and "2.0× the" in line
    assert script.published_line("digits", 0.9) == [] and script.published_line("ptb", None) == []
