"""Where tensors live: every task trains and evaluates with its network on a CUDA device,
checked on a CPU-only machine with a faked device (``tests/fake_cuda.py``).

Under :class:`~tests.fake_cuda.FakeCuda` a CPU tensor meeting a ``cuda:0`` tensor raises as it
would on a GPU, so a run that reaches its end moved every batch, target and mask to the
network's device before they met its outputs (training steps, the training metric, validation
and test). The host-to-device copies are recorded: each must be asynchronous from pinned
memory. What cannot be faked (see ``tests/fake_cuda.py``): BPTT's training step, which records
an autograd graph on the device. A BPTT run is checked here up to that step (the run built on
the device, its first batch placed) and in its evaluation; the rest of the epoch loop is the
same code for every rule (checked with the online rules), and BPTT's training on a GPU
(``tests/test_gpu_train.py``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ostl.errors import DeviceError, OptionError, UnsupportedError
from ostl.run.cli import main
from ostl.run.evaluate import evaluate
from ostl.run.run import Run
from ostl.run.train import TrainConfig, train
from ostl.tasks import TASKS, Task
from ostl.tasks.data import Batch, OneHotSteps, one_hot, transfer
from ostl.tasks.metrics import (
    FrameNLL,
    MeanSquaredError,
    Metric,
    SequenceAccuracy,
    StepAccuracy,
    TokenNLL,
)

from .fake_cuda import DEVICE, AutogradLimit, Copy, FakeCuda, made_on_host
from .tiny_tasks import BATCH, TINY, built_tiny_task

# The run's memory meter reads the storage address of every parameter (a fake one has none).
pytestmark = pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor")

#: The rules whose training step runs on the fake device (all but BPTT: module docstring).
ONLINE = ["ostl", "osttp", "eprop"]
#: The tasks of the fast run (the others, and the other rules, are marked slow): one per kind
#: of targets (a tensor at every step, a list with None entries, labels of a stream whose state
#: carries over, a mask).
FAST = {"digits", "recall", "smnist", "ptb", "spoken-digits"}
#: The rules of the fast run.
QUICK = {"ostl", "bptt"}


def _task(name: str, root: Path) -> Task:
    """The tiny task ``name``, built once per session, as a copy whose data and network are
    made on the host (a real task's code runs there; the run moves its tensors)."""
    return made_on_host(copy.copy(built_tiny_task(name, root)))


@pytest.fixture
def cuda_available(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run checks that CUDA is there before it builds anything (``place``)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def _config(task: Task, rule: str) -> TrainConfig:
    return TrainConfig(
        task=task.name, rule=rule, device=DEVICE, epochs=1, batch_size=BATCH, hidden=(4,)
    )


def _cases(rules: list[str]) -> list[object]:
    """(task, rule) of every task: the fast ones plain, the others marked slow."""
    return [
        pytest.param(name, rule, marks=() if name in FAST and rule in QUICK else pytest.mark.slow)
        for name in TASKS
        for rule in rules
    ]


def test_every_registered_task_has_a_tiny_instance() -> None:
    assert set(TINY) == set(TASKS)


@pytest.mark.parametrize(("name", "rule"), _cases(ONLINE))
def test_training_and_evaluation_on_the_device(
    name: str, rule: str, tiny_root: Path, cuda_available: None
) -> None:
    task = _task(name, tiny_root)
    with FakeCuda() as fake:
        run = Run(_config(task, rule), task=task, progress=False)
        assert run.net.device == torch.device(DEVICE)
        fake.copies.clear()  # the network's own move is done
        result = run.execute()
    # the end of the run: trained, validated, tested (the values are placeholders: fake
    # tensors hold none)
    assert result.steps > 0 and result.updates > 0 and len(result.history) == 1
    assert isinstance(result.test_metric, float)
    # the batches' copies (one per tensor: inputs, each target, a mask), none other
    assert fake.copies and all(c.pinned and c.non_blocking for c in fake.copies), fake.copies


@pytest.mark.parametrize(("name", "rule"), _cases(["bptt"]))
def test_bptt_places_its_batches_and_evaluates_on_the_device(
    name: str, rule: str, tiny_root: Path, cuda_available: None
) -> None:
    """A BPTT run up to its first training step, and its evaluation (module docstring)."""
    task = _task(name, tiny_root)
    with FakeCuda() as fake:
        run = Run(_config(task, rule), task=task, progress=False)
        fake.copies.clear()
        with pytest.raises(AutogradLimit):  # the first training step
            run.execute()
        assert run.learner.steps == 0 and fake.copies  # the first batch was placed first
        assert all(c.pinned and c.non_blocking for c in fake.copies)
        for split in ("valid", "test"):
            assert isinstance(evaluate(run.net, task, split, BATCH), float)


def test_a_batch_left_on_the_host_is_caught(
    tiny_root: Path, cuda_available: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: without the move to the device, the run fails on the fake device."""
    task = _task("digits", tiny_root)
    monkeypatch.setattr(Batch, "to", lambda self, device: self)
    with FakeCuda(), pytest.raises((DeviceError, RuntimeError), match="cuda:0"):
        train(_config(task, "ostl"), task=task, progress=False)


# --- the metrics and Batch.to ---------------------------------------------------------------

T, B, K = 3, 2, 4


def _batches() -> dict[str, Batch]:
    """One batch of each target form (CPU tensors, as tasks make them)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, K, (T, B), generator=g)
    dense = one_hot(labels, K)
    mask = torch.tensor([[True, True], [True, False], [False, True]])
    xs = torch.rand(T, B, 5, generator=g)
    return {
        "tensor": Batch(xs, dense),
        "tensor+mask": Batch(xs, dense, mask),
        "list": Batch(xs, [None, dense[1], dense[2]]),
        "labels": Batch(xs, OneHotSteps(labels, K), mask, reset=False),
    }


METRICS: list[type[Metric]] = [SequenceAccuracy, StepAccuracy, MeanSquaredError, FrameNLL]


@pytest.mark.parametrize("form", list(_batches()))
@pytest.mark.parametrize("metric", [*METRICS, TokenNLL])
def test_metrics_take_host_batches_for_device_outputs(form: str, metric: type[Metric]) -> None:
    batch = _batches()[form]
    with FakeCuda() as fake:
        on_device = metric()
        on_device.update(torch.zeros(T, B, K, device=DEVICE), batch)
    assert isinstance(on_device.value(), float)  # a placeholder: fake tensors hold no values
    assert fake.copies and all(c.pinned and c.non_blocking for c in fake.copies)


@pytest.mark.parametrize("form", list(_batches()))
@pytest.mark.parametrize("metric", [*METRICS, TokenNLL])
def test_metrics_without_the_move_would_fail_on_the_device(
    form: str, metric: type[Metric], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control of the test above: the fake device catches a target or a mask left
    on the host, in every metric and every form of targets."""
    monkeypatch.setattr(Batch, "to", lambda self, device: self)
    with FakeCuda(), pytest.raises(RuntimeError, match="same device"):
        metric().update(torch.zeros(T, B, K, device=DEVICE), _batches()[form])


def test_batch_to_keeps_the_form_of_the_targets() -> None:
    """A real move (to the meta device, which every build has): each form comes back in its
    own form, None entries and ``reset`` kept."""
    batches = _batches()
    moved = {k: b.to("meta") for k, b in batches.items()}
    for b in moved.values():
        assert b.xs.is_meta
    assert isinstance(moved["tensor"].targets, torch.Tensor) and moved["tensor"].targets.is_meta
    assert moved["tensor+mask"].mask is not None and moved["tensor+mask"].mask.is_meta
    listed = moved["list"].targets
    assert isinstance(listed, list) and listed[0] is None
    assert all(t.is_meta for t in listed[1:] if t is not None)
    steps = moved["labels"].targets
    assert isinstance(steps, OneHotSteps) and steps.labels.is_meta and steps[0].is_meta
    assert (steps.n, moved["labels"].reset) == (K, False)


def test_batch_to_its_own_device_copies_nothing() -> None:
    batch = _batches()["labels"]
    same = batch.to("cpu")
    assert same.xs is batch.xs and same.mask is batch.mask
    assert isinstance(same.targets, OneHotSteps) and same.targets is batch.targets
    listed = _batches()["list"]
    assert all(a is b for a, b in zip(listed.to(torch.device("cpu")).targets, listed.targets))


def test_batch_to_cuda_copies_asynchronously_from_pinned_memory_once() -> None:
    batch = _batches()["tensor+mask"]
    with FakeCuda() as fake:
        moved = batch.to(DEVICE)
        again = moved.to(DEVICE)  # already there: no copy
    assert moved.xs.device == moved.targets.device == torch.device(DEVICE)  # type: ignore[union-attr]
    assert again.xs is moved.xs
    assert [c.shape for c in fake.copies] == [(T, B, K), (T, B), (T, B, 5)]
    assert all(c.pinned and c.non_blocking for c in fake.copies) and fake.pins == 3


def test_a_pinned_tensor_is_not_pinned_again() -> None:
    """A batch from a DataLoader with ``pin_memory=True`` is copied as it is."""
    with FakeCuda() as fake:
        pinned = torch.ones(3, 2).pin_memory()
        moved = transfer(pinned, DEVICE)
    assert moved.device == torch.device(DEVICE) and fake.pins == 1
    assert fake.copies == [Copy((3, 2), pinned=True, non_blocking=True)]


# --- PCM hardware ---------------------------------------------------------------------------


def test_pcm_on_cuda_is_refused_before_the_run_starts(tmp_path: Path, cuda_available: None) -> None:
    cfg = TrainConfig(task="digits", device=DEVICE, hardware="pcm", epochs=1)
    with pytest.raises(OptionError, match="runs on the CPU only"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.json").exists()  # only the folder's lock was taken


def test_pcm_on_cuda_is_one_line_from_the_command(
    cuda_available: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--hardware", "pcm", "--device", DEVICE, "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device cpu" in err, err


def test_a_crossbar_refuses_weights_off_the_cpu() -> None:
    from ostl.hardware.pcm import PCMConfig, PCMCrossbar

    with FakeCuda(), pytest.raises(UnsupportedError, match="on the CPU"):
        PCMCrossbar(torch.zeros(3, 2, device=DEVICE), PCMConfig())
