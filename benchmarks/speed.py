"""Time per training step of one method on one network, measured inside its own process.

A *sequence* is ``steps`` time steps on a fresh network state (and fresh traces). The clock
runs over the steps and the end of the sequence (BPTT's backward pass and its single optimizer
step; nothing for online rules, which stepped the optimizer after every step), not over the
reset before them. The first ``warmup`` sequences are discarded; the result is the median over
``repeats`` sequences of (seconds ÷ steps). One time step of training is therefore:

- online rules: forward + trace update + learning signal + gradient contraction + Adam step;
- BPTT (ostl, hand-written torch, snnTorch): forward with the autograd graph + 1/T of the
  backward pass and of the Adam step;
- ``"forward"``: ``net.step`` under ``torch.no_grad()`` (inference, no learning);
- ``"jacobians"`` / ``"jacobians-derived"``: every stateful layer's currents, cell step and
  per-neuron Jacobian blocks, closed form or derived (the Jacobian path alone).

``"ostl-torch"`` is OSTL with the fused trace kernel (:mod:`ostl.kernels`) turned off.
``"ostl-compiled"`` is OSTL with ``Learner(..., compile=True)``: one extra sequence before the
warm-up ones compiles the step (a target at every step: one graph), off the clock; its wall
time is recorded, and so are the graphs compiled while the clock ran (none, when all is well).
For rules that keep eligibility traces (``runner.traces``, the trace rules) the bytes of those
traces are recorded for the bandwidth floor (:mod:`.bandwidth`).
For the low-precision variants (``trace_dtype``, :data:`~.workload.VARIANTS`) the gradient of
one sequence (:func:`ostl.gradients`, weights fixed) is compared with the full-precision
OSTL's: the worst cosine and relative error over the parameters are recorded.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ostl import kernels
from ostl.api import gradients
from ostl.engine import neuron_jacobians
from ostl.layer import Layer, Network
from ostl.learner import Learner
from ostl.rules import OSTL

from .bandwidth import trace_bytes
from .baselines import bptt_sequence, direct_ostl_sequence, make_baseline
from .workload import (
    COMPILED,
    KERNEL_OFF,
    VARIANTS,
    NetSpec,
    build_network,
    input_pool,
    loss_fn,
    make_learner,
    make_optimizer,
    make_rule,
    one_hot_targets,
)

__all__ = ["Workload", "prepare", "time_sequences", "measure_speed", "compiled_graphs"]


def time_sequences(
    run: Callable[[], None],
    *,
    warmup: int,
    repeats: int,
    setup: Callable[[], None] | None = None,
    device: str = "cpu",
) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``run`` after ``warmup`` discarded ones.

    ``setup`` runs before each call, off the clock. On CUDA the device is synchronised before
    reading the clock.
    """
    cuda = torch.device(device).type == "cuda"
    times = []
    for i in range(warmup + repeats):
        if setup is not None:
            setup()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


@dataclass
class Workload:
    """One method on one network, ready to run: ``run()`` trains (or infers) one sequence,
    ``setup()`` (if any) resets the state before it, off the clock."""

    run: Callable[[], None]
    setup: Callable[[], None] | None = None
    learner: Learner | None = None


def prepare(
    spec: NetSpec, method: str, steps: int, *, seed: int = 0, device: str = "cpu"
) -> Workload:
    """The network, inputs and training loop of ``method`` on ``spec``: see the module docstring."""
    pool = input_pool(spec, steps, seed=seed, device=device)
    target = one_hot_targets(spec, seed=seed, device=device)
    if method == "forward":
        net = build_network(spec, seed=seed, device=device)

        def infer() -> None:
            with torch.no_grad():
                state = net.init_state(spec.batch)
                for t in range(steps):
                    _, state = net.step(pool[t], state)

        return Workload(infer)
    if method in ("jacobians", "jacobians-derived"):
        net = build_network(spec, seed=seed, device=device)
        return Workload(functools.partial(_jacobians, net, pool, spec.batch, method))
    if method in ("torch", "snntorch", "ostl-direct"):
        ref = make_baseline(method, spec, seed=seed).to(device)
        opt = make_optimizer(ref.parameters())
        run = direct_ostl_sequence if method == "ostl-direct" else bptt_sequence
        return Workload(functools.partial(run, ref, opt, pool, target, steps))  # type: ignore[arg-type]
    learner = make_learner(build_network(spec, seed=seed, device=device), method)

    def train() -> None:
        for t in range(steps):
            learner.step(pool[t], target)
        learner.end_sequence()

    return Workload(train, functools.partial(learner.reset, spec.batch), learner)


