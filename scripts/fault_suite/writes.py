"""Faults inside a checkpoint write (class 2: kill -9 at each stage; class 3: disk full).

Not by timing: the run gets the hook of :mod:`.hook`, which acts at an exact call of the
checkpoint writer (``ostl.run.checkpoint``): at each stage of writing checkpoint number ``c``
(opening the temporary file, each ``write``, the ``fsync`` of the file, the rename, the
``fsync`` of the folder, the deletion of the oldest checkpoint) it kills the process with
SIGKILL, or makes ``write`` fail with ENOSPC as a full disk does. Then the run is resumed
without the hook ("the space is freed") and must end as the uninterrupted run.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from .checks import check_final, check_kept
from .core import CKPT, KEEP, TINY, FaultClass, Job, Suite, Try, temporary_files
from .procs import Command

WRITE_KILL = FaultClass(
    2, "write-kill", "kill -9 inside a checkpoint write, at each stage",
    "A process killed at any line of a checkpoint write leaves the previous checkpoint whole "
    "and loadable (or the new one, once renamed), and the run resumes from it to the same end "
    "as if never interrupted.",
    "completed checkpoints intact and equal to the uninterrupted run's, resume accepted, "
    "final weights bit-identical",
)  # fmt: skip
DISK_FULL = FaultClass(
    3, "disk-full", "disk full (ENOSPC) while writing a checkpoint",
    "A full disk while writing a checkpoint stops the run with a one-line error (exit status "
    "1); the older checkpoints are intact, and once space is freed the run resumes to the same "
    "end as if never interrupted.",
    "one-line error naming the full disk, exit 1, older checkpoints intact, resume after "
    "freeing space completes bit-identical",
)  # fmt: skip

#: The stages of a checkpoint write, in order: (label, hook stage, nth write, after the rename).
STAGES: list[tuple[str, str, int | None, bool]] = [
    ("opening the temporary file", "open", None, False),
    ("the first write", "write", 1, False),
    ("the second write", "write", 2, False),
    ("the fsync of the file", "fsync-file", None, False),
    ("the rename onto step-N.pt", "replace", None, False),
    ("the fsync of the folder (after the rename)", "fsync-dir", None, True),
    ("deleting the oldest checkpoint (after the rename)", "unlink", None, True),
]


def spec(stage: str, write: int | None, c: int, action: str) -> dict[str, Any] | None:
    """The hook's spec for ``stage`` of checkpoint number ``c`` (None: never reached)."""
    if stage == "write":
        return {"stage": "write", "file": c, "nth": write, "action": action}
    if stage == "unlink":  # the keep rotation deletes one file per write from write KEEP + 1
        return None if c <= KEEP else {"stage": "unlink", "nth": c - KEEP, "action": action}
    return {"stage": stage, "nth": c, "action": action}


def writer_try(
    suite: Suite, name: str, fault: dict[str, Any], completed: int, disk_full: bool
) -> Try:
    """Run with ``fault``, check what is left, resume without it, check the end."""
    t, ref = Try(name), suite.reference
    work = suite.folder(name)
    run = work / "run"
    done = Command(["train", *TINY, *CKPT, "--out", run], work, suite.env(fault), "fault").wait()
    if done.rc == 0:
        t.fail("the injection never fired: the suite no longer matches the checkpoint writer")
        return t
    if disk_full:
        t.fail(None if done.rc == 1 else f"exit status {done.rc}, not 1")
        if not t.fail(done.error_line("train")) and "No space left" not in done.last:
            t.fail(f"the error does not say the disk is full: {done.last}")
    elif done.rc != -9:
        t.fail(f"the run failed before the fault (exit {done.rc}): {done.last}")
        return t
    t.lost += ["traceback"] if done.traceback else []
    failures, lost = check_kept(run, ref, completed)
    t.failures += failures
    t.lost += lost
    resumed = Command(["train", "--resume", run, *CKPT, "--no-progress"], work, suite.env(),
                      "resume").wait()  # fmt: skip
    if resumed.rc != 0:
        t.fail(f"the resume was refused (exit {resumed.rc}): {resumed.last}")
        t.lost.append("blocked folder")
        return t
    t.failures += check_final(run, ref)
    if left := temporary_files(run):
        t.notes.append(f"left behind after the resumed run: {', '.join(p.name for p in left)}")
    return t


def write_kill_jobs(suite: Suite) -> list[Job]:
    ref = suite.reference
    epoch_end = next((i + 1 for i, s in enumerate(ref.steps) if s == ref.steps[-1] // 2), 3)
    checkpoints = suite.pick([3], [1, 3], [1, 2, 3, epoch_end, len(ref.steps)])
    jobs: list[Job] = []
    for c in checkpoints:
        for label, stage, write, after in STAGES:
            fault = spec(stage, write, c, "kill")
            if fault is None:
                continue
            name = f"checkpoint {c}: {label}"
            run = partial(writer_try, suite, name, fault, c - 1 + after, False)
            jobs.append(Job(WRITE_KILL, name, run))
    if suite.mode == "quick":  # the first checkpoint too: nothing before it to fall back on
        fault = spec("write", 1, 1, "kill")
        assert fault is not None
        name = "checkpoint 1: the first write"
        jobs.append(Job(WRITE_KILL, name, partial(writer_try, suite, name, fault, 0, False)))
    return jobs


def disk_full_jobs(suite: Suite) -> list[Job]:
    ref = suite.reference
    epoch_end = next((i + 1 for i, s in enumerate(ref.steps) if s == ref.steps[-1] // 2), 3)
    checkpoints = suite.pick([1, 3], [1, 3], [1, 3, epoch_end, len(ref.steps)])
    jobs: list[Job] = []
    for c in checkpoints:
        fault = spec("write", 1, c, "enospc")
        assert fault is not None
        name = f"checkpoint {c}" + (" (the first)" if c == 1 else "")
        jobs.append(Job(DISK_FULL, name, partial(writer_try, suite, name, fault, c - 1, True)))
    return jobs
