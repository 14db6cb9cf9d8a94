"""A run's rule options (``TrainConfig.rule_options``, ``--rule-opt NAME=VALUE``): typed from the
rule's signature, checked, used to build the run's rule, saved in the run folder and kept by
resume; a configuration written before the field existed still loads and resumes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import ostl
from ostl.errors import OptionError
from ostl.rules import OSTL, OSTTP
from ostl.run.cli import main
from ostl.run.config import TrainConfig
from ostl.run.listing import format_listing
from ostl.run.model import read_config
from ostl.run.resume import check_same_config
from ostl.run.rule_options import make_rule, parse_rule_options, rule_option_types
from ostl.run.run import Run
from ostl.run.train import resume, train

from .tiny import tiny

RANDOM = {"feedback": "random"}
DEEP = tiny(hidden=(8, 8), epochs=1)


# -- parsing and checking ------------------------------------------------------------------
def test_values_are_typed_from_the_rule_signature() -> None:
    assert parse_rule_options("ostl", ["feedback=random", "seed=3"]) == {
        "feedback": "random",
        "seed": 3,
    }
    opts = parse_rule_options("osttp", ["scale=0.5", "distribution=normal"])
    assert opts == {"scale": 0.5, "distribution": "normal"} and isinstance(opts["scale"], float)
    assert parse_rule_options("osttp", ["scale=none"]) == {"scale": None}  # float | None
    assert parse_rule_options("bptt", ["truncation=5"]) == {"truncation": 5}
    assert parse_rule_options("OSTL", []) == {}
    # only int/float/str/bool options are a run's (a torch.dtype is not)
    assert "trace_dtype" not in rule_option_types("ostl")
    assert list(rule_option_types("eprop")) == ["feedback", "seed", "jacobians"]


@pytest.mark.parametrize(
    ("rule", "pairs", "message"),
    [
        ("ostl", ["scale=0.5"], "rule 'ostl' has no option 'scale'"),
        ("ostl", ["seed=abc"], "option seed='abc': expected an integer"),
        ("ostl", ["seed=1.5"], "expected an integer"),
        ("osttp", ["scale=big"], "expected a number or none"),
        ("ostl", ["feedback"], "expected KEY=VALUE"),
        ("ostl", ["trace_dtype=float64"], "has no option 'trace_dtype'"),
        ("nope", ["seed=1"], "unknown rule 'nope'"),
    ],
)
def test_a_bad_option_is_one_line_naming_the_rule_options(
    rule: str, pairs: list[str], message: str
) -> None:
    with pytest.raises(OptionError) as e:
        parse_rule_options(rule, pairs)
    text = str(e.value)
    assert message in text and "\n" not in text
    if rule != "nope":
        assert "its options are" in text and "seed (int, default 0)" in text


def test_the_config_checks_types_and_values_of_the_rule() -> None:
    make_rule("osttp", {"scale": 1})  # an int where a float goes
    for cfg, message in [
        (TrainConfig(rule="ostl", rule_options={"feedback": "bogus"}), "feedback must be"),
        (TrainConfig(rule="ostl", rule_options={"seed": "3"}), "expected an integer"),
        (TrainConfig(rule="ostl", rule_options={"seed": True}), "expected an integer"),
        (TrainConfig(rule="bptt", rule_options=RANDOM), "rule 'bptt' has no option 'feedback'"),
        (TrainConfig(rule="osttp", rule_options={"distribution": "cauchy"}), "distribution"),
    ]:
        with pytest.raises(OptionError, match=message) as e:
            cfg.check()
        assert "its options are" in str(e.value)
    assert isinstance(make_rule("OSTL", RANDOM), OSTL)
    assert make_rule("osttp", {"scale": 0.5}).options()["scale"] == 0.5


# -- the run builds the rule with its options ---------------------------------------------
def _sequence(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    xs = (torch.rand(5, 3, run.net.n_in, generator=g) < 0.3).to(run.net.dtype)
    labels = torch.randint(0, run.net.n_out, (5, 3), generator=g)
    return xs, torch.nn.functional.one_hot(labels, run.net.n_out).to(run.net.dtype)


def test_a_run_with_random_feedback_computes_random_feedback_gradients() -> None:
    """Deep net: the run's rule gives OSTL(feedback="random")'s gradients, not plain OSTL's."""
    run = Run(replace(DEEP, rule_options=RANDOM), progress=False)
    assert run.cfg.rule_options == RANDOM
    xs, targets = _sequence(run)
    loss = run.task.loss_fn
    got = ostl.gradients(run.net, run.learner.rule, xs, targets, loss)
    want = ostl.gradients(run.net, OSTL(feedback="random"), xs, targets, loss)
    plain = ostl.gradients(run.net, OSTL(), xs, targets, loss)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in got)
    bottom = "layers.0.W"  # below the top hidden layer: its signal crosses the feedback
    assert not torch.allclose(got[bottom], plain[bottom])


