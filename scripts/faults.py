"""Fault injection against real ``ostl train`` runs: what survives kill -9, a full disk, ...

    python scripts/faults.py --quick --out /tmp/reliability.md   # a few of each: ~3 min
    python scripts/faults.py --out docs/reliability.md           # make faults: ~6 min
    python scripts/faults.py --long                              # >= 100 kills: ~20 min
    python scripts/faults.py --quick --only unwritable,nonfinite # some classes (names or numbers)

Eight classes of faults, each with a promise (docs/reliability.md states them in plain words):
1. kill -9 during training, then ``--resume``; 2. kill -9 inside a checkpoint write, at each
stage; 3. disk full while writing a checkpoint; 4. an unwritable ``--out``; 5. two ``--resume``
of one folder at once; 6. kill -9 of a worker or of the launcher under ``--nproc 2``; 7.
truncated, bit-flipped, foreign and code-carrying files; 8. NaN/Inf in a checkpoint.

Every fault runs real commands on a tiny run (about 5 s each, most of it start-up) in scratch
folders under the system's temporary folder, ``--jobs`` at a time, and the end state is
compared with the same run never interrupted. The script prints a table (fault class, tries,
failures, data lost, what was checked) and one line per broken promise; ``--out`` writes the
report. Exit status 1 if any promise broke (or the suite could not run), 0 otherwise.
The suite itself is the package ``scripts/fault_suite``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

from fault_suite import report
from fault_suite.core import FaultClass, Job, Suite, Try
from fault_suite.hostile import HOSTILE, NONFINITE, hostile_jobs, nonfinite_jobs
from fault_suite.kills import CONCURRENT, KILL, concurrent_jobs, kill_jobs
from fault_suite.nproc import NPROC, nproc_jobs
from fault_suite.procs import stop_all
from fault_suite.unwritable import UNWRITABLE, unwritable_jobs
from fault_suite.writes import DISK_FULL, WRITE_KILL, disk_full_jobs, write_kill_jobs

#: Every class, in order, with the function that makes its tries.
CLASSES: list[tuple[FaultClass, Callable[[Suite], list[Job]]]] = [
    (KILL, kill_jobs),
    (WRITE_KILL, write_kill_jobs),
    (DISK_FULL, disk_full_jobs),
    (UNWRITABLE, unwritable_jobs),
    (CONCURRENT, concurrent_jobs),
    (NPROC, nproc_jobs),
    (HOSTILE, hostile_jobs),
    (NONFINITE, nonfinite_jobs),
]


def select(only: str | None) -> list[tuple[FaultClass, Callable[[Suite], list[Job]]]]:
    """The classes named in ``only`` (keys or numbers, comma-separated; None: all)."""
    if not only:
        return list(CLASSES)
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    known = {fc.key for fc, _ in CLASSES} | {str(fc.number) for fc, _ in CLASSES}
    if unknown := wanted - known:
        names = ", ".join(f"{fc.number}={fc.key}" for fc, _ in CLASSES)
        raise SystemExit(f"faults.py: error: unknown class(es) {sorted(unknown)}: use {names}")
    return [(fc, make) for fc, make in CLASSES if fc.key in wanted or str(fc.number) in wanted]


def _guarded(job: Job) -> Try:
    """Run one try; an error of the suite itself is reported as a failure of that try."""
    t0 = time.monotonic()
    try:
        t = job.run()
    except Exception as e:
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        t = Try(job.name, failures=[f"the suite itself failed here: {last}"])
    t.seconds = time.monotonic() - t0
    return t


def run(
    suite: Suite, chosen: list[tuple[FaultClass, Callable[[Suite], list[Job]]]]
) -> list[FaultClass]:
    """Every try of the chosen classes, ``suite.jobs`` at a time; the classes with their tries."""
    results = {fc.key: replace(fc, tries=[]) for fc, _ in chosen}
    jobs = [job for _, make in chosen for job in make(suite)]
    order = sorted(range(len(jobs)), key=lambda i: jobs[i].cls.key != "nproc")  # longest first
    done: dict[int, Try] = {}
    with ThreadPoolExecutor(suite.jobs) as pool:
        futures = {pool.submit(_guarded, jobs[i]): i for i in order}
        for n, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            done[i] = t = future.result()
            verdict = "ok" if not t.failures else f"{len(t.failures)} broken"
            head = f"[{n}/{len(jobs)}] {jobs[i].cls.number}. {t.name}"
            print(f"{head}: {verdict} ({t.seconds:.0f} s)", file=sys.stderr)
    for i, job in enumerate(jobs):
        results[job.cls.key].tries.append(done[i])
    return list(results.values())


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few tries of each class")
    size.add_argument("--long", action="store_true", help="many tries: >= 100 kills")
    p.add_argument("--out", type=Path, help="write the Markdown report there")
    p.add_argument("--seed", type=int, default=0, help="seeds the moments and bits (default 0)")
    p.add_argument("--jobs", type=int, default=2, help="tries at a time (default 2)")
    p.add_argument("--only", help="classes to run: names or numbers, comma-separated")
    p.add_argument("--keep-temp", action="store_true", help="keep the scratch folders")
    p.add_argument("-v", "--verbose", action="store_true", help="print the notes too")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    chosen = select(args.only)
    mode = "quick" if args.quick else "long" if args.long else "default"
    suite = Suite(mode, args.seed, max(args.jobs, 1), args.keep_temp)
    t0 = time.monotonic()
    try:
        ref = suite.make_reference()
        print(f"the uninterrupted run: {ref.seconds:.1f} s, training from {ref.ready:.1f} s, "
              f"{ref.per_step * 1000:.1f} ms a step", file=sys.stderr)  # fmt: skip
        classes = run(suite, chosen)
    except RuntimeError as e:  # the reference run failed: nothing can be compared
        print(f"faults.py: error: {e}", file=sys.stderr)
        return 1
    finally:
        stop_all()
        suite.cleanup()
    seconds = time.monotonic() - t0
    print(report.table(classes))
    broken = report.failures(classes)
    print("\nBroken promises:" if broken else "\nEvery promise held.")
    for line in broken:
        print(f"- {line}")
    if args.verbose and (notes := report.notes(classes)):
        print("\nNotes:", *(f"- {n}" for n in notes), sep="\n")
    if args.out:
        command = " ".join(["python scripts/faults.py", *argv])
        report.write(args.out, report.markdown(classes, command, seconds))
        print(f"\nreport: {args.out}")
    if suite.keep_temp:
        print(f"scratch folders kept in {suite.root}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
