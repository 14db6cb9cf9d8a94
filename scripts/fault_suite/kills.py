"""Kill -9 at random moments during training (class 1) and two writers at once (class 5).

Class 1 runs chains: the tiny run is started and killed with SIGKILL at a random moment, then
continued as a user would (``ostl train --resume`` when the folder has a config.json, the first
command again when the kill came before it was written), killed again, and so on until a
command runs to its end. A chain whose run ended before all its kills were made starts another
run, so that the number of kills does not depend on the machine's speed.

Half the moments are drawn uniformly from the command's life after start-up (late start-up,
training, the final plots and files), half are anchored in training: just after a randomly
chosen checkpoint of those still to come appears. After every kill, every checkpoint file left
must load and equal the uninterrupted run's at its step, and the newest may not go back; at the
end, the run must equal the uninterrupted one bit for bit.
"""

from __future__ import annotations

import random
import time
from functools import partial
from pathlib import Path

from .checks import check_final, check_kept
from .core import CKPT, EVERY, TINY, FaultClass, Job, Reference, Suite, Try, newest_step
from .procs import Command, Done, wait_for

KILL = FaultClass(
    1, "kill", "kill -9 during training, then --resume",
    "A run killed at any moment (kill -9) and continued with `ostl train --resume` ends with "
    "exactly the weights and the step count of the same run never interrupted; the folder "
    "always accepts the resume, and no completed checkpoint is lost.",
    "final weights (model-last and final checkpoint) bit-identical, summary steps equal, "
    "every checkpoint left loadable, resume always accepted",
    unit="kills",
)  # fmt: skip
CONCURRENT = FaultClass(
    5, "concurrent", "two `--resume` of one folder at once",
    "Two commands resuming the same run folder at once: one is refused with a one-line error, "
    "the other completes with the uninterrupted run's weights.",
    "one refused in one line, one completes, final weights bit-identical",
)  # fmt: skip


def _kill_at_random(cmd: Command, run: Path, ref: Reference, rng: random.Random) -> str | None:
    """Kill ``cmd`` at a random moment (see the module); a description, None if it ended first."""
    remaining = [s for s in ref.steps if s > newest_step(run)]
    if remaining and rng.random() < 0.5:
        target = rng.choice(remaining)
        if not wait_for(lambda: newest_step(run) >= target, 120, while_running=cmd):
            return None
        time.sleep(rng.uniform(0, ref.per_step * EVERY))  # before the next checkpoint
        moment = f"just after the checkpoint of step {target}"
    else:
        share = len(remaining) / len(ref.steps) if remaining else 0.2
        delay = rng.uniform(0.9 * ref.ready, ref.ready + share * (ref.seconds - ref.ready))
        if wait_for(lambda: not cmd.running(), delay):
            return None
        moment = f"{delay:.2f} s after the start"
    cmd.kill9()
    return moment if cmd.wait().rc == -9 else None


def _next_command(run: Path) -> list[str | Path | int]:
    if (run / "config.json").is_file():
        return ["train", "--resume", run, *CKPT, "--no-progress"]
    return ["train", *TINY, *CKPT, "--out", run]  # killed before the run existed: start again


def kill_chain(suite: Suite, name: str, kills: int) -> Try:
    """``kills`` kills in a chain of runs: each run is killed and resumed until a command ends
    on its own (before its kill came), and checked; then the next run, if kills are missing."""
    t, work = Try(name, count=0), suite.folder(name)
    runs = 0
    while t.count < kills and runs < kills + 2 and not t.failures:
        runs += 1
        _one_run(t, suite, work / f"run{runs}", kills)
    t.notes.append(f"{t.count} kills in {runs} run(s)")
    return t


def _one_run(t: Try, suite: Suite, run: Path, kills: int) -> None:
    """Start the run, kill it at random moments and resume it until a command ends on its own
    (or ``t.count`` reaches ``kills``), checking the folder after every kill and at the end."""
    ref, rng = suite.reference, suite.rng(f"{t.name}:{run.name}")
    killed = 0
    while True:
        before = newest_step(run)
        cmd = Command(_next_command(run), run.parent, suite.env(), "kill")
        moment = _kill_at_random(cmd, run, ref, rng) if t.count < kills else None
        if moment is None:
            break
        t.count, killed = t.count + 1, killed + 1
        t.notes.append(f"kill {t.count}: {moment}")
        failures, lost = check_kept(run, ref, completed=0)
        t.failures += [f"killed {moment}: {f}" for f in failures]
        t.lost += lost
        if newest_step(run) < before:
            t.fail(f"killed {moment}: the newest checkpoint went back from step {before}")
            t.lost.append("checkpoint lost")
    if _ended_well(t, cmd.wait(), resumed=killed > 0):
        t.failures += check_final(run, ref)


def _ended_well(t: Try, done: Done, resumed: bool) -> bool:
    if done.rc == 0:
        return True
    what = "the resume after the last kill" if resumed else "the run"
    if done.hung:
        t.fail(f"{what} hung (killed after {done.seconds:.0f} s)")
    else:
        t.fail(f"{what} was refused or failed (exit {done.rc}): {done.last}")
        t.lost.append("blocked folder" if resumed else "failed run")
    if done.traceback:
        t.lost.append("traceback")
    return False


def kill_jobs(suite: Suite) -> list[Job]:
    chains, kills = suite.pick((2, 2), (4, 4), (30, 4))
    names = [f"chain {i + 1}" for i in range(chains)]
    return [Job(KILL, n, partial(kill_chain, suite, n, kills)) for n in names]


def concurrent_try(suite: Suite, name: str) -> Try:
    """Stop a run after a few steps, then resume it twice at the same moment."""
    t, ref, rng = Try(name), suite.reference, suite.rng(name)
    work = suite.folder(name)
    run = work / "run"
    stop = rng.choice([s for s in ref.steps[:-2] if s % EVERY == 0])
    first = Command(["train", *TINY, *CKPT, "--out", run, "--stop-after-steps", stop], work,
                    suite.env(), "first").wait()  # fmt: skip
    if first.rc != 0:
        t.fail(f"the run stopped after {stop} steps failed: {first.last}")
        return t
    resume: list[str | Path | int] = ["train", "--resume", run, *CKPT, "--no-progress"]
    both = [Command(resume, work, suite.env(), f"writer{i}") for i in (1, 2)]
    done = [c.wait() for c in both]
    ok = [d for d in done if d.rc == 0]
    refused = [d for d in done if d.rc != 0]
    t.lost += ["traceback" for d in done if d.traceback]
    if len(ok) == 2:
        t.fail("both commands resumed the same folder at once: neither was refused")
    elif not ok:
        t.fail(f"neither command completed: {refused[0].last}")
        t.lost.append("blocked folder")
    for d in refused:
        t.fail(d.error_line("train"))
    if ok:
        t.failures += check_final(run, ref)
    return t


def concurrent_jobs(suite: Suite) -> list[Job]:
    n = suite.pick(1, 2, 5)
    names = [f"pair {i + 1}" for i in range(n)]
    return [Job(CONCURRENT, name, partial(concurrent_try, suite, name)) for name in names]
