"""The table of results and the Markdown report (docs/reliability.md)."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from ostl.run.sections import describe_machine, keep_sections

from .core import FaultClass

HEADER = ("fault class", "tries", "failures (a promise broken)", "data lost", "what was checked")

HOW = """\
Every fault is made against real `ostl` commands on a tiny run (digits, 8 hidden units, 2
epochs of 8 batches of 4 steps, `--checkpoint-every 5 --keep 2`), each in a scratch folder of
its own, and compared with the same run never interrupted:

- **kill -9 during training**: the command is killed with SIGKILL at a random moment (half
  drawn over its whole life after start-up, half just after a randomly chosen checkpoint), then
  continued as a user would: `ostl train --resume` when the folder holds a config.json, the
  first command again otherwise; until a command runs to its end.
- **faults inside a checkpoint write** are made deterministically, not by timing: the command
  runs with a `sitecustomize.py` on `PYTHONPATH` (`scripts/fault_suite/hook.py`) that hooks
  `open`, `os.replace` and `os.fsync` of `ostl.run.checkpoint` and the deletion of old
  checkpoints, and at a chosen call of a chosen stage kills the process (SIGKILL) or makes
  `write` fail with ENOSPC, as a full disk does.
- **unwritable `--out`**: a path under a regular file (unwritable even for root); the same
  hook, as a probe, creates a file at the first training step, showing whether the refusal
  came before training.
- **two writers**: two `ostl train --resume` of one folder started together.
- **`--nproc 2`**: SIGKILL of one worker (found by its RANK variable) or of the launcher once
  the run has written a checkpoint; `OSTL_DIST_TIMEOUT` is 10 s.
- **hostile files**: the newest checkpoint truncated or with a bit flipped in a tensor; a
  foreign safetensors or pickle file, or a pickle whose `__reduce__` would create a marker file,
  placed as the newest checkpoint or as `model.safetensors`; a checkpoint holding NaN or Inf.

"Data lost" counts what a user would lose or see: a completed checkpoint lost or corrupted, a
folder that refuses to resume (blocked), a model or checkpoint changed silently, code run from
a file, a traceback instead of a one-line error.
"""


def _lost(fc: FaultClass) -> str:
    counts = Counter(item for t in fc.tries for item in t.lost)
    if not counts:
        return "0"
    return f"{sum(counts.values())} ({', '.join(f'{n} {k}' for k, n in counts.most_common())})"


def _tries(fc: FaultClass) -> str:
    if fc.unit == "tries":
        return str(len(fc.tries))
    return f"{fc.injected} {fc.unit} in {len(fc.tries)} chains"


def rows(classes: list[FaultClass]) -> list[tuple[str, ...]]:
    return [
        (f"{fc.number}. {fc.title}", _tries(fc), f"{len(fc.failed)} of {len(fc.tries)}",
         _lost(fc), fc.checked)
        for fc in classes
    ]  # fmt: skip


def table(classes: list[FaultClass]) -> str:
    """The results as a Markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|---|---:|---:|---|---|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows(classes)]
    return "\n".join(lines)


def failures(classes: list[FaultClass]) -> list[str]:
    """One line per broken promise: class, try, reason."""
    return [
        f"{fc.number}. {t.name}: {reason}"
        for fc in classes
        for t in fc.tries
        for reason in t.failures
    ]


def notes(classes: list[FaultClass]) -> list[str]:
    seen: dict[str, None] = {}
    for fc in classes:
        for t in fc.tries:
            for note in t.notes:
                seen.setdefault(f"{fc.number}. {t.name}: {note}", None)
    return list(seen)


def _held(fc: FaultClass) -> str:
    n = len(fc.tries)
    if n == 0:
        return "not tried"
    what = ("try" if n == 1 else "tries") if fc.unit == "tries" else "chains"
    if fc.unit != "tries":
        what += f", {fc.injected} {fc.unit}"
    if not fc.failed:
        return f"held in {n} of {n} {what}"
    return f"**broken in {len(fc.failed)} of {n} {what}**"


def markdown(classes: list[FaultClass], command: str, seconds: float) -> str:
    """The whole report (see the module)."""
    broken = failures(classes)
    parts = [
        "# Reliability: what survives which fault",
        "",
        "Written by `scripts/faults.py` (`make faults`); rerun it rather than editing this page.",
        "",
        "## The guarantees",
        "",
        *(f"{fc.number}. **{fc.title}.** {fc.promise} ({_held(fc)})" for fc in classes),
        "",
        "## The last run",
        "",
        f"Command: `{command}`, {seconds / 60:.1f} min.  ",
        f"Machine: {describe_machine()}.  ",
        f"Date: {time.strftime('%Y-%m-%d')}.",
        "",
        table(classes),
        "",
        "### Broken promises",
        "",
        *([f"- {line}" for line in broken] or ["None: every promise held."]),
        "",
    ]
    if extra := notes(classes):
        parts += ["### Notes", "", *(f"- {line}" for line in extra), ""]
    parts += ["## How the faults are made", "", HOW]
    return "\n".join(parts)


def write(path: Path, text: str) -> None:
    """Write the report atomically, keeping the marked sections of the old file."""
    old = path.read_text() if path.exists() else ""
    text = keep_sections(text, old)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
