"""The argument parser of the ``ostl`` command; :mod:`.cli` runs the commands it parses.

Every option's help ends with its default: the options generated from the fields of
:class:`~.config.TrainConfig` get it from :mod:`.options`, the hand-written ones below from
argparse (``%(default)s``) or, where the default is computed later, in words. ``ostl --help``
shows :data:`DESCRIPTION` and the example commands of :data:`EXAMPLES`, as plain text.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from .._version import __version__
from ..interop.nir import DEFAULT_DT
from .compare import DEFAULT_RULES
from .demo import DemoConfig
from .logs import LOG_EVERY
from .options import _positive_float, _sizes, add_config_options, non_negative, positive
from .resume import RunOptions

__all__ = ["build_parser", "DESCRIPTION", "EXAMPLES"]

DESCRIPTION = (
    "Online learning rules (OSTL, OSTTP and others, with BPTT and RTRL as references) for "
    "recurrent and spiking neural networks: train a network on a task, evaluate it, and "
    "compare rules side by side."
)

EXAMPLES = """\
examples:
  ostl list                                  rules, cells, tasks and the tasks' options
  ostl demo                                  OSTL learns a pattern online (about a minute)
  ostl train --task digits --rule ostl --hidden 128 --epochs 10 --out runs/x
  ostl train --config runs/x/config.json     rerun a run from its folder
  ostl train --out runs/x --checkpoint-every 500 --keep 3
  ostl train --resume runs/x                 continue from the newest checkpoint
  ostl train --nproc 2 --task digits         2 processes (torchrun), data-parallel
  ostl train --out runs/x --tensorboard      also TensorBoard events in runs/x/tb
  ostl evaluate runs/x --which last          the test metric of the saved weights
  ostl compare --task digits --rules bptt,ostl,osttp --quick
  ostl export-nir runs/x model.nir           a LIF network as NIR, for neuromorphic hardware
  ostl stream --task drift --rules ostl,tbptt-16 --steps 5000
                                             learn on a stream, test then train, no resets

'ostl COMMAND --help' lists a command's options with their defaults.
"""

_NO_PROGRESS = (
    "show nothing while training: no bars (on a terminal) and no progress lines (otherwise: "
    "a line per epoch and a few within long epochs); the final table is still printed"
)


def _add_output_options(p: argparse.ArgumentParser, what: str, default: str) -> None:
    p.add_argument("--out", help=f"{what} (default: {default}, a new folder)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into --out even if it holds a run: its files (config, metrics, scalars, "
        "models, checkpoints, figures) are replaced",
    )
    p.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS)


def _add_demo(sub: Any) -> None:
    d = sub.add_parser("demo", help="online learning with OSTL on a synthetic pattern")
    d.add_argument(
        "--epochs",
        type=positive,
        default=DemoConfig.epochs,
        help="passes over the pattern (default: %(default)s)",
    )
    d.add_argument(
        "--seed",
        type=int,
        default=DemoConfig.seed,
        help="seed of the pattern and the weights (default: %(default)s)",
    )
    d.add_argument("--threads", type=positive, help="torch CPU threads (default: torch's)")
    d.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar: print the loss every 10 epochs instead (as when stderr is not a "
        "terminal)",
    )


def _add_evaluate(sub: Any) -> None:
    e = sub.add_parser("evaluate", help="the test metric of a run's saved model")
    e.add_argument("run", metavar="RUN_DIR", help="a run folder (or a model .safetensors file)")
    e.add_argument(
        "--which",
        choices=("best", "last"),
        default="best",
        help="best: model.safetensors, the best validation epoch (the run's test metric); "
        "last: model-last.safetensors, the latest weights (default: %(default)s)",
    )
    e.add_argument(
        "--split",
        choices=("test", "valid"),
        default="test",
        help="the split to evaluate (default: %(default)s)",
    )
    e.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    e.add_argument("--batch-size", type=positive, help="sequences per batch (default: the run's)")
    e.add_argument("--threads", type=positive, help="torch CPU threads (default: the run's)")


def _add_export_nir(sub: Any) -> None:
    e = sub.add_parser(
        "export-nir",
        help="a run's trained LIF network as a NIR file, for neuromorphic hardware and simulators",
    )
    e.add_argument("run", metavar="RUN_DIR", help="a run folder (or a model .safetensors file)")
    e.add_argument(
        "out", metavar="OUT.nir", help="the NIR file to write (HDF5; replaced if it exists)"
    )
    e.add_argument(
        "--which",
        choices=("best", "last"),
        default="best",
        help="best: model.safetensors, the best validation epoch's weights; last: "
        "model-last.safetensors, the latest weights (default: %(default)s)",
    )
    e.add_argument(
        "--dt",
        type=_positive_float,
        default=DEFAULT_DT,
        metavar="SECONDS",
        help="the time step that one step of the network stands for, the step to simulate the "
        "graph with (snnTorch reads NIR with 1e-4) (default: %(default)s)",
    )


def _add_run_options(t: argparse.ArgumentParser) -> None:
    """The options of ``train`` that are not the run's configuration (:class:`RunOptions`).

    Their parsed default is None (not given): a new run takes :class:`RunOptions`' defaults
    (shown in the help), ``--resume`` the run's own, saved in its folder (``options.json``)."""
    t.add_argument(
        "--checkpoint-every",
        type=positive,
        metavar="N",
        help="write a checkpoint every N time steps (and at every epoch end) to OUT/checkpoints "
        "(default: none)",
    )
    t.add_argument(
        "--keep", type=positive, help=f"checkpoints to keep (default: {RunOptions.keep})",
    )  # fmt: skip
    t.add_argument(
        "--stop-after-steps",
        type=positive,
        metavar="N",
        help="write a checkpoint and stop after N time steps, to continue with --resume "
        "(default: never)",
    )
    t.add_argument(
        "--log-every",
        type=non_negative,
        metavar="N",
        help="append the training scalars (step, epoch, mean loss of the last N steps, learning "
        f"rate, seconds) to OUT/scalars.csv every N time steps; 0: none (default: {LOG_EVERY})",
    )
    t.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        help="also write the scalars, and every epoch's train loss and metrics, as TensorBoard "
        "events in OUT/tb (needs the tensorboard package: pip install 'ostl[tensorboard]') "
        "(default: off)",
    )


