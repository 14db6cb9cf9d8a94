"""Data-parallel learning on torch.distributed (gloo on CPU): src/ostl/distributed.py.

Each test launches its processes through torchrun (``ostl.distributed.launch``): a few seconds
of start-up per launch, so one launch covers every rule.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import ostl
from ostl import distributed as dist
from ostl.run.cli import main
from ostl.tasks.data import Batch, OneHotSteps
from ostl.tasks.losses import cross_entropy

from .dist_worker import (
    CASES,
    MODES,
    B,
    data,
    delayed_reference,
    mode_learner,
    network,
    run_case,
    run_mode,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--task", "digits", "--hidden", "8", "--epochs", "2", "--batch-size", "15",
    "--task-opt", "steps=4", "--task-opt", "train_size=47", "--task-opt", "test_size=16",
    "--no-progress",
]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


# -- helpers, in this process --------------------------------------------------------------
def test_shards_cover_the_batch_and_differ_by_at_most_one() -> None:
    for n in (1, 2, 5, 7, 32):
        for w in (1, 2, 3, 4):
            sizes = [len(range(n)[dist.shard_range(n, r, w)]) for r in range(w)]
            assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
            joined = [i for r in range(w) for i in range(n)[dist.shard_range(n, r, w)]]
            assert joined == list(range(n))


def test_shard_batch_slices_inputs_targets_and_mask() -> None:
    xs = torch.arange(2 * 5 * 1.0).view(2, 5, 1)
    labels = torch.arange(10).view(2, 5) % 3
    mask = torch.ones(2, 5, dtype=torch.bool)
    full = Batch(xs, OneHotSteps(labels, 3), mask, reset=False)
    part = dist.shard_batch(full, 1, 2)
    assert part.xs[:, :, 0].tolist() == [[3, 4], [8, 9]] and part.reset is False
    assert part.mask.shape == (2, 2) and part.targets[1].argmax(-1).tolist() == [2, 0]
    listed = dist.shard_batch(Batch(xs, [None, xs[1]]), 0, 2)
    assert listed.targets[0] is None and listed.targets[1].shape == (3, 1)


def test_single_process_is_untouched() -> None:
    assert not dist.active() and dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    assert dist.all_reduce_sums([1.5, 2]) == [1.5, 2.0]
    assert not dist.launched() and dist.init("cpu") is False  # not under torchrun: nothing done
    assert dist.gather_to_main("s") == ["s"] and dist.this_rank_of(["s"]) == "s"
    with pytest.raises(ostl.OSTLError, match=r"written by 2 process\(es\).*--nproc 2"):
        dist.this_rank_of(["a", "b"])
    with pytest.raises(Exception, match="process group"):
        run_case_distributed_without_group()


def run_case_distributed_without_group() -> None:
    import ostl

    net = network()
    ostl.Learner(
        net, "ostl", loss_fn=lambda y, t: y.sum(), optimizer=torch.optim.SGD(net.parameters()),
        distributed=True,
    )  # fmt: skip


def test_a_rank_other_than_0_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ostl.run.train import TrainConfig, train

    cfg = TrainConfig(
        task="digits", hidden=(4,), epochs=1, batch_size=16,
        task_options={"steps": 2, "train_size": 16, "test_size": 8},
    )  # fmt: skip
    monkeypatch.setattr(dist, "is_main", lambda: False)
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.history and not (tmp_path / "run").exists()


# -- 2 processes ---------------------------------------------------------------------------
def test_two_processes_with_half_batches_equal_one_process_with_the_whole(tmp_path: Path) -> None:
    """float64, gloo: 2 × (3 and 2 sequences) = 1 × 5 after every online update, every rule."""
    status = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(ROOT / "tests" / "dist_worker.py"), str(tmp_path)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    start = network().state_dict()
    assert B % 2 == 1  # unequal shards: the reduction must weight them
    for name in CASES:
        want = run_case(name)  # one process, the whole batch
        for k, w in want.items():
            for r in range(2):
                torch.testing.assert_close(
                    ranks[r][name][k], w, rtol=1e-12, atol=1e-12, msg=f"{name} {k} rank {r}"
                )
        moved = max(float((want[k] - start[k]).abs().max()) for k in want)
        assert moved > 0.05, f"{name}: the weights barely moved ({moved})"
    # per-rank state for checkpoints: gathered on rank 0, each rank takes its own on resume
    assert ranks[0]["gathered"][1]["x"].tolist() == [1.0, 1.0] and ranks[1]["gathered"] is None
    assert [ranks[r]["mine"] for r in range(2)] == ["state of rank 0", "state of rank 1"]
    # targets on rank 0 only at some steps: both ranks stepped at every step with any target
    uneven = [ranks[r]["uneven"] for r in range(2)]
    assert uneven[0]["updates"] == uneven[1]["updates"] == 5
    for k, w in uneven[0]["weights"].items():
        torch.testing.assert_close(uneven[1]["weights"][k], w, rtol=0, atol=0)
    # a NaN input on rank 1 only, unlocked, "skip": every rank skips the whole step, once
    nan = [ranks[r]["nan-one-rank"] for r in range(2)]
    for r in range(2):
        assert (nan[r]["skipped"], nan[r]["updates"], nan[r]["moved"]) == (1, 4, []), r
    for k, w in nan[0]["weights"].items():
        torch.testing.assert_close(nan[1]["weights"][k], w, rtol=0, atol=0)


def test_ostl_train_nproc_2_writes_one_run_folder_from_rank_0(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "ostl", "train", "--nproc", "2", "--rule", "osttp", *TINY,
         "--out", str(out)],
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| osttp |") == 1  # one report, from rank 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["run"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["environment"]["processes"] == 2
    assert len(summary["history"]) == 2 and summary["config"]["batch_size"] == 15
    assert "nproc" not in json.loads((out / "config.json").read_text())


_FAIL = """
import os
if os.environ.get("RANK") == "1":
    import ostl.learner

    calls = [0]
    update = ostl.learner.Learner.update

    def failing(self):
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("injected failure on rank 1")
        update(self)

    ostl.learner.Learner.update = failing
