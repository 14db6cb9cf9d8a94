"""Cases of tests/test_distributed.py, and the worker that torchrun runs for them.

``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_worker.py OUT [cuda]``
runs every case of :data:`CASES` in 2 processes (gloo, float64; NCCL with ``cuda``), each rank
on its slice of the global batch, and saves each rank's final weights (on the CPU) to
``OUT/rank{r}.pt``. The test runs the same cases in its own process with the whole batch and
compares. ``... tests/dist_worker.py OUT cpu modes`` runs the cases of :data:`MODES` instead
(the options that all-reduce less often or in the background) and saves ``OUT/modes{r}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

import ostl
from ostl import distributed as dist
from ostl.rules import BPTT, DFA, OSTL, OSTTP, RTRL, EProp, SnAp
from ostl.tasks.losses import cross_entropy

B, T, SEQUENCES = 5, 6, 2  # global batch 5: shards of 3 and 2 (the weighted reduction)
N_IN, N_OUT = 4, 3

#: name -> (rule factory, update_every, unlocked, same_target_steps)
CASES: dict[str, tuple[Any, int | None, bool, bool]] = {
    "bptt": (lambda: BPTT(), None, False, False),
    "bptt-every-2": (lambda: BPTT(), 2, False, True),
    "ostl": (lambda: OSTL(recurrence="exact"), 1, False, False),
    "ostl-diagonal": (lambda: OSTL(recurrence="diagonal"), 1, False, True),
    "osttp": (lambda: OSTTP(recurrence="exact"), 1, False, False),
    "osttp-unlocked": (lambda: OSTTP(recurrence="exact"), 1, True, False),
    "eprop": (lambda: EProp(), 1, False, False),
    "rtrl": (lambda: RTRL(), 1, False, False),
    "snap": (lambda: SnAp(), 1, False, False),
    "dfa": (lambda: DFA(), 1, False, False),
}


#: name -> (rule factory, update_every, delayed_updates, same_target_steps)
MODES: dict[str, tuple[Any, int, bool, bool]] = {
    "ostl-every-3": (lambda: OSTL(recurrence="exact"), 3, False, False),
    "osttp-every-4": (lambda: OSTTP(recurrence="exact"), 4, False, True),  # a partial window
    "ostl-delayed": (lambda: OSTL(recurrence="exact"), 1, True, False),
    "osttp-delayed": (lambda: OSTTP(recurrence="exact"), 1, True, True),
    "eprop-delayed-every-4": (lambda: EProp(), 4, True, False),
    "bptt-delayed-every-4": (lambda: BPTT(), 4, True, True),  # truncated BPTT, delayed
}


def network() -> ostl.Network:
    torch.manual_seed(0)
    return ostl.Network(
        [
            ostl.Layer(N_IN, 6, cell="rnn", recurrent=True),
            ostl.Layer(6, 5, cell="ssnu"),
            ostl.Readout(5, N_OUT),
        ]
    ).double()


def data() -> list[tuple[torch.Tensor, list[torch.Tensor | None]]]:
    """SEQUENCES global batches: inputs (T, B, N_IN), one-hot targets (none at step 0)."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(SEQUENCES):
        xs = torch.randn(T, B, N_IN, generator=gen, dtype=torch.float64)
        labels = torch.randint(N_OUT, (T, B), generator=gen)
        tg = torch.nn.functional.one_hot(labels, N_OUT).double()
        out.append((xs, [None, *tg[1:].unbind(0)]))
    return out


