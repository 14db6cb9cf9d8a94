"""The options of ``ostl train`` and ``ostl compare`` are generated from TrainConfig's fields."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

import pytest

from ostl.run.cli import build_parser, main
from ostl.run.config import TrainConfig
from ostl.run.options import flag, given


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]  # type: ignore[no-any-return]


def _options(name: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in _subparser(name)._actions}


@pytest.mark.parametrize("command", ["train", "compare"])
def test_every_train_config_field_is_an_option(command: str) -> None:
    options = _options(command)
    for f in fields(TrainConfig):
        if command == "compare" and f.name == "rule":  # compare takes --rules
            assert f.name not in options
            continue
        assert f.name in options, f"TrainConfig.{f.name} has no option on ostl {command}"
        action = options[f.name]
        assert flag(f) in action.option_strings and action.default is None
        assert action.help, f"--{f.name} has no help"
        if f.name not in ("task_options", "rule_options"):  # KEY=VALUE pairs: no default
            assert "(default: " in action.help, action.help


def test_the_generated_names_are_the_documented_ones() -> None:
    flags = {s for a in _subparser("train")._actions for s in a.option_strings}
    for name in (
        "--task", "--rule", "--cell", "--hidden", "--recurrent", "--epochs", "--batch-size",
        "--lr", "--schedule", "--seed", "--device", "--threads", "--task-opt", "--hardware",
        "--pcm-update", "--nonfinite", "--compile", "--rule-opt", "--config", "--nproc", "--resume",
        "--checkpoint-every", "--keep", "--stop-after-steps", "--out", "--no-progress",
        "--log-every", "--tensorboard",
    ):  # fmt: skip
        assert name in flags, name
    compare = {s for a in _subparser("compare")._actions for s in a.option_strings}
    assert {"--rules", "--quick", "--out", "--no-progress", "--task-opt"} <= compare


def test_every_field_given_on_the_command_line_reaches_the_config() -> None:
    argv = [
        "train", "--task", "Digits", "--rule", "OSTTP", "--cell", "LIF", "--hidden", "16", "8",
        "--recurrent", "--epochs", "2", "--batch-size", "4", "--lr", "0.5", "--schedule",
        "sequence", "--seed", "0", "--device", "cpu", "--threads", "2", "--task-opt", "steps=3",
        "--hardware", "pcm", "--pcm-update", "offline", "--nonfinite", "skip", "--compile",
    ]  # fmt: skip
    args = build_parser().parse_args(argv)
    want: dict[str, Any] = {
        "task": "digits", "rule": "osttp", "cell": "lif", "hidden": (16, 8), "recurrent": True,
        "epochs": 2, "batch_size": 4, "lr": 0.5, "schedule": "sequence", "seed": 0,
        "device": "cpu", "threads": 2, "hardware": "pcm", "pcm_update": "offline",
        "nonfinite": "skip", "compile": True,
    }  # fmt: skip
    assert given(args) == want
    assert set(want) | {"task_options", "rule_options"} == {f.name for f in fields(TrainConfig)}
    assert args.task_options == ["steps=3"]
    assert given(build_parser().parse_args(["train"])) == {}  # nothing given: nothing set


@pytest.mark.parametrize("argv", [["--hidden", "128", "64"], ["--hidden", "128,64"]])
def test_hidden_sizes_with_spaces_or_commas(argv: list[str]) -> None:
    assert build_parser().parse_args(["train", *argv]).hidden == (128, 64)


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for shown in (
        "task name (ostl list) (default: digits)",
        "(default: the task's)",
        "checkpoints to keep (default: 3)",
        "(default: raise)",
        "(default: off)",
    ):
        assert shown in text, shown


def test_resume_refuses_every_config_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", ".", "--hardware", "pcm", "--task-opt", "steps=3"]) == 2
    err = capsys.readouterr().err
    assert "drop --task-opt, --hardware" in err and err.count("\n") == 1
