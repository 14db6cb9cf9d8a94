"""The ``ostl`` command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from .cells import CELLS
from .rules import RULES


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    torch.set_num_threads(args.threads) if args.threads else None
    run_demo(DemoConfig(epochs=args.epochs, seed=args.seed), progress=not args.no_progress)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    print("cells:", ", ".join(CELLS))
    print("rules:", ", ".join(RULES))
    return 0


def _positive(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ostl", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="online learning with OSTL on a synthetic pattern")
    d.add_argument("--epochs", type=_positive, default=60)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=_positive, default=None, help="torch CPU threads")
    d.add_argument("--no-progress", action="store_true", help="print lines instead of a bar")
    d.set_defaults(func=_cmd_demo)
    ls = sub.add_parser("list", help="list the cells and rules")
    ls.set_defaults(func=_cmd_list)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
