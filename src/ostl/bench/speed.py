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
from typing import Any

import torch

from .. import kernels
from ..api import gradients
from ..engine import neuron_jacobians
from ..layer import Layer
from ..rules import OSTL
from .bandwidth import trace_bytes
from .baselines import bptt_sequence, make_baseline
from .workload import (
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

__all__ = ["time_sequences", "measure_speed"]


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
        methods without a learner).
    """
    with kernels.disabled() if method in KERNEL_OFF else contextlib.nullcontext():
        return _measure(spec, method, steps, warmup, repeats, seed, device)


def _measure(
    spec: NetSpec, method: str, steps: int, warmup: int, repeats: int, seed: int, device: str
) -> dict[str, Any]:
    pool = input_pool(spec, steps, seed=seed, device=device)
    target = one_hot_targets(spec, seed=seed, device=device)
    out: dict[str, Any] = {"trace_bytes": None, "held_bytes": None}
    setup: Callable[[], None] | None = None
    if method == "forward":
        net = build_network(spec, seed=seed, device=device)

        def run() -> None:
            with torch.no_grad():
                state = net.init_state(spec.batch)
                for t in range(steps):
                    _, state = net.step(pool[t], state)

    elif method in ("jacobians", "jacobians-derived"):
        net = build_network(spec, seed=seed, device=device)
        derive = method == "jacobians-derived"

        def run() -> None:
            with torch.no_grad():
                state = list(net.init_state(spec.batch))
                for t in range(steps):
                    x = pool[t]
                    for i, layer in enumerate(net.layers):
                        if isinstance(layer, Layer):  # the Readout has no Jacobian blocks
                            a_in, a_rec = layer.currents(x, state[i])
                            state[i], _ = neuron_jacobians(
                                layer.cell, a_in, a_rec, state[i], derive=derive
                            )
                            x = getattr(state[i], layer.cell.output)

    elif method in ("torch", "snntorch"):
        ref = make_baseline(method, spec, seed=seed).to(device)
        opt = make_optimizer(ref.parameters())

        def run() -> None:
            bptt_sequence(ref, opt, pool, target, steps)

    else:
        learner = make_learner(build_network(spec, seed=seed, device=device), method)

        setup = functools.partial(learner.reset, spec.batch)

        def run() -> None:
            for t in range(steps):
                learner.step(pool[t], target)
            learner.end_sequence()

        setup()
        out["trace_bytes"] = trace_bytes(learner.runner)
        out["held_bytes"] = learner.state_bytes()
    times = time_sequences(run, warmup=warmup, repeats=repeats, setup=setup, device=device)
    per_step = [1e3 * s / steps for s in times]
    out["ms_per_step"] = statistics.median(per_step)
    out["ms_per_step_all"] = per_step
    if "trace_dtype" in VARIANTS.get(method, {}):
        net = build_network(spec, seed=seed, device=device)
        out.update(gradient_error(net, method, pool, target))
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