"""


def _train(
    *argv: str, hook: Path | None = None, timeout: str = "60"
) -> subprocess.CompletedProcess[str]:
    env = _env(OSTL_DIST_TIMEOUT=timeout, **({"PYTHONPATH": str(hook)} if hook else {}))
    return subprocess.run(
        [sys.executable, "-m", "ostl", "train", *argv], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def _last_weights(out: Path) -> dict[str, torch.Tensor]:
    return ostl.load_checkpoint(out / "checkpoints")["learner"]["net"]


def test_a_failed_worker_ends_the_run_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rank 1 raises at its 3rd update: no hang, exit 1, one ``ostl train: error:`` line; the
    checkpoint of step 2 (written by rank 0, holding both ranks' state) stays loadable and the
    run resumes from it with the same number of processes, not with another."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_FAIL)
    out = tmp_path / "run"
    t0 = time.perf_counter()
    proc = _train("--nproc", "2", "--rule", "ostl", *TINY, "--out", str(out),
                  "--checkpoint-every", "2", hook=hook)  # fmt: skip
    assert time.perf_counter() - t0 < 120
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "injected failure on rank 1" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ostl train: error: a worker process failed"), last
    saved = ostl.load_checkpoint(out / "checkpoints")
    assert saved["processes"] == 2 and len(saved["ranks"]) == 1 and saved["learner"]["steps"] == 2
    assert not (out / "summary.json").exists()
    # one process cannot take over the two ranks' traces
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "written by 2 process(es), this run has 1" in err and "--nproc 2" in err
    proc = _train("--resume", str(out), "--nproc", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["environment"]["processes"] == 2


@pytest.mark.slow
def test_an_interrupted_two_process_run_resumes_bit_identical(tmp_path: Path) -> None:
    """--nproc 2 stopped after step 5 and resumed ends with the uninterrupted run's weights."""
    full, part = tmp_path / "full", tmp_path / "part"
    opts = ["--nproc", "2", "--rule", "osttp", *TINY, "--checkpoint-every", "3"]
    assert _train(*opts, "--out", str(full)).returncode == 0
    proc = _train(*opts, "--out", str(part), "--stop-after-steps", "5")
    assert proc.returncode == 0 and "stopped after step 5" in proc.stdout, proc.stderr[-3000:]
    proc = _train("--resume", str(part), "--nproc", "2", "--no-progress", "--checkpoint-every", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _last_weights(full), _last_weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    ["import signal; os.kill(os.getpid(), signal.SIGKILL)", "import time; time.sleep(600)"],
    ids=["killed", "hung"],
)
def test_a_killed_or_hung_worker_ends_the_run_too(tmp_path: Path, fault: str) -> None:
    """Rank 1 is killed (SIGKILL) or hangs mid-epoch: the same clear end, no hang (the hung
    worker's peer times out after OSTL_DIST_TIMEOUT seconds, then torchrun stops both)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        _FAIL.replace('raise RuntimeError("injected failure on rank 1")', fault)
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ostl", "train", "--nproc", "2", "--rule", "bptt", *TINY,
         "--out", str(tmp_path / "run")],
        env=_env(PYTHONPATH=str(hook), OSTL_DIST_TIMEOUT="5"), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert time.perf_counter() - t0 < 120
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("ostl train: error: a worker process")


def test_bench_section_names_the_command_and_the_machine() -> None:
    from benchmarks.distributed import markdown

    rows = [
        {"rule": "ostl", "processes": n, "batch": 5, "local_batch": 5 - 2 * (n - 1), "steps": 3,
         "sequences": 2, "wall_s": 1.0, "allreduce_ms": 1.5 if n > 1 else None,
         "samples_per_s": 10.0 * n, "sample_steps_per_s": 30.0 * n}
        for n in (1, 2)
    ]  # fmt: skip
    meta = {"date": "today", "cpu": "a CPU", "usable_cores": 2, "torch": "2", "commit": "abc"}
    text = markdown(rows, meta, "python -m benchmarks.distributed")
    assert "`python -m benchmarks.distributed`" in text and "a CPU, 2 usable cores" in text
    assert "| ostl | 2 | 2 or 3 | 20.0 | 60 | 2.00× | 1.50 ms |" in text


def test_nproc_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--nproc", "0", *TINY])
    assert e.value.code == 2 and "positive integer" in capsys.readouterr().err
    assert main(["train", "--nproc", "4", *TINY, "--batch-size", "3"]) == 2
    assert "needs a batch of at least 4" in capsys.readouterr().err
    assert main(["train", "--nproc", "2", *TINY, "--device", "cuda:0"]) == 2
    assert "use --device cuda" in capsys.readouterr().err
    if torch.cuda.device_count() < 2:
        assert main(["train", "--nproc", "2", *TINY, "--device", "cuda"]) == 2
        assert "needs 2 GPUs" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_nccl_on_gpus_equals_one_process_on_the_cpu(tmp_path: Path) -> None:
    """NCCL, one process per GPU (2 if there are 2, else 1): the same weights as the CPU."""
    n = min(2, torch.cuda.device_count())
    status = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
         str(ROOT / "tests" / "dist_worker.py"), str(tmp_path), "cuda"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr[-3000:]
    got = torch.load(tmp_path / "rank0.pt")
    for name in CASES:
        want = run_case(name)
        for k, w in want.items():
            torch.testing.assert_close(got[name][k], w, rtol=1e-9, atol=1e-9, msg=f"{name} {k}")


# -- all-reduce less often (update_every=k) or in the background (delayed_updates) ---------
@pytest.mark.slow  # one torchrun launch: 12-20 s on a loaded 2-core machine
def test_two_processes_follow_one_with_update_every_k_or_delayed_updates(tmp_path: Path) -> None:
    """float64, gloo, shards of 3 and 2: update_every=k (every rank sums k steps' gradients,
    then one all-reduce) equals one process with the whole batch and update_every=k; delayed
    updates equal one process with delayed updates, which equals the hand-written reference;
    a learner rebuilt mid-sequence from ``state_dict()`` (a gradient in flight) continues as
    the uninterrupted one; 100-byte buckets average exactly."""
    status = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(ROOT / "tests" / "dist_worker.py"), str(tmp_path), "cpu", "modes"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"modes{r}.pt") for r in range(2)]
    start = network().state_dict()
    for name in MODES:
        want = run_mode(name)  # one process, the whole batch, the same options
        if MODES[name][2]:
            for k, w in delayed_reference(name).items():
                torch.testing.assert_close(want[k], w, rtol=1e-12, atol=1e-12, msg=k)
        for k, w in want.items():
            for r in range(2):
                got = ranks[r][name][k]
                torch.testing.assert_close(got, w, rtol=1e-12, atol=1e-12, msg=f"{name} {k} {r}")
        assert max(float((want[k] - start[k]).abs().max()) for k in want) > 0.05, name
    for name, weights in ranks[0]["resumed"].items():
        for k, w in weights.items():
            torch.testing.assert_close(w, ranks[0][name][k], rtol=0, atol=0, msg=f"{name} {k}")
    for r in range(2):
        assert ranks[r]["learner_gathers"]  # gloo, 2 processes: all-gather by default
        for gather, got in ranks[r]["buckets"].items():
            assert got["gather"] == gather
            assert got["applied"] == [False, True, True] and not got["in_flight"]
            assert got["buckets"] > 2  # the 6-5-3 network's gradients do not fit in 100 bytes
            for means in got["means"][1:]:
                assert {float(v.min()) for v in means.values()} == {1.4}
                assert {float(v.max()) for v in means.values()} == {1.4}


@pytest.mark.parametrize("name", [n for n in MODES if MODES[n][2]])
def test_delayed_updates_in_one_process_equal_the_hand_written_reference(name: str) -> None:
    """Each window's gradient applied at the next update (the last at end_sequence): the same
    weights as the reference and as many optimizer steps as without the delay, yet another
    trajectory than the default's."""
    net, learner = mode_learner(name)
    plain_net, plain = mode_learner(name)
    plain = ostl.Learner(
        plain_net, MODES[name][0](), loss_fn=plain.loss_fn, optimizer=plain.optimizer,
        update_every=MODES[name][1],
    )  # fmt: skip
    for xs, targets in data():
        for lr in (learner, plain):
            lr.reset(B)
            for x, tg in zip(xs, targets):
                lr.step(x, tg)
            lr.end_sequence()
    want = delayed_reference(name)
    for k, w in net.state_dict().items():
        torch.testing.assert_close(w, want[k], rtol=1e-12, atol=1e-12, msg=k)
    assert learner.updates == plain.updates > 2
    gap = max(float((w - plain_net.state_dict()[k]).abs().max()) for k, w in want.items())
    assert gap > 1e-3, "delayed updates must change the trajectory"


