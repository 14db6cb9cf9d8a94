"""``ostl stream``: several rules learn on one stream, test then train, side by side.

Every rule starts from the same initial weights (the seed) and reads the same stream (the same
seed), with no resets: each prediction is scored before the learner sees its target
(:mod:`ostl.streams.prequential`). Truncated BPTT is ``tbptt-K`` (an update every K steps, K
steps of activations held); the online rules update after every step; full BPTT is refused
with the memory it would need (:func:`check_rules`). The folder's files are those of
:mod:`.stream_outputs`, rewritten after every rule.

SIGINT (Ctrl-C) or SIGTERM stops the rule running at its next step: the folder then holds the
rules done and the steps the stopped one took, and :class:`StreamInterrupted` (exit status 130
or 143) says so; a rule that fails (NaN from a step size far too large) leaves the same. A run
is not resumable: rerun it with the command in its ``config.json``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from tqdm import tqdm

from ..cells import CELLS
from ..errors import OptionError
from ..learner import Learner
from ..rules import BPTT
from ..streams import Stream, get_stream, stream_options
from ..streams.learners import DEFAULT_STREAM_RULES, FULL_BPTT, INSTEAD, FullBPTTError, stream_rule
from ..streams.prequential import DEFAULT_CHUNK, DEFAULT_WINDOW, Prequential, PrequentialResult
from ..streams.recovery import DEFAULT_ATOL, DEFAULT_TOL
from .compare import format_bytes
from .display import LINE_INTERVAL, display_mode
from .run import checked_device
from .signals import Interrupted, Signals
from .stream_outputs import format_stream_table, write_stream_config, write_stream_folder

__all__ = [
    "StreamConfig",
    "run_stream",
    "from_args",
    "report_stream",
    "check_rules",
    "bptt_bytes_per_step",
    "StreamInterrupted",
    "format_stream_table",
]


@dataclass
class StreamConfig:
    """Everything that defines an ``ostl stream`` run; None fields take the stream's defaults.

    Attributes:
        task: the stream's registry name (:data:`ostl.streams.STREAMS`).
        rules: rule specs (:func:`ostl.streams.learners.stream_rule`), in table order.
        steps: steps to take (None: the whole stream).
        window: steps per window of the windowed error and the recovery times.
        seed: seed of the initial weights and of the stream.
        task_options: the stream's options.
        lr: Adam's learning rate (None: the stream's).
        cell: cell of the hidden layers (None: the stream's).
        hidden: hidden layer sizes (None: the stream's).
        device: torch device.
        threads: torch CPU threads (1, as ``ostl train``; None: torch's default).
        chunk: steps per chunk read from the stream.
        tol: relative tolerance of the recovery times (:mod:`ostl.streams.recovery`).
        atol: absolute tolerance of the recovery times.
    """

    task: str = "drift"
    rules: tuple[str, ...] = DEFAULT_STREAM_RULES
    steps: int | None = None
    window: int = DEFAULT_WINDOW
    seed: int = 0
    task_options: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None
    cell: str | None = None
    hidden: tuple[int, ...] | None = None
    device: str = "cpu"
    threads: int | None = 1
    chunk: int = DEFAULT_CHUNK
    tol: float = DEFAULT_TOL
    atol: float = DEFAULT_ATOL

    def resolve(self, stream: Stream) -> StreamConfig:
        """Every None field filled from the stream, the rules checked, names lowercased."""
        d = stream.defaults
        if self.cell is not None and self.cell.lower() not in CELLS:
            raise OptionError(f"unknown cell {self.cell!r}: expected one of {', '.join(CELLS)}")
        rules = tuple(s.strip().lower() for s in self.rules if s.strip())
        if not rules:
            raise OptionError("no rule given: expected e.g. --rules ostl,tbptt-16")
        if self.steps is None and stream.length is None:
            raise OptionError(f"the stream {stream.name!r} is endless: give the steps to take")
        return replace(
            self,
            task=stream.name,
            rules=rules,
            steps=self.steps if self.steps is not None else stream.length,
            task_options=stream_options(stream),
            lr=self.lr if self.lr is not None else d.lr,
            cell=(self.cell or d.cell).lower(),
            hidden=tuple(self.hidden or d.hidden),
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["rules"], out["hidden"] = list(self.rules), self.hidden and list(self.hidden)
        return {**out, "command": self.command()}

    def command(self) -> str:
        """The ``ostl stream`` command that reruns this configuration."""
        parts = ["ostl stream", f"--task {self.task}", f"--rules {','.join(self.rules)}"]
        parts += [f"--task-opt {k}={_opt(v)}" for k, v in self.task_options.items()]
        for name in ("steps", "window", "seed", "lr", "cell", "threads", "chunk", "tol", "atol"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"--{name} {value}")
        if self.hidden is not None:
            parts.append(f"--hidden {','.join(map(str, self.hidden))}")
        if self.device != "cpu":
            parts.append(f"--device {self.device}")
        return " ".join(parts)


def _opt(v: Any) -> str:
    return "none" if v is None else str(v)


class StreamInterrupted(Interrupted):
    """An ``ostl stream`` run stopped by SIGINT or SIGTERM during rule ``rule``."""

    def __init__(self, signum: int, step: int, out: Path | None, rule: str) -> None:
        super().__init__(signum, step, out, checkpoint=False)
        self.rule = rule

    def report(self) -> str:
        head = f"interrupted by {self.name} after step {self.step} of {self.rule}"
        if self.out is None:
            return f"{head}; no folder: nothing was saved"
        return f"{head}; the rules done and the steps {self.rule} took are in {self.out}"


def bptt_bytes_per_step(stream: Stream, cfg: StreamConfig, probe: int = 24) -> float | None:
    """Full BPTT's held memory per step on this stream and network, measured over ``probe``
    steps (the growth from step ``probe // 3`` to step ``probe``); None if the stream is
    shorter than ``probe`` steps."""
    if cfg.steps is not None and cfg.steps < probe:
        return None
    held = []
    for steps in (probe // 3, probe):
        net = _network(stream, cfg)
        opt = torch.optim.SGD(net.parameters(), lr=0.0)
        learner = Learner(net, BPTT(), loss_fn=stream.loss_fn, optimizer=opt, update_every=None)
        p = Prequential(stream, learner, steps=steps, window=1, seed=cfg.seed, chunk_size=probe)
        held.append(p.run().held_bytes)
    return (held[1] - held[0]) / (probe - probe // 3)


def check_rules(stream: Stream, cfg: StreamConfig) -> None:
    """Refuse unknown rule specs and full BPTT, the latter with the memory it would hold.

    Raises:
        OptionError: an unknown rule spec.
        FullBPTTError: ``bptt`` among the rules (the message gives its memory per step here
            and at the end of the run).
    """
    for spec in cfg.rules:
        try:
            stream_rule(spec)
        except FullBPTTError:
            per_step = bptt_bytes_per_step(stream, cfg)
            where = ""
            if per_step is not None and cfg.steps is not None:
                where = f" (about {format_bytes(per_step)} per step here"
                where += f", {format_bytes(per_step * cfg.steps)} after the {cfg.steps:,} steps"
                where += " of this stream)" if cfg.steps == stream.length else " of this run)"
            raise FullBPTTError(f"{FULL_BPTT}{where}; {INSTEAD}") from None


def _network(stream: Stream, cfg: StreamConfig) -> Any:
    return stream.network(cfg.cell, cfg.hidden, seed=cfg.seed).to(torch.device(cfg.device))


def _device(cfg: StreamConfig) -> None:
    """Set the CPU threads; check the device."""
    checked_device(cfg.device, cfg.threads)


def _stream_json(stream: Stream, cfg: StreamConfig) -> dict[str, Any]:
    assert cfg.steps is not None
    drifts = [d for d in stream.drifts if d < cfg.steps]
    return {"name": stream.name, "kind": stream.kind, "metric": stream.metric,
            "length": stream.length, "drifts": drifts}  # fmt: skip


def run_stream(
    cfg: StreamConfig,
    out: str | Path | None = None,
    *,
    progress: bool = True,
    stream: Stream | None = None,
) -> list[PrequentialResult]:
    """Run every rule of ``cfg`` on its stream and write the folder ``out`` (None: nothing).

    Args:
        cfg: the configuration (None fields: the stream's defaults).
        out: the folder (created).
        progress: show the progress on stderr (bars on a terminal, a few lines otherwise).
        stream: the stream, if already built (it must be ``cfg``'s).

    Raises:
        StreamInterrupted: SIGINT or SIGTERM (or KeyboardInterrupt) during a rule; the folder
            holds what was done.
        OptionError, FullBPTTError: bad settings, before anything runs.
        NonFiniteError: a rule met NaN or Inf (a step size far too large); the folder holds
            the steps it took, and the rules before it.
    """
    stream = stream if stream is not None else get_stream(cfg.task, **cfg.task_options)
    cfg = cfg.resolve(stream)
    _device(cfg)
    check_rules(stream, cfg)
    folder = Path(out) if out is not None else None
    config, info = cfg.to_json(), _stream_json(stream, cfg)
    if folder is not None:
        write_stream_config(folder, config)
    mode = display_mode(progress)
    results: list[PrequentialResult] = []
    with Signals() as signals:
        for spec in cfg.rules:
            p = _prequential(stream, cfg, spec)
            shown = _Progress(mode, spec, p.length, stream.metric, cfg.window)
            try:
                result = p.run(on_chunk=shown.update, stop=lambda: signals.caught is not None)
            except KeyboardInterrupt:  # a second Ctrl-C, or raised inside a step
                result = p.result()
                signals.caught = signals.caught or signal.SIGINT
            except Exception:  # e.g. NaN from a step size far too large: keep what was done
                if folder is not None:
                    write_stream_folder(folder, config, info, [*results, p.result()])
                raise
            finally:
                shown.close()
            results.append(result)
            shown.summary(result)
            if folder is not None:
                last = result.interrupted or spec == cfg.rules[-1]
                write_stream_folder(folder, config, info, results, plot=last)
            if result.interrupted and signals.caught is not None:
                raise StreamInterrupted(signals.caught, result.steps, folder, spec)
    return results


def from_args(args: argparse.Namespace) -> tuple[StreamConfig, Stream]:
    """The configuration of ``ostl stream``'s options, resolved and checked, and its stream."""
    from ..streams import parse_options

    cfg = StreamConfig(
        task=args.task.lower(), rules=tuple(args.rules.split(",")), steps=args.steps,
        window=args.window, seed=args.seed, lr=args.lr, cell=args.cell, hidden=args.hidden,
        device=args.device, threads=args.threads, chunk=args.chunk, tol=args.tol, atol=args.atol,
        task_options=parse_options(args.task, args.task_options or []),
    )  # fmt: skip
    stream = get_stream(cfg.task, **cfg.task_options)
    cfg = cfg.resolve(stream)
    _device(cfg)
    check_rules(stream, cfg)
    return cfg, stream


def report_stream(cfg: StreamConfig, results: list[PrequentialResult], out: Path) -> None:
    """What ``ostl stream`` prints at the end: the command, the table, the folder."""
    print(f"\n{cfg.command()}")
    print(format_stream_table([r.to_json() for r in results]))
    print(f"stream folder: {out}")


def _prequential(stream: Stream, cfg: StreamConfig, spec: str) -> Prequential:
    rule, every = stream_rule(spec)
    net = _network(stream, cfg)  # the same initial weights for every rule
    assert cfg.lr is not None
    learner = Learner(
        net,
        rule,
        loss_fn=stream.loss_fn,
        optimizer=torch.optim.Adam(net.parameters(), lr=cfg.lr),
        update_every=every,
    )
    return Prequential(
        stream,
        learner,
        steps=cfg.steps,
        window=cfg.window,
        seed=cfg.seed,
        chunk_size=cfg.chunk,
        label=spec,
        tol=cfg.tol,
        atol=cfg.atol,
    )


class _Progress:
    """One rule's progress on stderr: a bar over the steps (a terminal), or a line at most
    every :data:`~.display.LINE_INTERVAL` seconds and one at the end (otherwise), or nothing."""

    def __init__(
        self, mode: str | None, label: str, total: int, metric: str, window: int,
        stream: TextIO | None = None,
    ) -> None:  # fmt: skip
        self.mode, self.label, self.total, self.metric = mode, label, total, metric
        self.window, self.stream = window, stream or sys.stderr
        self.t0 = self.last = time.perf_counter()
        self.bar: Any = None
        if mode == "bars":
            self.bar = tqdm(total=total, desc=label, unit="step", file=self.stream)

    def _recent(self, p: Prequential) -> float:
        e = p.errors[max(0, p.done - self.window) : p.done]
        e = e[~np.isnan(e)]
        return float(e.mean()) if len(e) else float("nan")

    def update(self, p: Prequential) -> None:
        if self.bar is not None:
            self.bar.update(p.done - self.bar.n)
            self.bar.set_postfix({self.metric: f"{self._recent(p):.4f}"})
        elif self.mode == "lines":
            now = time.perf_counter()
            if now - self.last >= LINE_INTERVAL and p.done < self.total:
                self.last = now
                self._line(
                    f"{p.done:,}/{self.total:,} steps, {self.metric} of the last "
                    f"{self.window} {self._recent(p):.4f} ({now - self.t0:.0f} s)"
                )

    def summary(self, r: PrequentialResult) -> None:
        if self.mode is not None:
            self._line(
                f"{r.steps:,} steps{' (stopped)' if r.interrupted else ''}: prequential "
                f"{self.metric} {r.final_error:.4f}, last window {r.last_window_error:.4f}, "
                f"held {format_bytes(r.held_bytes)}, {r.steps_per_second:,.0f} steps/s"
            )

    def _line(self, text: str) -> None:
        print(f"{self.label} {text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