def run_case(
    name: str, part: int = 0, parts: int = 1, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """Train on CASES[name] on shard ``part`` of ``parts``; the final weights (on the CPU)."""
    make_rule, every, unlocked, aligned = CASES[name]
    net = network().to(device)
    learner = ostl.Learner(
        net,
        make_rule(),
        loss_fn=cross_entropy,
        optimizer=torch.optim.Adam(net.parameters(), lr=0.05),
        update_every=every,
        unlocked=unlocked,
        distributed=parts > 1,
        same_target_steps=aligned,
    )
    for xs, targets in data():
        s = dist.shard_range(B, part, parts)
        learner.reset(s.stop - s.start)
        for x, tg in zip(xs.to(device), targets):
            learner.step(x[s], None if tg is None else tg[s].to(device))
        learner.end_sequence()
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def mode_learner(name: str, parts: int = 1) -> tuple[ostl.Network, ostl.Learner]:
    """A learner for MODES[name] (distributed with more than one part)."""
    make_rule, every, delayed, aligned = MODES[name]
    net = network()
    learner = ostl.Learner(
        net,
        make_rule(),
        loss_fn=cross_entropy,
        optimizer=torch.optim.Adam(net.parameters(), lr=0.05),
        update_every=every,
        distributed=parts > 1,
        same_target_steps=aligned,
        delayed_updates=delayed,
    )
    return net, learner


def run_mode(name: str, part: int = 0, parts: int = 1, resume_at: int | None = None) -> Any:
    """Train on MODES[name] on shard ``part`` of ``parts``; the final weights.

    ``resume_at=t``: at step t of the first sequence, continue in a new learner loaded from
    the old one's ``state_dict()`` (with a gradient in flight, for delayed updates).
    """
    net, learner = mode_learner(name, parts)
    s = dist.shard_range(B, part, parts)
    for i, (xs, targets) in enumerate(data()):
        learner.reset(s.stop - s.start)
        for t, (x, tg) in enumerate(zip(xs, targets)):
            if i == 0 and t == resume_at:
                state = learner.state_dict()
                net, learner = mode_learner(name, parts)
                learner.load_state_dict(state)
            learner.step(x[s], None if tg is None else tg[s])
        learner.end_sequence()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def delayed_reference(name: str) -> dict[str, torch.Tensor]:
    """MODES[name] in one process with the whole batch, delayed by hand: the gradients of each
    update window (the rule's runner, no Learner) are applied by ``torch.optim`` at the next
    update, the last one at the end of the sequence; a window without a target steps nothing."""
    make_rule, every, _, _ = MODES[name]
    net = network()
    runner = make_rule().bind(net)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    held: dict[str, torch.Tensor] | None = None  # the window in flight

    def apply(grads: dict[str, torch.Tensor] | None) -> None:
        if grads is not None:
            for n, p in runner.params.items():
                p.grad = grads[n]
            opt.step()
            opt.zero_grad(set_to_none=True)

    def close(had_target: bool) -> None:  # an update: keep this window's, apply the last one's
        nonlocal held
        runner.flush()  # BPTT's backward pass over the window
        grads = {n: runner.grad(n).clone() for n in runner.params} if had_target else None
        runner.zero_grads()
        apply(held)
        held = grads

    for xs, targets in data():
        runner.reset(B)
        since, had = 0, False
        for x, tg in zip(xs, targets):
            runner.step(x, tg, cross_entropy)
            since, had = since + 1, had or tg is not None
            if since == every:
                close(had)
                since, had = 0, False
        if since:
            close(had)  # end_sequence: the partial window's update ...
        apply(held)  # ... and the gradient still in flight
        held = None
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def reduce_in_buckets(part: int, parts: int, gather: bool) -> dict[str, Any]:
    """DelayedGradients with 100-byte buckets, by all-gather or all-reduce: each rank's
    gradients are r + 1 everywhere, weighted by local batches 3 and 2. The first exchange
    applies nothing; the second the first's weighted mean (3·1 + 2·2) / 5 = 1.4 in every
    element of every bucket; a third at the same step count (an empty window) applies the
    second's, starting nothing."""
    from ostl.delayed import DelayedGradients

    net = network()
    runner = OSTL().bind(net)
    s = dist.shard_range(B, part, parts)
    runner.reset(s.stop - s.start)
    delayed = DelayedGradients(runner.params, parts > 1, bucket_bytes=100, gather=gather)
    applied, means = [], []
    for step in (1, 2, 2):
        for n in runner.params:
            runner.grad(n).fill_(part + 1.0)
        applied.append(delayed.exchange(runner, True, step))
        means.append({n: runner.grad(n).clone() for n in runner.params})
    return {"applied": applied, "means": means, "buckets": len(delayed.buckets),
            "in_flight": delayed.in_flight, "gather": delayed.gather}  # fmt: skip


def run_uneven_targets(part: int, parts: int) -> dict[str, Any]:
    """OSTL where only rank 0 has a target at some steps: every rank must still step together."""
    net = network()
    learner = ostl.Learner(
        net,
        OSTL(),
        loss_fn=cross_entropy,
        optimizer=torch.optim.Adam(net.parameters(), lr=0.05),
        distributed=parts > 1,
    )
    xs, targets = data()[0]
    s = dist.shard_range(B, part, parts)
    learner.reset(s.stop - s.start)
    for t, (x, tg) in enumerate(zip(xs, targets)):
        if tg is not None and (part == 0 or t % 2 == 0):
            learner.step(x[s], tg[s])
        else:
            learner.step(x[s], None)
    learner.end_sequence()
    return {"updates": learner.updates, "weights": net.state_dict()}


def run_nan_on_one_rank(part: int, parts: int) -> dict[str, Any]:
    """OSTTP unlocked, nonfinite="skip": a NaN in one sample of the last rank's shard at step 3
    makes every rank skip that whole step (no layer moves on any rank)."""
    net = network()
    learner = ostl.Learner(
        net,
        OSTTP(recurrence="exact"),
        loss_fn=cross_entropy,
        optimizer=torch.optim.Adam(net.parameters(), lr=0.05),
        unlocked=True,
        nonfinite="skip",
        distributed=parts > 1,
    )
    xs, targets = data()[0]
    xs = xs.clone()
    xs[3, B - 1, 0] = float("nan")
    s = dist.shard_range(B, part, parts)
    learner.reset(s.stop - s.start)
    moved: list[str] = []
    for t, (x, tg) in enumerate(zip(xs, targets)):
        before = {k: v.clone() for k, v in net.state_dict().items()}
        learner.step(x[s], None if tg is None else tg[s])
        if t == 3:
            moved = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    return {"skipped": learner.skipped, "updates": learner.updates, "moved": moved,
            "weights": net.state_dict()}  # fmt: skip


def main_modes(out: str) -> None:
    """The cases of MODES on this rank's shard, and resumed from a mid-sequence state."""
    r, w = dist.rank(), dist.world_size()
    result: dict[str, Any] = {name: run_mode(name, r, w) for name in MODES}
    result["resumed"] = {
        n: run_mode(n, r, w, resume_at=3) for n in ("ostl-delayed", "osttp-every-4")
    }
    result["buckets"] = {g: reduce_in_buckets(r, w, g) for g in (True, False)}
    result["learner_gathers"] = mode_learner("ostl-delayed", w)[1]._delayed.gather  # type: ignore[union-attr]
    torch.save(result, Path(out) / f"modes{r}.pt")


def main(out: str, device: str = "cpu", which: str = "cases") -> None:
    torch.set_num_threads(1)
    assert dist.init(device), "run me with torchrun"
    try:
        if which == "modes":
            return main_modes(out)
        r, w = dist.rank(), dist.world_size()
        dev = str(dist.local_device(torch.device(device)))
        result: dict[str, Any] = {name: run_case(name, r, w, dev) for name in CASES}
        result["uneven"] = run_uneven_targets(r, w)
        result["nan-one-rank"] = run_nan_on_one_rank(r, w)
        gathered = dist.gather_to_main({"rank": r, "x": torch.full((2,), float(r))})
        result["gathered"] = gathered
        result["mine"] = dist.this_rank_of([f"state of rank {i}" for i in range(w)])
        torch.save(result, Path(out) / f"rank{r}.pt")
    finally:
        dist.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