def test_the_first_delayed_update_steps_nothing_and_end_sequence_applies_the_last() -> None:
    net, learner = mode_learner("ostl-delayed")
    xs, targets = data()[0]
    learner.reset(B)
    learner.step(xs[1], targets[1])
    assert learner.updates == 0  # its gradient is in flight
    learner.step(xs[2], targets[2])
    assert learner.updates == 1
    before = {k: v.clone() for k, v in net.state_dict().items()}
    learner.end_sequence()
    assert learner.updates == 2 and not all(
        torch.equal(v, before[k]) for k, v in net.state_dict().items()
    )
    learner.end_sequence()  # nothing left in flight: nothing more
    assert learner.updates == 2


def test_delayed_updates_options_and_checkpoints_are_checked() -> None:
    from ostl.delayed import DelayedGradients, buckets

    net = network()
    opt = torch.optim.Adam(net.parameters())
    with pytest.raises(ostl.OptionError, match=r"needs update_every=k.*got None"):
        ostl.Learner(net, "ostl", loss_fn=cross_entropy, optimizer=opt, update_every=None,
                     delayed_updates=True)  # fmt: skip
    with pytest.raises(ostl.OptionError, match="delayed_updates=True and unlocked=True"):
        ostl.Learner(net, "osttp", loss_fn=cross_entropy, optimizer=opt, unlocked=True,
                     delayed_updates=True)  # fmt: skip
    with pytest.raises(ostl.OptionError, match="bucket_bytes must be a positive int, got 0"):
        DelayedGradients(dict(net.named_parameters()), False, bucket_bytes=0)
    _, delayed = mode_learner("ostl-delayed")
    _, plain = mode_learner("ostl-every-3")
    plain = ostl.Learner(plain.net, "ostl", loss_fn=cross_entropy, optimizer=plain.optimizer)
    with pytest.raises(ostl.CheckpointError, match="delayed_updates=True, this one False"):
        plain.load_state_dict(delayed.state_dict())
    with pytest.raises(ostl.CheckpointError, match="delayed_updates=False, this one True"):
        delayed.load_state_dict(plain.state_dict())
    # consecutive parameters up to the limit; one larger than it alone
    assert buckets([10, 10, 30, 5], 4, 80) == [slice(0, 2), slice(2, 3), slice(3, 4)]
    assert buckets([3], 8, 1) == [slice(0, 1)]


