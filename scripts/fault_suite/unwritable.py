"""An unwritable ``--out`` (class 4): refused before training, in one line.

The folder is made unwritable in a way that holds even for root: a path under a regular file
(no folder can be created there), or the regular file itself. For a user other than root, a
read-only folder (mode 555) is tried too. "Before training" is checked with the hook's probe
(:mod:`.hook`): the first training step would create a file. The time to the refusal is
reported; it must stay under ``LIMIT`` (a refusal that hangs is a broken promise).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from .core import TINY, FaultClass, Job, Suite, Try
from .procs import Command

UNWRITABLE = FaultClass(
    4, "unwritable", "unwritable --out",
    "A run folder that cannot be written is refused before any training: one line on stderr, "
    "exit status 2, nothing written anywhere.",
    "exit 2, one line and no traceback, refused before the first training step, nothing "
    "written",
)  # fmt: skip
#: Seconds within which the refusal must come: start-up and checks only (about 4 s unloaded).
LIMIT = 30.0


def _out(work: Path, how: str) -> Path:
    blocker = work / "blocker"
    if how == "read-only folder":
        blocker.mkdir()
        blocker.chmod(0o555)
        return blocker / "run"
    blocker.write_text("a regular file\n")
    return blocker if how == "a regular file" else blocker / "run"


def unwritable_try(suite: Suite, name: str, how: str, command: str) -> Try:
    t = Try(name)
    work = suite.folder(name)
    out = _out(work, how)
    before = sorted(p.name for p in work.iterdir())
    args = ["--rules", "ostl"] if command == "compare" else []
    trained = work / "logs" / "trained"  # created by the first training step, if any
    done = Command([command, *TINY, *args, "--out", out], work / "logs",
                   suite.env(probe=trained), command).wait()  # fmt: skip
    if done.rc != 2:
        t.fail(f"exit status {done.rc}, not 2: {done.last}")
    t.fail(done.error_line(command))
    t.lost += ["traceback"] if done.traceback else []
    if trained.exists():
        t.fail("refused only after training had started")
    if done.seconds > LIMIT:
        t.fail(f"refused after {done.seconds:.0f} s (more than {LIMIT:.0f} s)")
    t.notes.append(f"refused after {done.seconds:.1f} s: {done.last.replace(str(work), '…')}")
    if sorted(p.name for p in work.iterdir()) != sorted([*before, "logs"]):
        t.fail("something was written next to the unwritable folder")
    if how == "read-only folder":
        (work / "blocker").chmod(0o755)
    elif (work / "blocker").read_text() != "a regular file\n":
        t.fail("the regular file in the way was changed")
        t.lost.append("file overwritten")
    return t


def unwritable_jobs(suite: Suite) -> list[Job]:
    cases = [("under a regular file", "train"), ("a regular file", "train")]
    if suite.mode != "quick":
        cases.append(("under a regular file", "compare"))
    if os.geteuid() != 0:  # root writes into a read-only folder anyway
        cases.append(("read-only folder", "train"))
    names = [(f"ostl {cmd} --out {how}", how, cmd) for how, cmd in cases]
    return [
        Job(UNWRITABLE, n, partial(unwritable_try, suite, n, how, cmd)) for n, how, cmd in names
    ]
