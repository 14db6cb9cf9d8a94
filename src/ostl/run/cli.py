"""The ``ostl`` command: ``list``, ``train``, ``evaluate``, ``compare``, ``export-nir``, ``demo``,
``stream`` (:mod:`.stream`).

The parser, its help and the example commands of ``ostl --help`` are in :mod:`.parser`;
``ostl list`` is :mod:`.listing`; what a run shows while it trains (bars on a terminal, a few
lines otherwise) is :mod:`.display`, the scalars it logs :mod:`.logs`.

A new run's folder (``--out``, default ``runs/<task>-<rule>-<time>``, a new folder every time)
is created and checked before training starts: an unwritable one, or one that already holds a
run (its config.json, a model or checkpoints), is refused unless ``--overwrite`` is given.
SIGINT (Ctrl-C) or SIGTERM while training writes a checkpoint and the current weights, prints
the ``--resume`` command, and exits with status 130 (SIGINT) or 143 (SIGTERM). ``train`` holds
the run folder's lock (:mod:`.lock`) from before it checks the folder until the run ends; a
second command on the same folder is refused (exit status 2, naming the PID holding it).

The options of ``train`` and ``compare`` that set the run's configuration are generated from
the fields of :class:`~ostl.run.config.TrainConfig` (:mod:`.options`): one option per field,
with its help and default.

Bad input (unknown names, bad sizes, a missing optional dependency, a busy run folder) prints
one line ``ostl: error: ...`` on stderr and exits with status 2, without a traceback; so does a
failure of the machine (a full disk, a worker process that died, hung or timed out), with exit
status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import fields, replace
from functools import partial
from pathlib import Path

import torch

from ..cells import CELLS
from ..distributed import CollectiveError
from ..errors import OSTLError
from ..numerics import flush_denormals_globally
from ..rules import RULES, TraceRule
from .checkpoint import WriteError
from .config import TrainConfig
from .display import report
from .export import cmd_export_nir
from .lock import HELD_ENV, folder_lock
from .options import flag, given, names
from .parser import build_parser
from .rule_options import parse_rule_options
from .signals import Interrupted

# Over 400 lines on purpose: the commands share the run-folder helpers below (claiming a folder,
# discarding it on failure, --nproc relaunch); the parser lives in .parser, each command's work
# in its own module (train, compare, stream, evaluate, export).
__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class WorkerError(Exception):
    """A worker process of ``--nproc`` failed: reported as one line, exit status 1."""


# -- commands ------------------------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    torch.set_num_threads(args.threads) if args.threads else None
    run_demo(DemoConfig(epochs=args.epochs, seed=args.seed), progress=not args.no_progress)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .listing import format_listing

    print(format_listing())
    return 0


def _config(args: argparse.Namespace, quick: bool = False) -> TrainConfig:
    """The TrainConfig of a train/compare command: --config file, then explicit options; its
    task a registry name (lowercased) or ``module:attribute``, imported here (a bad one fails
    before anything runs)."""
    from ..tasks import Task, is_task_path, parse_options, task_builder

    if getattr(args, "config", None):
        try:
            cfg = TrainConfig.from_json(json.loads(Path(args.config).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise CLIError(f"cannot read the config {args.config}: {e}") from None
    else:
        cfg = TrainConfig()
    explicit = given(args)
    cfg = replace(cfg, **explicit)
    if not is_task_path(cfg.task):
        cfg = replace(cfg, task=cfg.task.lower())
    builder = task_builder(cfg.task)  # one line naming the task, module or attribute if bad
    if cfg.cell is not None and cfg.cell.lower() not in CELLS:
        raise CLIError(f"unknown cell {cfg.cell!r}: expected one of {', '.join(CELLS)}")
    opts = dict(cfg.task_options)
    if quick:  # the task's short run: budget fields not given, and task options
        budget_keys = {f.name for f in fields(TrainConfig)}
        for k, v in getattr(builder, "quick", Task.quick).items():
            if k in budget_keys and k not in explicit:
                cfg = replace(cfg, **{k: v})
            elif k not in budget_keys:
                opts.setdefault(k, v)
    opts.update(parse_options(cfg.task, args.task_options or []))
    if getattr(args, "rule_options", None):  # --rule-opt, typed as the rule's options
        ropts = {**cfg.rule_options, **parse_rule_options(cfg.rule, args.rule_options)}
        cfg = replace(cfg, rule_options=ropts)
    return replace(cfg, task_options=opts)


def _default_out(*parts: str) -> Path:
    """``runs/<parts>-<date>-<time>``, with ``-2``, ``-3``... if taken: created here, so that
    two runs started in the same second get two folders (a torchrun worker only names it). A
    task ``mypkg.data:make_task`` becomes ``mypkg.data-make_task``."""
    from ..distributed import launched

    parts = tuple(re.sub(r"[^A-Za-z0-9._-]+", "-", p) for p in parts)
    base = Path("runs") / "-".join([*parts, time.strftime("%Y%m%d-%H%M%S")])
    if launched():
        return base
    for n in range(1, 1000):
        out = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            out.mkdir(parents=True)
            return out
        except FileExistsError:
            continue
        except OSError as e:
            raise CLIError(f"cannot create the run folder {out}: {e.strerror or e}") from None
    raise CLIError(f"cannot find a free run folder name {base}-N")


def _without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` / ``--nproc=N`` (the workers must not relaunch)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _saved_config(out: Path) -> TrainConfig:
    """The TrainConfig of the run folder ``out`` (its config.json), for ``--resume``."""
    path = out / "config.json"
    try:
        return TrainConfig.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise CLIError(f"--resume {out}: cannot read {path.name}: {e}") from None


def _launch_train(args: argparse.Namespace, cfg: TrainConfig, out: Path | None) -> int:
    """``ostl train --nproc N``: the same command in N processes under torchrun."""
    from .. import distributed as dist

    if dist.launched():
        raise CLIError("--nproc inside a torchrun worker: launch with one or the other, not both")
    batch = cfg.batch_size
    if batch is None:
        from ..tasks import task_defaults

        batch = task_defaults(cfg.task, **cfg.task_options).batch_size
    if batch < args.nproc:
        raise CLIError(
            f"--nproc {args.nproc} needs a batch of at least {args.nproc} sequences (one per "
            f"process), got --batch-size {batch}"
        )
    dev = torch.device(cfg.device)
    if dev.type == "cuda":  # NCCL: one GPU per process, cuda:LOCAL_RANK
        if dev.index is not None:
            raise CLIError(f"--nproc with --device {cfg.device}: use --device cuda (each process "
                           "takes its own GPU, cuda:LOCAL_RANK)")  # fmt: skip
        if torch.cuda.device_count() < args.nproc:
            raise CLIError(
                f"--nproc {args.nproc} on CUDA needs {args.nproc} GPUs (one per process), this "
                f"machine has {torch.cuda.device_count()}"
            )
    # the run folder is named here, once: every worker gets the same --out (or --resume)
    worker = ["-m", "ostl", *_without_nproc(args.argv)]
    if out is not None:
        worker += ["--out", str(out)]
    # this process holds the run folder's lock for its workers (they die with it)
    status = dist.launch(worker, args.nproc, env={**os.environ, HELD_ENV: str(os.getpid())})
    if status < 0:  # torchrun itself was killed: its workers die with it (ostl.torchrun)
        raise WorkerError(f"torchrun was killed by signal {-status}; its workers ended with it")
    if status != 0:
        raise WorkerError(
            f"a worker process failed (torchrun exit status {status}); every worker was "
            "stopped. The failing rank's error is above."
        )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .. import distributed as dist
    from .train import restarts, resume, train

    # the run options given (a new run takes the defaults of the others, --resume the run's)
    keys = ("checkpoint_every", "keep", "stop_after_steps", "log_every", "tensorboard")
    options = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    nproc = args.nproc is not None and args.nproc > 1
    new: Path | None = None  # the folder of a new run (a resumed run's is left alone)
    with ExitStack() as locked:  # the run folder's lock, until the run ends
        if args.resume:
            out, created = _resume_dir(args), False
            locked.enter_context(folder_lock(out))
            cfg = _saved_config(out)
            if restarts(out) and _speaks():
                msg = "holds no checkpoint (the run was stopped before its first): restarting it"
                print(f"ostl train: {out} {msg} from step 0 with its config.json", file=sys.stderr)
            run = partial(resume, out, progress=not args.no_progress, **options)
        else:
            cfg = _config(args)
            new, created = out, _ = _new_run_dir(args, cfg, locked)
            run = partial(train, cfg, out, progress=not args.no_progress, **options)
        if not dist.launched_as_main():  # rank > 0 of torchrun: rank 0 owns the run folder
            new = None
        with _discarded_on_failure(new, created):
            if nproc:
                return _launch_train(args, cfg, new)
            dist.init(cfg.device)  # under torchrun: join the process group (no-op otherwise)
            try:
                result = run()
                reports = dist.is_main()
            finally:
                dist.shutdown()
    if reports:  # one report, from rank 0
        report(result, out)
    return 0


def _speaks() -> bool:
    """Whether this process prints the notes of a run: one process of a torchrun group (the
    ``--nproc`` launcher, or rank 0 when torchrun was started directly)."""
    from .. import distributed as dist

    return not dist.launched() or (dist.launched_as_main() and not os.environ.get(HELD_ENV))


@contextmanager
def _discarded_on_failure(out: Path | None, created: bool) -> Iterator[None]:
    """A command that fails before its run wrote anything but config.json leaves no run
    folder behind (an interrupted run, saved, is kept)."""
    try:
        yield
    except Interrupted:
        raise
    except BaseException:
        if out is not None:
            from .outputs import discard_unused

            discard_unused(out, created)
        raise


def _claim_out(
    args: argparse.Namespace, *default: str, locked: ExitStack, compare: bool = False
) -> tuple[Path, bool]:
    """The checked and created ``--out`` of a new run or comparison (default: a new folder
    ``runs/<default>-<time>``), and whether this command created it. Its lock is taken first
    (and held until ``locked`` closes): a folder that another process writes is left alone."""
    from ..distributed import launched_as_main
    from .outputs import discard_unused, prepare_folder

    if args.out:
        out, created = Path(args.out), not Path(args.out).exists()
    else:
        out, created = _default_out(*default), True
    if not launched_as_main():  # a torchrun worker of rank > 0: rank 0 owns the folder
        return out, False
    try:
        locked.enter_context(folder_lock(out))
    except OSTLError:
        if created:
            discard_unused(out, created)
        raise
    with _discarded_on_failure(out, created):
        prepare_folder(out, overwrite=args.overwrite, compare=compare)
    return out, created


def _new_run_dir(
    args: argparse.Namespace, cfg: TrainConfig, locked: ExitStack
) -> tuple[Path, bool]:
    """The run folder of a new run (``--out`` or a fresh name), checked with its rule, created
    before any training; and whether this command created it."""
    if cfg.rule not in RULES:
        raise CLIError(f"unknown rule {cfg.rule!r}: expected one of {', '.join(RULES)}")
    if cfg.compile and not issubclass(RULES[cfg.rule], TraceRule):
        raise CLIError(f"--compile applies to the online trace rules, not to {cfg.rule}")
    return _claim_out(args, cfg.task, cfg.rule, locked=locked)


def _resume_dir(args: argparse.Namespace) -> Path:
    """The run folder of --resume, checked; no run option may be given with it."""
    dropped = [flag(f) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None]
    dropped += [f"--{k}" for k in ("config", "out") if getattr(args, k) is not None]
    dropped += ["--overwrite"] if args.overwrite else []
    if dropped:
        raise CLIError(
            f"--resume continues a run with its own config.json: drop {', '.join(dropped)}"
        )
    out = Path(args.resume)
    if not out.is_dir():
        raise CLIError(f"--resume {out}: no such run folder")
    if not (out / "config.json").is_file():
        raise CLIError(f"--resume {out}: no config.json (not a run folder written by ostl train)")
    return out


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..distributed import launched
    from .compare import DEFAULT_RULES, available_rules, compare, format_table

    if launched():
        raise CLIError("compare runs in one process: under torchrun, use `ostl train` per rule")

    if args.rules is None:
        rules, missing = available_rules(DEFAULT_RULES)
        if missing:
            print(f"note: rule(s) {', '.join(missing)} not available here; comparing {rules}")
    else:
        rules = names(args.rules)
        unknown = [r for r in rules if r not in RULES]
        if unknown or not rules:
            raise CLIError(
                f"unknown rule(s) {', '.join(unknown) or '(none given)'}: expected names from "
                f"{', '.join(RULES)}"
            )
    cfg = _config(args, quick=args.quick)
    with ExitStack() as locked:
        out, created = _claim_out(args, "compare", cfg.task, locked=locked, compare=True)
        with _discarded_on_failure(out, created):
            results = compare(cfg, rules, out, progress=not args.no_progress)
    r0 = results[0].config
    print(
        f"\n{r0.task}: {r0.cell} {list(r0.hidden or ())}, {r0.epochs} epochs, batch "
        f"{r0.batch_size}, Adam lr {r0.lr}, schedule {r0.schedule!r}, seed {r0.seed}"
    )
    print(format_table(results))
    print(f"compare folder: {out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .model import evaluate_model, run_config

    threads = args.threads or run_config(args.run).threads  # as the run
    ev = evaluate_model(
        args.run,
        args.which,
        args.split,
        device=args.device,
        batch_size=args.batch_size,
        threads=threads,
    )
    epoch = f", epoch {ev.epoch}" if ev.epoch is not None else ""
    print(f"{ev.split} {ev.metric}: {ev.value!r}  ({ev.path}{epoch})")
    return 0


def _cmd_stream(args: argparse.Namespace) -> int:
    from .stream import from_args, report_stream, run_stream

    cfg, stream = from_args(args)  # checked before the folder: bad input leaves nothing
    with ExitStack() as locked:
        out, created = _claim_out(args, "stream", cfg.task, locked=locked, compare=True)
        with _discarded_on_failure(out, created):
            results = run_stream(cfg, out, progress=not args.no_progress, stream=stream)
    report_stream(cfg, results, out)
    return 0


COMMANDS = {
    "demo": _cmd_demo,
    "list": _cmd_list,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "compare": _cmd_compare,
    "export-nir": cmd_export_nir,
    "stream": _cmd_stream,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ostl`` command; returns the exit status."""
    from ..tasks import MissingDependencyError

    # before any torch work, so that torch's worker threads inherit it (see ostl.numerics)
    flush_denormals_globally()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return int(COMMANDS[args.command](args))
    except (WorkerError, CollectiveError, WriteError) as e:  # the machine failed, not the input
        print(f"ostl {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (CLIError, OSTLError, MissingDependencyError, ValueError, OSError) as e:
        print(f"ostl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:  # SIGINT/SIGTERM while training: saved, resumable
        print(f"ostl {args.command}: {e.report()}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print(f"ostl {args.command}: interrupted", file=sys.stderr)
        return 130
