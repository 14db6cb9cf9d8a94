"""Kills under ``ostl train --nproc 2`` (class 6): a worker, the launcher, the torchrun agent.

The process tree: ``ostl train --nproc 2`` (the launcher) runs ``python -m
torch.distributed.run`` (the agent), which starts the two workers in sessions of their own
(found here by their RANK variable). Once the run has written its first checkpoint:

- a worker (rank 0 or 1, at random) is killed with SIGKILL: the command must end with a
  one-line error within the distributed timeout (``OSTL_DIST_TIMEOUT``, short here), every
  checkpoint left must load, and ``ostl train --resume --nproc 2`` must complete;
- the launcher (or the agent) is killed with SIGKILL: the workers must exit within a few
  seconds, and a later resume must be accepted and complete. Workers still running after the
  wait are killed by the suite (by their process ids) before it goes on.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from .checks import check_kept, summary
from .core import CKPT, TINY, FaultClass, Job, Suite, Try, step_files
from .procs import Command, Done, alive, descendants, kill_tree, rank_of, wait_for

NPROC = FaultClass(
    6, "nproc", "kill -9 of a worker or of the launcher under --nproc 2",
    "Under `--nproc 2`, a killed worker ends the run with a one-line error within the "
    "distributed timeout, the checkpoint before stays loadable and the run resumes with "
    "`--nproc 2`; a killed launcher takes its workers down within seconds, and a later resume "
    "is accepted and completes.",
    "exit 1 and one-line error in time, checkpoints loadable, no orphaned worker, resume "
    "with --nproc 2 completes",
)  # fmt: skip
DIST_TIMEOUT = 10  # OSTL_DIST_TIMEOUT of these runs, seconds
GRACE = 20.0  # the launcher's own teardown after the timeout, seconds
ORPHAN_WAIT = 5.0  # "within a few seconds": how long workers may outlive a killed launcher
LONGER = ["--epochs", "6"]  # the launcher tries: long enough that workers would outlive it


def _workers(cmd: Command, run: Path, timeout: float = 120) -> dict[int, int] | None:
    """{rank: pid} of the run's two workers once its first checkpoint exists (None: never)."""
    if not wait_for(lambda: bool(step_files(run)), timeout, while_running=cmd, poll=0.02):
        return None
    ranks = {r: p for p in descendants(cmd.pid) if (r := rank_of(p)) is not None}
    return ranks if len(ranks) == 2 else None


def _resume(t: Try, suite: Suite, run: Path, work: Path, env: dict[str, str]) -> None:
    done = Command(["train", "--resume", run, "--nproc", "2", *CKPT, "--no-progress"], work,
                   env, "resume").wait()  # fmt: skip
    if done.rc != 0:
        t.fail(f"the resume with --nproc 2 was refused or failed (exit {done.rc}): {done.last}")
        t.lost.append("blocked folder")
    elif (s := summary(run)) is None or s.get("environment", {}).get("processes") != 2:
        t.fail("the resumed run wrote no summary.json of 2 processes")


def worker_try(suite: Suite, name: str) -> Try:
    t, rng = Try(name), suite.rng(name)
    work = suite.folder(name)
    run, env = work / "run", suite.env(OSTL_DIST_TIMEOUT=str(DIST_TIMEOUT))
    cmd = Command(["train", "--nproc", "2", *TINY, *CKPT, "--out", run], work, env, "nproc")
    workers = _workers(cmd, run)
    if workers is None:
        t.fail(f"the run ended or hung before its workers wrote a checkpoint: {cmd.wait().last}")
        return t
    time.sleep(rng.uniform(0, 0.5))
    rank = rng.choice(sorted(workers))
    t.name += f" (rank {rank})"
    t0 = time.monotonic()
    cmd.kill9(workers[rank])
    done = cmd.wait(timeout=DIST_TIMEOUT + GRACE + 60)
    took = time.monotonic() - t0
    kill_tree(cmd.pid, also=list(workers.values()))
    if took > DIST_TIMEOUT + GRACE:
        t.fail(f"the run took {took:.0f} s to end (timeout {DIST_TIMEOUT} s + {GRACE:.0f} s)")
    _check_ended(t, done)
    # 2 processes sum the gradients in another order: equal to 1 process, not bit-identical
    failures, lost = check_kept(run, suite.reference, completed=0, compare=False)
    t.failures += failures
    t.lost += lost
    _resume(t, suite, run, work, env)
    return t


def _check_ended(t: Try, done: Done) -> None:
    if done.rc != 1:
        t.fail(f"exit status {done.rc}, not 1: {done.last}")
    t.fail(done.error_line("train", strict=False))
    if done.traceback:
        t.lost.append("traceback")
        t.notes.append("the workers' tracebacks are shown above the one-line error")


def launcher_try(suite: Suite, name: str, target: str) -> Try:
    """Kill the launcher (``target="launcher"``) or the torchrun agent (``"agent"``)."""
    t = Try(name)
    work = suite.folder(name)
    run, env = work / "run", suite.env(OSTL_DIST_TIMEOUT=str(DIST_TIMEOUT))
    cmd = Command(["train", "--nproc", "2", *TINY, *LONGER, *CKPT, "--out", run], work, env,
                  "nproc")  # fmt: skip
    workers = _workers(cmd, run)
    if workers is None:
        t.fail(f"the run ended or hung before its workers wrote a checkpoint: {cmd.wait().last}")
        return t
    tree = descendants(cmd.pid)
    agent = [p for p in tree if p not in workers.values()]
    cmd.kill9(cmd.pid if target == "launcher" else agent[0])
    t0 = time.monotonic()
    gone = wait_for(lambda: not any(alive(p) for p in tree), ORPHAN_WAIT, poll=0.05)
    if not gone:
        ended = wait_for(lambda: not any(alive(p) for p in tree), 120, poll=0.2)
        took = f"they ended {time.monotonic() - t0:.0f} s later" if ended else "killed by the suite"
        t.fail(f"the workers outlived the killed {target} by more than {ORPHAN_WAIT:.0f} s "
               f"({took})")  # fmt: skip
    kill_tree(cmd.pid, also=tree)
    cmd.wait()
    _resume(t, suite, run, work, env)
    return t


def nproc_jobs(suite: Suite) -> list[Job]:
    workers = suite.pick(1, 2, 4)
    launchers = suite.pick(["launcher"], ["launcher", "agent"], ["launcher", "agent"] * 2)
    jobs = [Job(NPROC, f"{target} killed #{i + 1}",
                partial(launcher_try, suite, f"{target} killed #{i + 1}", target))
            for i, target in enumerate(launchers)]  # fmt: skip
    names = [f"worker killed #{i + 1}" for i in range(workers)]
    return jobs + [Job(NPROC, n, partial(worker_try, suite, n)) for n in names]