def test_bench_modes_report_median_speedups_and_scaling_efficiency() -> None:
    from benchmarks.distributed import markdown, parse_mode

    assert [parse_mode(m) for m in ("online", "delayed", "every-8", "delayed-every-4")] == [
        (1, False), (1, True), (8, False), (4, True)
    ]  # fmt: skip
    for bad in ("every-0", "sync", "sequence", "delayed-online"):
        with pytest.raises(argparse.ArgumentTypeError, match="unknown mode"):
            parse_mode(bad)
    rows = [
        {"rule": "ostl", "mode": mode, "processes": n, "round": rnd, "batch": 64, "steps": 3,
         "sequences": 2, "local_batch": 64 // n, "allreduce_ms": 2.0 if n > 1 else None,
         "samples_per_s": base * (speed if n > 1 else 1.0), "sample_steps_per_s": 1.0}
        for mode, base, speeds in (("online", 100.0, (0.6, 0.7, 0.8)),
                                   ("every-8", 120.0, (1.2, 1.4, 1.5)))
        for rnd, speed in enumerate(speeds) for n in (1, 2)
    ]  # fmt: skip
    meta = {"date": "today", "cpu": "a CPU", "usable_cores": 2, "torch": "2", "commit": "abc"}
    text = markdown(rows, meta, "python -m benchmarks.distributed --rounds 3")
    assert "3 round(s)" in text and "**every-8**: update_every=8: each process sums" in text
    assert "| ostl | 2 | 32 | 70.0 | 1 | 0.70× (0.60–0.80) | 2.00 ms | 35% | 0.70× |" in text
    assert "| ostl | 2 | 32 | 168.0 | 1 | 1.40× (1.20–1.50) | 2.00 ms | 70% | 1.68× |" in text
    assert "| ostl | 1 | 64 | 120.0 | 1 | 1.00× (1.00–1.00) | – | 100% | 1.20× |" in text


