"""The training loop: run folder, reproducibility, schedules, memory accounting."""

from __future__ import annotations

import csv
import gc
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ostl.errors import OptionError
from ostl.rules import BPTT, OSTL, RULES
from ostl.run.compare import compare, format_bytes, format_table
from ostl.run.config import parse_schedule
from ostl.run.run import delayed_updates
from ostl.run.train import TrainConfig, resume, train, update_every

from .tiny import tiny

TINY = tiny(steps=5, test_size=32, hidden=(12,))


def test_train_writes_a_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(TINY, out, progress=False)
    assert {p.name for p in out.iterdir()} == {
        ".lock",  # the run folder's lock (ostl.run.lock), held while the run trained
        "config.json",
        "options.json",  # the checkpoint and logging options, kept by --resume
        "metrics.csv",
        "summary.json",
        "learning_curves.png",
        "raster.png",  # SNU hidden layer: spikes
        "model.safetensors",  # the best validation epoch's weights
        "model-last.safetensors",  # the last epoch's
    }
    assert result.network is not None and "network" not in result.to_json()
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert set(rows[0]) == {"epoch", "train_loss", "train_metric", "valid_metric", "seconds"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_metric"] == result.test_metric and 0 <= result.test_metric <= 1
    assert summary["metric"] == "accuracy" and summary["environment"]["torch"]
    assert 1 <= result.best_epoch <= 2 and 0 <= result.final_test_metric <= 1
    # 48 images / 16 per batch × 5 steps × 2 epochs, one update per step (online)
    assert result.steps == 30 and result.updates == 30
    assert result.seconds_per_step > 0 and result.peak_bytes > 0


def test_config_json_reproduces_the_run(tmp_path: Path) -> None:
    first = train(TINY, tmp_path / "a", progress=False)
    cfg = TrainConfig.from_json(json.loads((tmp_path / "a" / "config.json").read_text()))
    assert cfg.cell == "snu" and cfg.lr is not None  # task defaults are written out
    again = train(cfg, tmp_path / "b", progress=False)
    assert again.test_metric == first.test_metric
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in first.history]
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_json({"task": "digits", "colour": "red"})


def test_schedules() -> None:
    assert update_every(OSTL(), "online") == 1
    assert update_every(BPTT(), "online") is None  # BPTT needs the whole sequence
    assert update_every(OSTL(), "sequence") is None
    assert update_every(OSTL(), "every-4") == 4 and not delayed_updates(OSTL(), "every-4")
    assert update_every(OSTL(), "delayed") == 1 and delayed_updates(OSTL(), "delayed")
    assert update_every(OSTL(), "delayed-every-3") == 3
    assert update_every(BPTT(), "delayed-every-3") is None  # BPTT: once per sequence, in time
    assert not delayed_updates(BPTT(), "delayed-every-3")
    for bad in ("every-0", "every-", "delayed-4", "every-4-delayed", "Online", 4):
        with pytest.raises(OptionError, match="schedule must be online, sequence, every-K"):
            parse_schedule(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("schedule", "updates"), [("every-2", 18), ("delayed-every-2", 18)])
def test_every_k_and_delayed_schedules_train_as_their_learner(
    schedule: str, updates: int, tmp_path: Path
) -> None:
    """5 steps per sequence, 3 batches x 2 epochs: ceil(5 / 2) = 3 updates per sequence (the last
    at its end); delayed: as many updates, each one window late (another trajectory); the
    schedule is saved and a stopped run resumes to the same weights."""
    cfg = replace(TINY, schedule=schedule)
    result = train(cfg, tmp_path / "a", progress=False)
    assert result.updates == updates
    online = train(replace(TINY, schedule="every-2" if "delayed" in schedule else "online"),
                   progress=False)  # fmt: skip
    assert result.history[0]["train_loss"] != online.history[0]["train_loss"]
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["schedule"] == schedule
    # stopped at step 7 (mid-sequence: a delayed gradient in flight), resumed: the same run
    part = train(cfg, tmp_path / "b", progress=False, checkpoint_every=3, stop_after_steps=7)
    assert part.stopped_at_step == 7
    done = resume(tmp_path / "b", progress=False)
    assert done.updates == result.updates and done.test_metric == result.test_metric
    assert [h["train_loss"] for h in done.history] == [h["train_loss"] for h in result.history]


def test_one_stateful_layer_ostl_per_sequence_equals_bptt() -> None:
    """Same seed, same data, updates once per sequence: OSTL is exact, so the runs coincide."""
    cfg = replace(TINY, schedule="sequence", epochs=1)
    a = train(replace(cfg, rule="bptt"), progress=False)
    b = train(replace(cfg, rule="ostl"), progress=False)
    assert math.isclose(a.history[0]["train_loss"], b.history[0]["train_loss"], rel_tol=1e-4)
    assert a.test_metric == b.test_metric


def test_peak_memory_grows_with_t_for_bptt_only() -> None:
    def peak(rule: str, steps: int) -> int:
        opts = {**TINY.task_options, "steps": steps}
        return train(
            replace(TINY, rule=rule, epochs=1, task_options=opts), progress=False
        ).peak_bytes

    assert peak("bptt", 20) > 2 * peak("bptt", 5)
    assert peak("ostl", 20) == peak("ostl", 5)


def test_a_bptt_run_leaves_no_tensor_of_it_in_memory() -> None:
    """The memory meter's saved-tensor hook once tied each run's last autograd graph into
    cycles no collector frees (graph -> hook -> meter -> learner -> graph; a saved output
    holding its own grad_fn): every BPTT run in a process kept its graph, hundreds of MB for
    a long run. An LSTM (whose gates save their outputs) of 13 units marks the run's tensors."""
    gc.collect()
    before = _tensors_of_width(13)
    small = {"length": 2, "delay": 3, "train_size": 32, "test_size": 16}
    for rule in ("bptt", "ostl"):
        cfg = TrainConfig(task="recall", rule=rule, hidden=(13,), epochs=1, task_options=small)
        train(cfg, progress=False)
    gc.collect()
    assert _tensors_of_width(13) == before


def _tensors_of_width(n: int) -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.shape[-1:] == (n,))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("epochs", 0, "epochs"),
        ("batch_size", -1, "batch_size"),
        ("hidden", (0,), "hidden"),
        ("lr", -0.1, "lr"),
        ("rule", "magic", "unknown rule"),
        ("schedule", "weekly", "schedule"),
    ],
)
def test_bad_config_is_rejected(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train(replace(TINY, **{field: value}), progress=False)


def test_compare_writes_one_folder_per_rule_and_a_figure(tmp_path: Path) -> None:
    rules = [r for r in ("bptt", "ostl", "osttp") if r in RULES]
    results = compare(replace(TINY, epochs=1), rules, tmp_path, progress=False)
    assert [r.config.rule for r in results] == rules
    for name in (*rules, "compare.png", "table.md", "summary.json"):
        assert (tmp_path / name).exists()
    table = format_table(results)
    assert table.count("\n") == len(rules) + 1 and "peak memory" in table
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(12) == "12 B"


def test_model_selection_keeps_the_best_validation_epoch() -> None:
    result = train(replace(TINY, epochs=3), progress=False)
    valid = [h["valid_metric"] for h in result.history]
    assert valid[result.best_epoch - 1] == max(valid)
    assert valid.index(max(valid)) == result.best_epoch - 1  # the first of equal bests
    if result.best_epoch == 3:
        assert result.test_metric == result.final_test_metric
