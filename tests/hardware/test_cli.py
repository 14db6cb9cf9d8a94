"""``ostl train --hardware pcm``: the run folder reports events and the metric after drift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ostl.run.cli import main
from ostl.run.train import TrainConfig, train

TINY = [
    "--task", "digits", "--hidden", "8", "--epochs", "1", "--batch-size", "16",
    "--task-opt", "steps=4", "--task-opt", "train_size=32", "--task-opt", "test_size=16",
    "--no-progress", "--hardware", "pcm",
]  # fmt: skip


@pytest.mark.parametrize(("rule", "update"), [("bptt", "offline"), ("osttp", "mixed")])
def test_train_on_pcm_reports_drift_and_events(
    rule: str, update: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["train", "--rule", rule, "--pcm-update", update, *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"PCM ({update})" in printed and "1y+comp" in printed
    hw = json.loads((out / "summary.json").read_text())["hardware"]
    assert hw["update"] == update
    assert set(hw["drift"]) == {f"{t}{c}" for t in ("1s", "1h", "1d", "1y") for c in ("", "+comp")}
    weights = 8 * 64 + 10 * 8  # the hidden W and the readout W
    assert hw["weights_on_pcm"] == weights
    if update == "offline":  # programmed once, at the end
        assert hw["program_events"] == weights and hw["training_events"] == 0
    else:  # mapped once, then mixed-precision events
        assert hw["program_events"] == weights + hw["training_events"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hardware"] == "pcm" and cfg["pcm_update"] == update


def test_bptt_online_on_pcm_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--rule", "bptt", "--pcm-update", "mixed", *TINY]) == 2
    assert "offline" in capsys.readouterr().err


def test_bad_pcm_update_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="pcm_update"):
        TrainConfig(hardware="pcm", pcm_update="sometimes").check()


@pytest.mark.slow
def test_osttp_learns_digits_online_on_pcm() -> None:
    """OSTTP, mixed precision, 3 epochs on 600 digits: well above chance (0.1)."""
    cfg = TrainConfig(
        task="digits",
        rule="osttp",
        epochs=3,
        hardware="pcm",
        pcm_update="mixed",
        task_options={"train_size": 600},
    )
    result = train(cfg, progress=False)
    assert result.test_metric > 0.5
    assert result.hardware is not None and result.hardware["drift"]["1y+comp"] > 0.4


def test_pcm_runs_refuse_checkpoints(tmp_path: Path) -> None:
    from ostl.errors import OptionError

    cfg = TrainConfig(task="digits", hidden=(8,), epochs=1, hardware="pcm")
    with pytest.raises(OptionError, match="not saved"):
        train(cfg, tmp_path / "run", progress=False, checkpoint_every=10)