def test_osttp_options_reach_the_run() -> None:
    run = Run(replace(DEEP, rule="osttp", rule_options={"scale": 0.25}), progress=False)
    assert isinstance(run.learner.rule, OSTTP) and run.learner.rule.scale == 0.25


@pytest.mark.parametrize("schedule,updates", [("online", 3 * 2), ("sequence", 3)])
def test_truncated_bptt_updates_at_each_window_end_except_under_sequence(
    schedule: str, updates: int
) -> None:
    """TBPTT (truncation=4 of 8 steps): two windows per sequence, an update at each window's
    end under online; once per sequence under sequence, as plain BPTT under both."""
    cfg = tiny(rule="bptt", steps=8, epochs=1, schedule=schedule)
    res = train(replace(cfg, rule_options={"truncation": 4}), progress=False)
    assert res.updates == updates  # 48 images: 3 batches of 16, 8 steps each
    assert train(cfg, progress=False).updates == 3
    assert Run(replace(cfg, rule_options={"truncation": 4})).learner.update_every == (
        4 if schedule == "online" else None
    )


def test_the_trained_weights_differ_from_plain_ostl(tmp_path: Path) -> None:
    a = train(DEEP, progress=False).network
    b = train(replace(DEEP, rule_options=RANDOM), tmp_path / "run", progress=False).network
    assert a is not None and b is not None
    assert not torch.equal(a.layers[0].W, b.layers[0].W)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["rule_options"] == RANDOM
    assert read_config(tmp_path / "run").rule_options == RANDOM
    _, cfg = ostl.run.model.load(tmp_path / "run")
    assert cfg.rule_options == RANDOM


def test_resume_keeps_the_rule_options(tmp_path: Path) -> None:
    """Stopped and resumed: the same weights as the uninterrupted random-feedback run."""
    cfg = replace(DEEP, rule_options=RANDOM)
    full = train(cfg, progress=False)
    part = train(cfg, tmp_path / "run", progress=False, checkpoint_every=2, stop_after_steps=5)
    assert part.stopped_at_step == 5
    done = resume(tmp_path / "run", progress=False)
    assert done.config.rule_options == RANDOM
    assert full.network is not None and done.network is not None
    a, b = full.network.state_dict(), done.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert done.test_metric == full.test_metric


def test_the_command_line_sets_and_saves_rule_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--task", "digits", "--hidden", "8", "--epochs", "1", "--batch-size", "16",
            "--task-opt", "steps=4", "--task-opt", "train_size=32", "--task-opt", "test_size=16",
            "--no-progress", "--rule", "osttp"]  # fmt: skip
    out = tmp_path / "run"
    opts = ["--rule-opt", "scale=0.5", "--rule-opt", "distribution=normal"]
    assert main([*argv, *opts, "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["rule_options"] == {"scale": 0.5, "distribution": "normal"}
    capsys.readouterr()
    assert main([*argv, "--rule-opt", "feedback=random", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "rule 'osttp' has no option 'feedback'" in err and err.count("\n") == 1
    assert "scale (float or none, default None)" in err


def test_ostl_list_shows_each_rule_options() -> None:
    listing = format_listing()
    assert "--rule-opt NAME=VALUE" in listing
    assert "options: recurrence=diagonal feedback=weights seed=0" in listing
    assert "options: feedback=symmetric seed=0 jacobians=auto" in listing


# -- configurations written before the field existed --------------------------------------
def test_an_old_config_without_rule_options_loads_and_runs(tmp_path: Path) -> None:
    old = tiny(epochs=1).to_json()
    del old["rule_options"]
    cfg = TrainConfig.from_json(old)
    assert cfg.rule_options == {}
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    (run / "config.json").write_text(json.dumps(old))  # as an older version wrote it
    net, loaded = ostl.run.model.load(run)
    assert loaded.rule_options == {} and net.layers[0].W.shape[0] == 8


def test_an_old_checkpoint_config_without_rule_options_is_the_same_run(tmp_path: Path) -> None:
    now = tiny().to_json()
    old = {k: v for k, v in now.items() if k != "rule_options"}
    check_same_config(old, now, tmp_path)  # the missing field is its default: {}
    with pytest.raises(ostl.errors.CheckpointError, match="rule_options"):
        check_same_config(old, {**now, "rule_options": RANDOM}, tmp_path)