class _Grads:
    """What DelayedGradients reads of a runner (grads, batch_size, grad, zero_grads), for
    parameters of mixed dtypes that no rule's runner holds."""

    def __init__(self, params: dict[str, torch.Tensor]) -> None:
        self.params, self.batch_size = params, 4
        self.held: dict[str, torch.Tensor | None] = dict.fromkeys(params)

    @property
    def grads(self) -> dict[str, torch.Tensor]:
        return {n: self.grad(n) for n in self.params}

    def grad(self, name: str) -> torch.Tensor:
        g = self.held[name]
        if g is None:
            g = self.held[name] = torch.zeros_like(self.params[name])
        return g

    def zero_grads(self) -> None:
        self.held = dict.fromkeys(self.params)


def test_delayed_gradients_of_mixed_dtypes_travel_in_float64() -> None:
    from ostl.delayed import DelayedGradients

    params = {"a": torch.zeros(3), "b": torch.zeros(2, dtype=torch.float64)}
    runner = _Grads(params)
    delayed = DelayedGradients(params, distributed=False)
    assert delayed.dtype == torch.float64 and not delayed.gather
    runner.grad("a").fill_(1 / 3)
    runner.grad("b").fill_(1 / 3)
    assert not delayed.exchange(runner, True, 1)  # nothing in flight yet
    assert runner.held == {"a": None, "b": None}
    assert delayed.exchange(runner, True, 2)  # the first window's, in the parameters' dtypes
    assert runner.grad("a").dtype == torch.float32 and runner.grad("b").dtype == torch.float64
    assert torch.equal(runner.grad("a"), torch.full((3,), 1 / 3))
    assert torch.equal(runner.grad("b"), torch.full((2,), 1 / 3, dtype=torch.float64))
    saved = delayed.state_dict()  # the second window (zeros) is in flight
    assert saved["last_step"] == 2 and float(saved["grads"]["a"].abs().sum()) == 0
