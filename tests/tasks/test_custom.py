"""Tasks of the user's own data (from_tensors, from_dataloader) and code (--task module:attr)."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ostl
from ostl.errors import DTypeError, NonFiniteError, OptionError, ShapeError, TargetError
from ostl.run.cli import main
from ostl.run.config import TrainConfig
from ostl.run.model import evaluate_model
from ostl.run.train import train
from ostl.tasks import Defaults, from_dataloader, from_tensors, get_task, parse_options
from ostl.tasks.data import as_list
from ostl.tasks.metrics import MeanSquaredError, SequenceAccuracy, StepAccuracy

from .conftest import train_steps

T, N, N_IN = 5, 20, 3


def _data(n: int = N, steps: int = T, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, n, 3) inputs and (n,) labels: the class is whether the inputs sum above zero."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(steps, n, N_IN, generator=g)
    return xs, (xs.sum((0, 2)) > 0).long()


def _batches(task: ostl.tasks.Task, split: str = "test", size: int = 64) -> list[Any]:
    return list(task.eval_batches(split, size))


# -- from_tensors ------------------------------------------------------------------------
def test_labels_per_sequence_become_one_hot_targets_at_every_step_or_the_last() -> None:
    task = from_tensors(train=_data(), test=_data(8, seed=1))
    assert (task.n_in, task.n_out, task.kind) == (N_IN, 2, "classification")
    assert isinstance(task.metric(), SequenceAccuracy) and task.loss_fn is ostl.losses.cross_entropy
    (batch,) = _batches(task)
    xs, labels = _data(8, seed=1)
    assert torch.equal(batch.xs, xs)
    targets = torch.stack(as_list(batch.targets))
    assert targets.shape == (T, 8, 2) and targets.dtype == torch.float32
    assert torch.equal(targets[2].argmax(-1), labels) and torch.equal(targets[0], targets[-1])
    last = from_tensors(train=_data(), test=_data(8, seed=1), targets_at="last")
    steps = as_list(_batches(last)[0].targets)
    assert steps[:-1] == [None] * (T - 1) and torch.equal(steps[-1].argmax(-1), labels)


def test_validation_is_a_seeded_split_of_train_unless_given() -> None:
    xs, ys = _data(n=40)
    task = from_tensors(train=(xs, ys), test=_data(8), valid_fraction=0.25, seed=3)
    assert (task.split_size("train"), task.split_size("valid")) == (30, 10)
    seen = torch.cat([task.data["train"][0], task.data["valid"][0]], 1)
    assert sorted(seen.sum((0, 2)).tolist()) == sorted(xs.sum((0, 2)).tolist())  # a partition
    again = from_tensors(train=(xs, ys), test=_data(8), valid_fraction=0.25, seed=3)
    assert torch.equal(again.data["valid"][0], task.data["valid"][0])
    other = from_tensors(train=(xs, ys), test=_data(8), valid_fraction=0.25, seed=4)
    assert not torch.equal(other.data["valid"][0], task.data["valid"][0])
    given = from_tensors(train=(xs, ys), test=_data(8), valid=_data(6, seed=2))
    assert (given.split_size("train"), given.split_size("valid")) == (40, 6)


def test_batch_first_and_numpy_give_the_same_task() -> None:
    xs, ys = _data()
    tm = from_tensors(train=(xs, ys), test=(xs, ys))
    bf = from_tensors(
        train=(xs.transpose(0, 1).numpy(), ys.numpy()),
        test=(xs.transpose(0, 1).double(), ys),
        batch_first=True,
    )
    for split in ("train", "valid", "test"):
        for a, b in zip(tm.data[split], bf.data[split]):
            assert torch.equal(a, b) and a.dtype == b.dtype
    assert bf.data["test"][0].dtype == torch.float32  # stored as the default network's dtype


def test_per_step_labels_and_regression_targets() -> None:
    xs, _ = _data()
    labels = (xs.sum(-1) > 0).long()  # (T, N): a class per step
    steps = from_tensors(train=(xs, labels), test=(xs, labels), n_classes=3)
    assert steps.n_out == 3 and isinstance(steps.metric(), StepAccuracy)
    targets = _batches(steps)[0].targets
    assert targets.shape == (T, N, 3) and torch.equal(targets.argmax(-1), labels)
    values = xs.cumsum(0)[..., :2]  # (T, N, 2) floats: regression at every step
    reg = from_tensors(train=(xs, values.double()), test=(xs, values))
    assert (reg.kind, reg.n_out) == ("regression", 2) and reg.loss_fn is ostl.losses.mse
    assert isinstance(reg.metric(), MeanSquaredError) and reg.metric().higher_is_better is False
    assert torch.equal(_batches(reg)[0].targets, values)
    final = from_tensors(train=(xs, values[-1]), test=(xs, values[-1]), targets_at="last")
    steps_final = as_list(_batches(final)[0].targets)
    assert steps_final[0] is None and torch.equal(steps_final[-1], values[-1])


def test_spike_inputs_are_detected_and_defaults_can_be_changed() -> None:
    xs, ys = _data()
    assert not from_tensors(train=(xs, ys), test=(xs, ys)).spiking_input
    spikes = from_tensors(train=(xs > 0, ys), test=(xs > 1, ys))
    assert spikes.spiking_input and spikes.data["train"][0].dtype == torch.float32
    assert spikes.defaults.cell == "lstm"
    task = from_tensors(train=(xs, ys), test=(xs, ys), defaults={"cell": "gru", "epochs": 2})
    assert (task.defaults.cell, task.defaults.epochs, task.defaults.hidden) == ("gru", 2, (64,))
    mine = Defaults(cell="rnn", hidden=(5,), epochs=1, batch_size=4, lr=0.1)
    assert from_tensors(train=(xs, ys), test=(xs, ys), defaults=mine).defaults is mine
    net = task.network(hidden=(7,))
    assert net.layers[0].cell.__class__.__name__ == "GRU" and net.n_out == 2


def _bad(**changes: Any) -> dict[str, Any]:
    xs, ys = _data()
    return {"train": (xs, ys), "test": (xs, ys), **changes}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (_bad(train=(torch.zeros(T, N), torch.zeros(N).long())), ShapeError, r"\(T, N, n_in\)"),
        (_bad(train=(torch.zeros(T, N, 3).long(), torch.zeros(N).long())), DTypeError, "float"),
        (_bad(train=([[1.0]], torch.zeros(N).long())), DTypeError, "torch.Tensor or numpy"),
        (_bad(train=(torch.zeros(T, N, 3), torch.zeros(N + 1).long())), ShapeError, "leading"),
        (_bad(train=(torch.zeros(T, N, 3), torch.zeros(N, 2, 2).long())), ShapeError, r"\(N,\)"),
        (_bad(kind="regression"), DTypeError, "floating-point values"),
        (_bad(kind="ranking"), OptionError, "kind must be one of"),
        (_bad(n_classes=1), TargetError, r"labels must be in 0\.\.0"),
        (_bad(targets_at="first"), OptionError, "'every' or 'last'"),
        (_bad(test=(torch.zeros(T, 4, 5), torch.zeros(4).long())), ShapeError, "5 features"),
        (_bad(test=(torch.zeros(T, 4, 3), torch.zeros(4, 2))), ShapeError, "every split"),
        (_bad(train=(torch.full((T, 1, 3), 1.0), torch.zeros(1).long())), ShapeError, "too few"),
        (_bad(valid_fraction=1.5), OptionError, "valid_fraction"),
        (_bad(defaults={"colour": 1}), OptionError, "unknown field"),
        (
            _bad(train=(torch.full((T, N, 3), math.nan), torch.zeros(N).long())),
            NonFiniteError,
            "NaN",
        ),
        (_bad(train=(torch.zeros(T, N, 3), -torch.ones(N).long())), TargetError, "from -1"),
        (_bad(train=(torch.zeros(T, N, 3), torch.ones(N, dtype=torch.bool))), DTypeError, "bool"),
        (_bad(train=(torch.zeros(T, N, 3),)), OptionError, "pair"),
    ],
)
def test_bad_data_and_options_are_clear_errors(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        from_tensors(**kwargs)


# -- from_dataloader ---------------------------------------------------------------------
def test_from_dataloader_reads_batch_first_loaders_like_tensors() -> None:
    xs, ys = _data()
    loader = DataLoader(TensorDataset(xs.transpose(0, 1), ys), batch_size=7)  # (B, T, n_in)
    task = from_dataloader(loader, loader, batch_first=True, valid_fraction=0.2)
    want = from_tensors(train=(xs, ys), test=(xs, ys), valid_fraction=0.2)
    for split in ("train", "valid", "test"):
        for a, b in zip(task.data[split], want.data[split]):
            assert torch.equal(a, b)
    # time-major batches (any iterable of (x, y)), per-step regression targets
    values = xs[..., :1]
    pairs = [(xs[:, :8], values[:, :8]), (xs[:, 8:], values[:, 8:])]
    reg = from_dataloader(pairs, pairs, valid=pairs)
    assert torch.equal(reg.data["valid"][1], values) and reg.kind == "regression"


_UNEVEN = [
    (torch.zeros(T, 2, 3), torch.zeros(2).long()),
    (torch.zeros(T + 1, 2, 3), torch.zeros(2).long()),
]


@pytest.mark.parametrize(
    ("loader", "error", "message"),
    [
        (TensorDataset(torch.zeros(4, T, 3), torch.zeros(4).long()), OptionError, "DataLoader"),
        ([torch.zeros(T, 4, 3)], OptionError, "pair"),
        ([], ShapeError, "no batches"),
        (_UNEVEN, ShapeError, "do not fit together"),
    ],
)
def test_from_dataloader_errors(loader: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        from_dataloader(loader, loader)


# -- training ----------------------------------------------------------------------------
def test_a_learner_trains_on_a_custom_task(rule: str) -> None:
    train_steps(from_tensors(train=_data(40), test=_data(8, seed=1)), rule)


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_ostl_run_train_end_to_end_and_load_with_the_task(kind: str, tmp_path: Path) -> None:
    xs, ys = _data(48)
    targets = ys if kind == "classification" else xs.cumsum(0)[..., :1]
    task = from_tensors(train=(xs, targets), test=_data(16, seed=1) if kind == "classification"
                        else (xs[:, :16], targets[:, :16]))  # fmt: skip
    cfg = TrainConfig(rule="ostl", hidden=(6,), epochs=2, batch_size=16)
    result = train(cfg, tmp_path / "run", progress=False, task=task)
    assert result.metric == ("accuracy" if kind == "classification" else "mse")
    assert math.isfinite(result.test_metric) and result.updates > 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["task"] == "custom" and saved["task_options"] == {} and saved["cell"] == "lstm"
    with pytest.raises(OptionError, match="cannot be rebuilt from its name.*task=task"):
        ostl.load(tmp_path / "run")
    net, _ = ostl.load(tmp_path / "run", task=task)
    assert evaluate_model(tmp_path / "run", task=task).value == result.test_metric
    assert result.network is not None
    torch.testing.assert_close(net(xs), result.network(xs))


# -- a task of the user's own code: --task module:attribute --------------------------------
MODULE = "OstlUserTasks"  # mixed case: a module path keeps its case
SOURCE = """
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ostl.tasks import from_tensors
from ostl.tasks.recall import Recall


