"""Trained models: saved with the run, loaded safely, evaluated again, exported one step."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ostl import Layer, Network, Readout
from ostl.errors import CheckpointError, OptionError
from ostl.run.checkpoint import list_checkpoints, load_checkpoint
from ostl.run.cli import main
from ostl.run.config import RunResult
from ostl.run.model import (
    MODEL,
    MODEL_LAST,
    evaluate_model,
    export_step,
    flatten_state,
    load,
    read_model,
)
from ostl.run.train import train

from .tiny import tiny

TINY = tiny(epochs=3)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunResult]:
    out = tmp_path_factory.mktemp("model") / "run"
    return out, train(TINY, out, progress=False, checkpoint_every=100)


def test_save_load_evaluate_round_trip_equals_the_run(run: tuple[Path, RunResult]) -> None:
    out, result = run
    assert result.network is not None
    net, cfg = load(out)
    assert cfg == result.config and type(net) is Network
    held = result.network.state_dict()  # the best validation epoch's weights
    assert all(torch.equal(v, held[k]) for k, v in net.state_dict().items())
    best = evaluate_model(out)
    assert best.value == result.test_metric and best.epoch == result.best_epoch
    assert best.metric == "accuracy" and best.path == out / MODEL
    last = evaluate_model(out, "last")
    assert last.value == result.final_test_metric and last.epoch == TINY.epochs
    # the file alone: its metadata holds the config
    alone, cfg_alone = load(out / MODEL)
    assert cfg_alone == cfg and all(torch.equal(v, held[k]) for k, v in alone.state_dict().items())
    _, meta = read_model(out / MODEL_LAST)
    assert meta["epoch"] == str(TINY.epochs) and int(meta["step"]) == result.steps


def test_ostl_evaluate_prints_the_test_metric(
    run: tuple[Path, RunResult], capsys: pytest.CaptureFixture[str]
) -> None:
    out, result = run
    summary = json.loads((out / "summary.json").read_text())
    cases = [(["evaluate", str(out)], "test_metric")]
    cases += [(["evaluate", str(out), "--which", "last"], "final_test_metric")]
    for argv, key in cases:
        assert main(argv) == 0
        line = capsys.readouterr().out
        assert line.startswith("test accuracy: ") and line.count("\n") == 1
        assert float(line.split()[2]) == summary[key] == getattr(result, key)


def test_load_checkpoint_takes_a_run_folder(run: tuple[Path, RunResult]) -> None:
    out, result = run
    saved = load_checkpoint(out)  # the run folder, not its checkpoints/
    assert saved["progress"]["epoch"] == TINY.epochs + 1
    newest = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert saved["progress"]["history"] == newest["progress"]["history"] == result.history


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned",))


def test_bad_models_raise_checkpoint_error(
    run: tuple[Path, RunResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = run
    monkeypatch.chdir(tmp_path)
    good = (out / MODEL).read_bytes()
    files = {
        "truncated": good[: len(good) // 2],
        "garbage": b"\x00not a model" * 10,
        "pickle": pickle.dumps(_Evil()),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    save_file({"w": torch.ones(2)}, str(tmp_path / "foreign"))  # safetensors, but not ours
    for name, message in [
        ("truncated", "not a readable model file"),
        ("garbage", "not a readable model file"),
        ("pickle", "not a readable model file"),
        ("foreign", "not an ostl model"),
        ("missing", "no such model file"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            load(tmp_path / name)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(OptionError, match="which must be one of best, last"):
        load(out, "worst")
    # a config whose network does not fit the weights
    other = tmp_path / "other"
    other.mkdir()
    (other / MODEL).write_bytes(good)
    (other / "config.json").write_text(json.dumps(replace(TINY, hidden=(9,)).to_json()))
    with pytest.raises(CheckpointError, match="do not fit the network"):
        load(other)
    # stopped before the first epoch ended: only the current weights
    (other / MODEL).rename(other / MODEL_LAST)
    with pytest.raises(CheckpointError, match="load which='last'"):
        load(other)


def test_ostl_evaluate_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such run folder" in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["evaluate", str(tmp_path)]) == 2  # a folder, not a run
    assert "config.json" in capsys.readouterr().err


@pytest.mark.parametrize(("cell", "recurrent"), [("snu", False), ("lif", True), ("lstm", True)])
def test_export_step_equals_net_step(cell: str, recurrent: bool) -> None:
    torch.manual_seed(0)
    net = Network([Layer(3, 5, cell, recurrent=recurrent), Layer(5, 4, cell), Readout(4, 2)])
    program = export_step(net, batch_size=2)
    step = program.module()
    state = net.init_state(2)
    flat = flatten_state(state)
    for _ in range(4):  # a few steps, each from the previous step's state
        x = torch.rand(2, 3)
        y_t, *new_flat = step(x, *flat)
        y, state = net.step(x, state)
        assert torch.equal(y_t, y)
        assert len(new_flat) == len(flatten_state(state))
        assert all(torch.equal(a, b) for a, b in zip(new_flat, flatten_state(state)))
        flat = tuple(new_flat)
    with pytest.raises(OptionError, match="batch_size"):
        export_step(net, 0)


def test_export_step_of_a_trained_run(run: tuple[Path, RunResult]) -> None:
    out, _ = run
    net, _ = load(out)
    program = export_step(net, 1)
    x = torch.rand(1, net.n_in)
    y_t, *_ = program.module()(x, *flatten_state(net.init_state(1)))
    assert torch.equal(y_t, net.step(x, net.init_state(1))[0])


def test_a_flipped_bit_in_a_model_or_a_checkpoint_is_refused(
    run: tuple[Path, RunResult], tmp_path: Path
) -> None:
    """Neither torch.load (it skips the zip's CRCs) nor safetensors (no checksum) notices a
    flipped bit in a weight: ostl checks the CRCs and its own SHA-256."""
    out, _ = run
    model = bytearray((out / MODEL).read_bytes())
    model[-5] ^= 0x10  # inside the last tensor's data
    (tmp_path / MODEL).write_bytes(model)
    with pytest.raises(CheckpointError, match="damaged"):
        load(tmp_path / MODEL)
    newest = list_checkpoints(out / "checkpoints")[-1]
    data = bytearray(newest.read_bytes())
    at = data.find(b"/data/0")  # the first tensor's entry; its bytes follow its local header
    assert at > 0
    data[at + 200] ^= 0x10
    (tmp_path / "step-000000000001.pt").write_bytes(data)
    with pytest.raises(CheckpointError, match="damaged: the checksum of its entry"):
        load_checkpoint(tmp_path / "step-000000000001.pt")