def _add_train(sub: Any) -> None:
    t = sub.add_parser("train", help="train one network with one rule on a task")
    add_config_options(t)
    t.add_argument("--config", help="a run folder's config.json to rerun (options override it)")
    t.add_argument(
        "--nproc",
        type=positive,
        help="processes on this machine, data-parallel: relaunches through torchrun, the batch "
        "is split between them (default: 1)",
    )
    _add_output_options(t, "run folder", "runs/<task>-<rule>-<time>")
    t.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR from its newest checkpoint and DIR/config.json, with its "
        "checkpoint, scalar and TensorBoard options unless given again (a run that wrote no "
        "checkpoint yet restarts from step 0)",
    )
    _add_run_options(t)


def _add_compare(sub: Any) -> None:
    c = sub.add_parser("compare", help="train the same network with several rules, side by side")
    c.add_argument(
        "--rules",
        help=f"comma-separated rules (default: {','.join(DEFAULT_RULES)}, those registered)",
    )
    c.add_argument(
        "--quick",
        action="store_true",
        help="a short run of about a minute (the task's quick budget and data)",
    )
    add_config_options(c, exclude=("rule",))
    _add_output_options(c, "comparison folder", "runs/compare-<task>-<time>")


def _add_stream(sub: Any) -> None:
    from ..streams import STREAMS
    from ..streams.learners import DEFAULT_STREAM_RULES
    from ..streams.prequential import DEFAULT_CHUNK, DEFAULT_WINDOW
    from ..streams.recovery import DEFAULT_ATOL, DEFAULT_TOL

    s = sub.add_parser(
        "stream",
        help="several rules learn on one stream, each prediction scored before its target is "
        "seen (prequential evaluation), side by side",
    )
    s.add_argument(
        "--task",
        default="drift",
        help=f"the stream: {', '.join(STREAMS)} (default: %(default)s)",
    )
    s.add_argument(
        "--rules",
        default=",".join(DEFAULT_STREAM_RULES),
        help="comma-separated: tbptt-K (truncated BPTT, K steps), ostl, osttp, eprop, snap, ... "
        "(full bptt is refused: its memory grows with the stream) (default: %(default)s)",
    )
    s.add_argument("--steps", type=positive, help="steps to take (default: the whole stream)")
    s.add_argument(
        "--window",
        type=positive,
        default=DEFAULT_WINDOW,
        help="steps per window of the windowed error and the recovery times (default: %(default)s)",
    )
    s.add_argument(
        "--seed", type=int, default=0, help="seed of the weights and the stream (default: 0)"
    )
    s.add_argument(
        "--task-opt",
        dest="task_options",
        action="append",
        metavar="KEY=VALUE",
        help="an option of the stream (repeat for several; an unknown one is refused with "
        "the list of the stream's options)",
    )
    s.add_argument("--lr", type=_positive_float, help="Adam learning rate (default: the stream's)")
    s.add_argument("--cell", help="cell of the hidden layers (default: the stream's)")
    s.add_argument(
        "--hidden", type=_sizes, help="hidden layer sizes, e.g. 64,64 (default: the stream's)"
    )
    s.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    s.add_argument(
        "--threads", type=positive, default=1, help="torch CPU threads (default: %(default)s)"
    )
    s.add_argument(
        "--chunk",
        type=positive,
        default=DEFAULT_CHUNK,
        help="steps read from the stream at a time (changes nothing but the memory of the "
        "data and how often errors are read back) (default: %(default)s)",
    )
    s.add_argument(
        "--tol",
        type=_non_negative_float,
        default=DEFAULT_TOL,
        help="recovery: back within this fraction of the error before the drift (default: "
        "%(default)s)",
    )
    s.add_argument(
        "--atol",
        type=_non_negative_float,
        default=DEFAULT_ATOL,
        help="recovery: or within this much, in the metric's units (default: %(default)s)",
    )
    s.add_argument("--out", help="stream folder (default: runs/stream-<task>-<time>, a new one)")
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="write into --out even if it holds a stream run or a comparison: their files are "
        "replaced",
    )
    s.add_argument(
        "--no-progress",
        action="store_true",
        help="show nothing while the rules run: no bars (on a terminal) and no progress lines "
        "(otherwise: a line every 30 s or so and one per rule); the final table is still "
        "printed",
    )


def _non_negative_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {s!r}") from None
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {s}")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``ostl`` command; ``args.command`` names the command given."""
    p = argparse.ArgumentParser(
        prog="ostl",
        description=textwrap.fill(DESCRIPTION, 88),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ostl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    sub.add_parser("list", help="the rules, cells and tasks, and each task's options")
    _add_train(sub)
    _add_evaluate(sub)
    _add_compare(sub)
    _add_export_nir(sub)
    _add_stream(sub)
    return p