def make_task(n: int = 48, steps: int = 4, last: bool = False, seed: int | None = None):
    g = torch.Generator().manual_seed(seed or 0)
    xs = torch.randn(steps, n + 16, 3, generator=g)
    ys = (xs.sum((0, 2)) > 0).long()
    return from_tensors(train=(xs[:, :n], ys[:n]), test=(xs[:, n:], ys[n:]),
                        targets_at="last" if last else "every")


make_task.quick = {"epochs": 1, "n": 24}


def typed(a: int, b: float = 1.0, c: bool = False, d: Literal["x", "y"] = "x",
          e: int | None = 3, f=2, g: list[int] | None = None, **rest):
    raise AssertionError("only parsed, never called")


@dataclass
class SmallRecall(Recall):
    delay: int = 2
    train_size: int = 32
    test_size: int = 16


def not_a_task():
    return [1, 2]


NUMBER = 3
"""


@pytest.fixture(scope="module")
def user_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The module written to a folder on sys.path (and removed from it afterwards)."""
    folder = tmp_path_factory.mktemp("user")
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE))
    (folder / "ostl_broken_tasks.py").write_text("x = 1 / 0\n")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    for name in (MODULE, "ostl_broken_tasks"):
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def user_run(user_module: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A run of TrainConfig(task="OstlUserTasks:make_task") in Python."""
    out = tmp_path_factory.mktemp("user-run") / "run"
    cfg = TrainConfig(task=f"{MODULE}:make_task", task_options={"n": 32}, hidden=(4,), epochs=2,
                      batch_size=16)  # fmt: skip
    return out, train(cfg, out, progress=False)


def test_get_task_builds_from_a_function_or_a_task_class(user_module: Path) -> None:
    task = get_task(f"{MODULE}:make_task", n=10, last=True)
    assert task.split_size("train") + task.split_size("valid") == 10 and task.targets_at == "last"
    small = get_task(f"{MODULE}:SmallRecall", delay=3)
    assert (type(small).__name__, small.delay, small.train_size) == ("SmallRecall", 3, 32)


def test_options_are_typed_from_annotations_and_fields(user_module: Path) -> None:
    pairs = ["a=2", "b=3", "c=yes", "d=y", "e=none", "f=5", "g=1,2", "h=free"]
    assert parse_options(f"{MODULE}:typed", pairs) == {
        "a": 2, "b": 3.0, "c": True, "d": "y", "e": None, "f": 5, "g": "1,2", "h": "free"
    }  # fmt: skip
    assert parse_options(f"{MODULE}:SmallRecall", ["delay=4"]) == {"delay": 4}
    with pytest.raises(OptionError, match="expected one of x, y"):
        parse_options(f"{MODULE}:typed", ["d=z"])
    with pytest.raises(ValueError, match="expected a int"):
        parse_options(f"{MODULE}:typed", ["a=two"])
    with pytest.raises(OptionError, match="has no option 'h'"):
        parse_options(f"{MODULE}:make_task", ["h=1"])


def test_the_run_records_the_path_and_rebuilds_the_task(user_run: tuple[Path, Any]) -> None:
    out, result = user_run
    saved = json.loads((out / "config.json").read_text())
    assert saved["task"] == f"{MODULE}:make_task" and saved["task_options"] == {"n": 32}
    assert result.config.task == f"{MODULE}:make_task"
    net, cfg = ostl.load(out)
    assert cfg == result.config
    held = result.network.state_dict()
    assert all(torch.equal(v, held[k]) for k, v in net.state_dict().items())
    assert evaluate_model(out).value == result.test_metric


def test_resume_rebuilds_the_task_from_config_json(user_module: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["train", "--task", f"{MODULE}:make_task", "--task-opt", "n=32", "--hidden", "4",
            "--epochs", "2", "--batch-size", "16", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main([*argv, "--stop-after-steps", "10", "--checkpoint-every", "5"]) == 0
    assert not (out / "summary.json").exists()  # stopped: resumable
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["task"] == f"{MODULE}:make_task" and summary["stopped_at_step"] is None
    assert summary["steps"] == 2 * 2 * 4  # 2 epochs of 2 batches (29 train sequences) of 4 steps


def test_cli_train_evaluate_and_compare_with_a_module_task(
    user_module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["--task", f"{MODULE}:make_task", "--task-opt", "n=24", "--task-opt", "last=true",
            "--hidden", "4", "--epochs", "1", "--batch-size", "8", "--no-progress"]  # fmt: skip
    assert main(["train", *argv, "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["task"] == f"{MODULE}:make_task" and cfg["task_options"] == {"n": 24, "last": True}
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert f"test accuracy: {summary['test_metric']!r}" in capsys.readouterr().out
    compare = ["compare", "--rules", "bptt,ostl", "--quick", *argv, "--out", str(tmp_path / "c")]
    assert main(compare) == 0
    assert "| bptt |" in capsys.readouterr().out
    quick = json.loads((tmp_path / "c" / "ostl" / "config.json").read_text())
    assert quick["task_options"] == {"n": 24, "last": True} and quick["epochs"] == 1


@pytest.mark.parametrize(
    ("task", "opts", "message"),
    [
        ("ostl_no_such_module:make_task", [], "no module named 'ostl_no_such_module'"),
        (f"{MODULE}:nope", [], f"module '{MODULE}' has no attribute 'nope'"),
        (f"{MODULE}:NUMBER", [], "is a int, expected an ostl.tasks.Task subclass or a function"),
        (f"{MODULE}:torch", [], "is a module"),
        (f"{MODULE}:not_a_task", [], "returned a list, expected an ostl.tasks.Task"),
        (f"{MODULE}:typed", [], "missing a required argument: 'a'"),
        (f"{MODULE}:make_task", ["colour=red"], "has no option 'colour'"),
        ("ostl_broken_tasks:make_task", [], "importing 'ostl_broken_tasks' failed: ZeroDivision"),
        ("a b:c", [], "expected MODULE:ATTRIBUTE"),
        ("custom", [], "cannot be rebuilt from its name"),
    ],
)
def test_a_bad_task_path_is_one_line_and_status_2(
    user_module: Path, task: str, opts: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = [x for o in opts for x in ("--task-opt", o)]
    assert main(["train", "--task", task, *pairs, "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err


def test_a_module_of_the_current_folder_is_found_and_names_the_run_folder(
    user_module: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As with ``python -m``: the ``ostl`` command finds a module in the folder it runs in."""
    here = tmp_path / "project"
    here.mkdir()
    (here / "ostl_here_tasks.py").write_text(f"from {MODULE} import make_task\n")
    monkeypatch.chdir(here)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(here))])
    monkeypatch.delitem(sys.modules, "ostl_here_tasks", raising=False)
    argv = ["train", "--task", "ostl_here_tasks:make_task", "--task-opt", "n=16", "--hidden", "3",
            "--epochs", "1", "--batch-size", "8", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    (run,) = (here / "runs").iterdir()
    assert run.name.startswith("ostl_here_tasks-make_task-ostl-")
    sys.modules.pop("ostl_here_tasks", None)


def test_registry_names_are_still_lowercased_and_paths_keep_their_case() -> None:
    from ostl.run.parser import build_parser

    parse = build_parser().parse_args
    assert parse(["train", "--task", "Digits"]).task == "digits"
    assert parse(["train", "--task", "My.Mod:Make"]).task == "My.Mod:Make"
