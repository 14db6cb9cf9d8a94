"""Training on a CUDA device: ``ostl.run.train`` of every registered task with every rule of the
comparison (tiny budgets), its run folder, its saved model evaluated again on CUDA; batches
moved without a host synchronisation; PCM refused on CUDA (skipped without CUDA).

``tests/test_placement.py`` checks the same placement on a CPU-only machine with a faked device,
except BPTT's training step, which runs here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ostl.errors import OptionError, UnsupportedError
from ostl.run.cli import main
from ostl.run.model import evaluate_model
from ostl.run.train import TrainConfig, train
from ostl.tasks import TASKS
from ostl.tasks.data import Batch, OneHotSteps

from .tiny_tasks import BATCH, built_tiny_task

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

#: The rules of ``ostl compare``'s table (BENCHMARKS.md, RESULTS.md).
RULES = ["bptt", "ostl", "osttp", "eprop"]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", list(TASKS))
def test_train_on_cuda(name: str, rule: str, tiny_root: Path, tmp_path: Path) -> None:
    task = built_tiny_task(name, tiny_root)
    cfg = TrainConfig(
        task=name, rule=rule, device="cuda", epochs=2, batch_size=BATCH, hidden=(8,), seed=1
    )
    out = tmp_path / "run"
    result = train(cfg, out, task=task, progress=False)
    assert result.network is not None and result.network.device.type == "cuda"
    assert result.steps > 0 and result.updates > 0 and len(result.history) == 2
    for row in result.history:
        assert all(math.isfinite(v) for v in row.values()), row
    assert math.isfinite(result.test_metric) and math.isfinite(result.final_test_metric)
    assert (out / "model.safetensors").is_file() and (out / "summary.json").is_file()
    again = evaluate_model(out, device="cuda", task=task)  # the saved best weights, on CUDA
    assert again.value == pytest.approx(result.test_metric, rel=1e-5, abs=1e-6)


def _batches() -> list[Batch]:
    xs, labels = torch.rand(5, 3, 4), torch.randint(0, 6, (5, 3))
    dense = torch.nn.functional.one_hot(labels, 6).float()
    mask = torch.rand(5, 3) > 0.3
    return [
        Batch(xs, dense, mask),
        Batch(xs, [None, None, None, None, dense[4]]),
        Batch(xs, OneHotSteps(labels, 6), reset=False),
    ]


@pytest.mark.parametrize("batch", _batches(), ids=["tensor", "list", "labels"])
def test_batches_reach_cuda_without_a_host_synchronisation(batch: Batch) -> None:
    """Pinned memory and non-blocking copies: CUDA's sync debug mode would raise on a blocking
    copy from pageable memory."""
    torch.cuda.synchronize()
    old = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        moved = batch.to("cuda")
    finally:
        torch.cuda.set_sync_debug_mode(old)
    torch.cuda.synchronize()
    assert moved.xs.is_cuda and torch.equal(moved.xs.cpu(), batch.xs)
    targets = moved.targets
    if isinstance(targets, OneHotSteps):
        assert isinstance(batch.targets, OneHotSteps)
        assert targets.labels.is_cuda and torch.equal(targets.labels.cpu(), batch.targets.labels)
    elif isinstance(targets, torch.Tensor):
        assert targets.is_cuda and torch.equal(targets.cpu(), batch.targets)  # type: ignore[arg-type]
    else:
        assert [t is None for t in targets] == [t is None for t in batch.targets]
        assert all(t.is_cuda for t in targets if t is not None)
    if batch.mask is not None:
        assert moved.mask is not None and torch.equal(moved.mask.cpu(), batch.mask)


def test_pcm_on_cuda_is_refused_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = TrainConfig(task="digits", device="cuda", hardware="pcm", epochs=1)
    with pytest.raises(OptionError, match="runs on the CPU only"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.json").exists()  # only the folder's lock was taken
    assert main(["train", "--hardware", "pcm", "--device", "cuda", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device cpu" in err, err


def test_a_crossbar_refuses_cuda_weights() -> None:
    from ostl.hardware.pcm import PCMConfig, PCMCrossbar

    with pytest.raises(UnsupportedError, match="on the CPU"):
        PCMCrossbar(torch.zeros(3, 2, device="cuda"), PCMConfig())
