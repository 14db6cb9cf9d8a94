"""Data-parallel online learning on ``torch.distributed``: several processes, one model.

Every process (rank) holds the same network and the same optimizer, sees the same *global*
batches (the same seed shuffles and encodes them) and learns on its own slice of each one: rank
r takes columns ``shard_range(B, r, N)`` of a global batch of B sequences (the sizes differ by
at most one). Rules run unchanged on the local slice (eligibility traces are per sample, so they
stay local). Before every optimizer update :class:`ostl.Learner` (``distributed=True``) calls
:func:`all_reduce_grads`: each rank's gradients are means over its local batch, so they are
multiplied by the local batch size, summed over ranks in one all-reduce, and divided by the
global batch size. The weights then follow the trajectory of one process with the whole batch
(exactly, up to floating-point summation order; ``tests/test_distributed.py``). Losses and
signals that are batch means (``loss_fn``, OSTTP's ``B_l y* / n_batch``) need nothing more.

Online rules update at every step, so by default every step waits for one all-reduce. Two
options of :class:`ostl.Learner` wait less, each with the same trajectory in N processes as in
one process with the whole batch and the same option: ``update_every=k`` (each rank sums its
gradients over k steps, then one all-reduce and one update: fewer, larger updates) and
``delayed_updates=True`` (:mod:`ostl.delayed`: each update's all-reduce runs in the background
during the next window's steps, and its gradient is applied one update late).

Launch with PyTorch's own launcher, which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address that :func:`init` reads::

    torchrun --standalone --nproc-per-node 2 -m ostl train --task digits --rule ostl
    ostl train --nproc 2 --task digits --rule ostl        # the same, launched for you

The backend is gloo on CPU and NCCL when the device is CUDA (each rank on ``cuda:LOCAL_RANK``).
Collectives time out after ``OSTL_DIST_TIMEOUT`` seconds (default 300), so a rank left waiting
for a dead or stopped peer ends with an error instead of hanging: a failed collective raises
:class:`CollectiveError` (``ostl train``: one line, exit status 1). torchrun stops every worker
as soon as one fails and exits non-zero.

:func:`launch` runs torchrun through :mod:`ostl.torchrun`: torchrun and its workers die with
the launching process (a ``kill -9`` of ``ostl train --nproc N`` leaves no orphaned worker), a
worker that ignores SIGTERM (stopped, hung) is killed 2 s after it, so a run ends within a few
seconds of ``OSTL_DIST_TIMEOUT``, and a failure is reported in one line, without torchrun's
traceback.

Every rank holds identical weights and optimizer state, so a checkpoint is written by rank 0
alone (:func:`is_main`) and read by every rank on resume. What differs between ranks is the
runner's state (network state and traces of its own samples, mid-sequence or mid-stream):
:func:`gather_to_main` collects it on rank 0 as a list by rank, and on resume
:func:`this_rank_of` takes this rank's entry and refuses another process count (the shards,
and so the trajectory, depend on it).
A global batch with fewer sequences than processes (the last of an epoch) is skipped by every
rank (:func:`shard_batches`).
"""

from __future__ import annotations

import datetime
import functools
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from .errors import OSTLError

__all__ = [
    "launched",
    "active",
    "rank",
    "world_size",
    "is_main",
    "launched_as_main",
    "init",
    "die_with_launcher",
    "shutdown",
    "local_device",
    "shard_range",
    "shard_batch",
    "shard_batches",
    "all_reduce_grads",
    "broadcast_parameters",
    "all_reduce_sums",
    "reduce_metric",
    "gather_to_main",
    "this_rank_of",
    "launch",
    "DEFAULT_TIMEOUT",
    "CollectiveError",
]

#: Seconds a collective waits for the other ranks before it fails (``OSTL_DIST_TIMEOUT``).
DEFAULT_TIMEOUT = 300.0
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_F = TypeVar("_F", bound=Callable[..., Any])


class CollectiveError(OSTLError, RuntimeError):
    """A collective failed: another process died, hung or was stopped (or timed out after
    ``OSTL_DIST_TIMEOUT`` seconds)."""


