"""The ``--out`` option of the benchmark commands: the report they write, always named.

A benchmark command never writes into the current folder unless told: ``--out BENCHMARKS.md``
updates the repository's report (``make bench`` passes it), any other path writes a report
elsewhere. The section writers (:mod:`.soak`, :mod:`.denormal`, :mod:`.distributed`) replace
their own section of that file and also take ``--no-write`` (print the section only), which
needs no ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_out_option", "require_out"]


def add_out_option(p: argparse.ArgumentParser, what: str) -> None:
    """``--out FILE``, no default: :func:`require_out` checks it after parsing."""
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help=f"the Markdown report to write {what} into; --out BENCHMARKS.md updates the "
        "repository's report (required: there is no default)",
    )


def require_out(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A usage error (exit status 2) when the command writes and no ``--out`` was given."""
    if args.out is not None or getattr(args, "no_write", False):
        return
    alternative = ", or --no-write to print only" if hasattr(args, "no_write") else ""
    p.error(f"--out is required: --out BENCHMARKS.md updates the report{alternative}")