def _jacobians(net: Network, pool: torch.Tensor, batch: int, method: str) -> None:
    """Every stateful layer's currents, cell step and Jacobian blocks over the pool's frames."""
    derive = method == "jacobians-derived"
    with torch.no_grad():
        state = list(net.init_state(batch))
        for x in pool:
            for i, layer in enumerate(net.layers):
                if isinstance(layer, Layer):  # the Readout has no Jacobian blocks
                    a_in, a_rec = layer.currents(x, state[i])
                    state[i], _ = neuron_jacobians(layer.cell, a_in, a_rec, state[i], derive=derive)
                    x = getattr(state[i], layer.cell.output)


def compiled_graphs() -> int:
    """Graphs ``torch.compile`` has compiled in this process so far (0 if it cannot tell)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - torch without dynamo
        return 0
    return int(counters["stats"]["unique_graphs"])


def measure_speed(
    spec: NetSpec,
    method: str,
    steps: int,
    *,
    warmup: int = 1,
    repeats: int = 5,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Median milliseconds per time step of ``method`` on ``spec``; see the module docstring.

    Returns:
        ``ms_per_step`` (median), ``ms_per_step_all`` (every repeat), ``trace_bytes`` (None
        for methods without traces) and ``held_bytes`` (tensors the learner holds; None for
        methods without a learner). Compiled variants add ``compile_seconds`` (the first
        sequence, which compiled the step) and ``recompiles`` (graphs compiled while the clock
        ran: 0 when the timing is clean).
    """
    with kernels.disabled() if method in KERNEL_OFF else contextlib.nullcontext():
        return _measure(spec, method, steps, warmup, repeats, seed, device)


def _measure(
    spec: NetSpec, method: str, steps: int, warmup: int, repeats: int, seed: int, device: str
) -> dict[str, Any]:
    w = prepare(spec, method, steps, seed=seed, device=device)
    out: dict[str, Any] = {"trace_bytes": None, "held_bytes": None}
    if w.learner is not None:
        w.learner.reset(spec.batch)
        out["trace_bytes"] = trace_bytes(w.learner.runner)
        out["held_bytes"] = w.learner.state_bytes()
    if method in COMPILED:  # compile off the clock: a sequence with a target at every step
        out["compile_seconds"] = time_sequences(w.run, warmup=0, repeats=1, setup=w.setup)[0]
        graphs = compiled_graphs()
    times = time_sequences(w.run, warmup=warmup, repeats=repeats, setup=w.setup, device=device)
    if method in COMPILED:
        out["recompiles"] = compiled_graphs() - graphs
    per_step = [1e3 * s / steps for s in times]
    out["ms_per_step"] = statistics.median(per_step)
    out["ms_per_step_all"] = per_step
    if "trace_dtype" in VARIANTS.get(method, {}):
        net = build_network(spec, seed=seed, device=device)
        target = one_hot_targets(spec, seed=seed, device=device)
        out.update(
            gradient_error(net, method, input_pool(spec, steps, seed=seed, device=device), target)
        )
    return out


def gradient_error(net: Any, method: str, xs: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """Worst cosine and relative error over the parameters of ``method``'s gradient of one
    sequence against full-precision diagonal OSTL's (parameters with a zero gradient skipped)."""
    targets = [target] * xs.shape[0]
    ref = gradients(net, OSTL(recurrence="diagonal"), xs, targets, loss_fn)
    got = gradients(net, make_rule(method), xs, targets, loss_fn)
    cos, rel = [], []
    for name, r in ref.items():
        if float(r.norm()) == 0.0:
            continue
        g = got[name]
        cos.append(float(torch.nn.functional.cosine_similarity(g.flatten(), r.flatten(), dim=0)))
        rel.append(float((g - r).norm() / r.norm()))
    return {"grad_cosine": min(cos, default=None), "grad_rel_error": max(rel, default=None)}