def _collective(fn: _F) -> _F:
    """Turn the RuntimeError of a failed collective into a one-line CollectiveError."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RuntimeError as e:
            if isinstance(e, OSTLError) or not active():  # not a peer's failure
                raise
            lines = [s.strip() for s in str(e).strip().splitlines() if s.strip()]
            first = lines[0] if lines else type(e).__name__
            raise CollectiveError(
                f"rank {rank()}: {fn.__name__} failed: another process died, hung or was "
                f"stopped (collectives wait OSTL_DIST_TIMEOUT={_timeout().total_seconds():g} s): "
                f"{first}"
            ) from None

    return wrapper  # type: ignore[return-value]


# -- who am I ------------------------------------------------------------------------------
def launched() -> bool:
    """True in a process started by torchrun (its environment names a rank and a rendezvous)."""
    return all(k in os.environ for k in _TORCHRUN_ENV)


def active() -> bool:
    """True when this process is in an initialised ``torch.distributed`` process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0, the only rank that writes logs, run folders, checkpoints and plots."""
    return rank() == 0


def launched_as_main() -> bool:
    """True unless torchrun started this process with a rank other than 0 (read from its
    environment: usable before the process group exists, e.g. to create the run folder)."""
    return not launched() or os.environ["RANK"] == "0"


def _timeout() -> datetime.timedelta:
    raw = os.environ.get("OSTL_DIST_TIMEOUT", "")
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise OSTLError(f"OSTL_DIST_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if not seconds > 0:
        raise OSTLError(f"OSTL_DIST_TIMEOUT must be positive, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def init(device: str | torch.device = "cpu") -> bool:
    """Join the process group that torchrun describes; False (and nothing done) without torchrun.

    Backend: NCCL for a CUDA ``device`` (and this rank's GPU becomes ``cuda:LOCAL_RANK``), gloo
    otherwise. Collectives time out after ``OSTL_DIST_TIMEOUT`` seconds (default 300).
    """
    if active():
        return True
    if not launched():
        return False
    die_with_launcher()
    if not dist.is_available():
        raise OSTLError("this torch build has no torch.distributed: cannot run several processes")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=_timeout())
    return True


def die_with_launcher() -> None:
    """In a worker that :func:`launch` started: be killed when its torchrun ends (see
    :mod:`ostl.torchrun`; a no-op in any other process). :func:`init` calls it."""
    from .torchrun import AGENT_ENV, die_with_parent  # (not at import: python -m ostl.torchrun)

    agent = os.environ.get(AGENT_ENV, "")
    if launched() and agent.isdigit():
        die_with_parent(int(agent))


def shutdown() -> None:
    """Leave the process group (a no-op outside one)."""
    if active():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """``cuda`` without an index means this rank's GPU (``cuda:LOCAL_RANK``) under torchrun."""
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


# -- sharding ------------------------------------------------------------------------------
def shard_range(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s share of ``n`` items: contiguous, the first ``n % world`` ranks one more."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def shard_batch(batch: Any, part: int | None = None, parts: int | None = None) -> Any:
    """This rank's columns of a global :class:`ostl.tasks.data.Batch` (inputs, targets, mask).

    The slice is the same for every batch, so a stream cut into chunks (``reset=False``) keeps
    each rank on the same streams. ``part`` and ``parts`` default to this rank and the world size.
    """
    from .tasks.data import Batch, OneHotSteps

    r = rank() if part is None else part
    w = world_size() if parts is None else parts
    if w == 1:
        return batch
    s = shard_range(batch.xs.shape[1], r, w)
    tg = batch.targets
    if isinstance(tg, Tensor):
        targets: Any = tg[:, s]
    elif isinstance(tg, OneHotSteps):
        targets = OneHotSteps(tg.labels[:, s], tg.n, tg.dtype)
    else:
        targets = [None if t is None else t[s] for t in tg]
    mask = None if batch.mask is None else batch.mask[:, s]
    return Batch(batch.xs[:, s], targets, mask, batch.reset)


def shard_batches(batches: Iterable[Any]) -> Iterator[Any]:
    """This rank's shard of every training batch (every batch unchanged in a single process).

    A global batch with fewer sequences than processes (the last of an epoch) is skipped on
    every rank alike: a rank without samples cannot take part in the gradient all-reduce.
    """
    w = world_size()
    for batch in batches:
        if w == 1:
            yield batch
        elif batch.xs.shape[1] >= w:
            yield shard_batch(batch)


# -- collectives ---------------------------------------------------------------------------
@_collective
def all_reduce_grads(
    grads: dict[str, Tensor], batch_size: int | None, pending: bool, group: Any = None
) -> bool:
    """Average the gradients of all ranks, weighted by their local batch sizes; in place.

    Each rank's ``grads`` are means over its local batch (the loss is a batch mean). One
    all-reduce sums ``batch_size · grads`` and the batch sizes of the ranks with ``pending``
    work (a target seen since the last update); the result, divided by that total, is the mean
    over the global batch. Every rank must call this at every update, pending or not, so that
    no rank skips a collective.

    Returns:
        True when any rank had pending work: then every rank steps its optimizer.
    """
    names = list(grads)
    weight = float(batch_size or 0) if pending else 0.0
    dtypes = {g.dtype for g in grads.values()}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float64
    device = next(iter(grads.values())).device
    count = torch.tensor([weight], dtype=dtype, device=device)
    buf = torch.cat([*(grads[n].reshape(-1).to(dtype) * weight for n in names), count])
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
    total = float(buf[-1])
    if total == 0:
        return False
    buf = buf[:-1] / total
    offset = 0
    for n in names:
        g = grads[n]
        g.copy_(buf[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
    return True


@_collective
def broadcast_parameters(params: Iterable[Tensor], group: Any = None) -> None:
    """Copy rank 0's values of ``params`` to every rank (one broadcast), in place."""
    ps = list(params)
    if not ps:
        return
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in ps])
        dist.broadcast(flat, src=0, group=group)
        offset = 0
        for p in ps:
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


@_collective
def all_reduce_sums(values: Sequence[float], group: Any = None) -> list[float]:
    """The sums over ranks of a few numbers (the numbers themselves in a single process)."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if dist.get_backend(group) == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return [float(v) for v in t.cpu()]


@_collective
def reduce_metric(metric: Any, group: Any = None) -> None:
    """Sum a metric's accumulators over ranks, in place (a no-op in a single process).

    Every metric of :mod:`ostl.tasks.metrics` keeps its state as numeric attributes that are sums
    over (step, sample) pairs (``correct``/``total``, ``sum``/``count``), so the sums over ranks
    are the accumulators of the whole split.
    """
    if not active():
        return
    keys = [
        k for k, v in vars(metric).items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    for k, v in zip(keys, all_reduce_sums([getattr(metric, k) for k in keys], group)):
        setattr(metric, k, type(getattr(metric, k))(v))


@_collective
def gather_to_main(obj: Any, group: Any = None) -> list[Any] | None:
    """Every rank's ``obj`` (picklable) as a list by rank on rank 0; None on the other ranks.

    In a single process: ``[obj]``. Every rank must call it.
    """
    if not active():
        return [obj]
    out: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0, group=group)
    return out


def this_rank_of(per_rank: Sequence[Any], what: str = "checkpoint") -> Any:
    """This rank's entry of a list by rank (:func:`gather_to_main`), checking the process count."""
    if len(per_rank) != world_size():
        raise OSTLError(
            f"the {what} was written by {len(per_rank)} process(es), this run has "
            f"{world_size()}: resume with the same number of processes (--nproc {len(per_rank)})"
        )
    return per_rank[rank()]


# -- launching -----------------------------------------------------------------------------
def launch(worker: Sequence[str], nproc: int, env: dict[str, str] | None = None) -> int:
    """Run torchrun (``python -m ostl.torchrun --standalone --nproc-per-node nproc *worker``).

    ``worker`` is what follows the launcher's options: ``["-m", "ostl", "train", ...]`` or a
    script and its arguments. Returns torchrun's exit status (non-zero if any worker failed;
    torchrun then stops the others). torchrun and the workers die with this process
    (:mod:`ostl.torchrun`).
    """
    from .torchrun import LAUNCHER_ENV

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc <= 0:
        raise ValueError(f"nproc must be a positive integer, got {nproc!r}")
    env = dict(os.environ if env is None else env)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, without its warning
    env[LAUNCHER_ENV] = str(os.getpid())
    cmd = [
        sys.executable,
        "-m",
        "ostl.torchrun",
        "--standalone",
        f"--nproc-per-node={nproc}",
        *worker,
    ]
    return subprocess.run(cmd, env=env).returncode
