"""The rule contract.

A :class:`Rule` is a small configuration object (which trace recursion, which learning signal).
``rule.bind(net)`` checks that the rule can handle the network and returns a :class:`Runner`:
the rule applied to that network, holding what persists across sequences (e.g. fixed random
feedback matrices) and, after ``reset(batch_size)``, what one batch of sequences needs (network
state, traces). A runner is driven one time step at a time::

    runner = rule.bind(net)
    runner.reset(batch_size)
    for x_t, target_t in stream:
        y_t = runner.step(x_t, target_t, loss_fn)   # forward + traces + learning signal
    runner.flush()                                  # finish what is pending (BPTT's backward)
    runner.grads                                    # dict: parameter name -> accumulated dE/dθ

Runners accumulate into ``runner.grads``, never into ``.grad``: :func:`ostl.gradients` returns
them, and :class:`ostl.Learner` writes them into ``.grad`` before an optimizer step. No online
runner keeps anything per time step: its memory is independent of the sequence length.

Checkpoints: ``runner.state_dict()`` holds everything a runner carries between steps (network
state, traces, accumulated gradients, loss sums, fixed random matrices, BPTT's open window) as
plain containers of cloned tensors, and ``runner.load_state_dict(sd, loss_fn)`` on a runner of
the same rule bound to the same network continues exactly where the saved one stopped.

Non-finite values: with ``nonfinite="raise"`` (the default) a NaN or Inf in x_t, the target or
the learning signal raises :class:`~ostl.errors.NonFiniteError` naming the tensor and the step;
with ``"skip"`` they are let through, so they poison the gradient, which
:class:`ostl.Learner` detects before the update and skips.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import (
    CheckpointError,
    DeviceError,
    OptionError,
    OSTLError,
    ShapeError,
    TargetError,
    UnsupportedError,
    check_finite,
    check_tensor,
)
from ..layer import Layer, Network, Readout
from ..numerics import flush_denormals

__all__ = [
    "Rule",
    "Runner",
    "LossFn",
    "NONFINITE",
    "call_loss",
    "pack_state",
    "unpack_state",
]

LossFn = Callable[[Tensor, Any], Tensor]

#: What to do with NaN/Inf (``Runner.nonfinite``, ``Learner(nonfinite=...)``).
NONFINITE = ("raise", "skip")


def _clone(t: Tensor) -> Tensor:
    """A self-contained copy for a checkpoint (no view of a larger storage, no graph)."""
    return t.detach().clone(memory_format=torch.contiguous_format)


def pack_state(state: tuple[Any, ...]) -> list[list[Tensor]]:
    """A network state (a tuple of NamedTuples) as nested lists of cloned tensors."""
    return [[_clone(t) for t in s] for s in state]


def unpack_state(template: tuple[Any, ...], packed: Any) -> tuple[Any, ...]:
    """Inverse of :func:`pack_state`, shaped like ``template`` (e.g. ``net.init_state(B)``)."""
    if not isinstance(packed, list | tuple) or len(packed) != len(template):
        raise CheckpointError(
            f"network state: expected {len(template)} layers, got "
            f"{len(packed) if isinstance(packed, list | tuple) else type(packed).__name__}"
        )
    out = []
    for i, (s, p) in enumerate(zip(template, packed)):
        if len(p) != len(s) or any(
            not isinstance(v, Tensor) or v.shape != t.shape for v, t in zip(p, s)
        ):
            raise CheckpointError(f"network state of layer {i} does not match the network")
        out.append(type(s)(*(v.to(dtype=t.dtype, device=t.device).clone() for v, t in zip(p, s))))
    return tuple(out)


class Rule(abc.ABC):
    """A learning rule: a recipe for dE/dθ that runs one time step at a time."""

    name: ClassVar[str]

    @abc.abstractmethod
    def bind(self, net: Network) -> Runner:
        """Check that this rule can handle ``net`` and return a runner for it."""

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"


def check_network(net: object, rule: Rule) -> Network:
    """A rule handles an ostl.Network of ostl.Layer / ostl.Readout modules, nothing else."""
    if not isinstance(net, Network):
        raise UnsupportedError(
            f"{rule!r} needs an ostl.Network, got {type(net).__name__}; wrap the layers with "
            "ostl.Network([...])"
        )
    for i, layer in enumerate(net.layers):
        if not isinstance(layer, Layer | Readout):
            raise UnsupportedError(f"{rule!r} cannot handle layer {i} ({type(layer).__name__})")
    return net


class Runner(abc.ABC):
    """A rule bound to a network. See the module docstring for the protocol."""

    def __init__(self, rule: Rule, net: Network) -> None:
        self.rule = rule
        self.net = check_network(net, rule)
        self.params: dict[str, nn.Parameter] = {
            n: p for n, p in net.named_parameters() if p.requires_grad
        }
        if not self.params:
            raise UnsupportedError("the network has no parameter with requires_grad=True")
        self.grads: dict[str, Tensor] = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.batch_size: int | None = None
        self.steps = 0  # time steps since reset
        self.loss_sum = 0.0  # Σ_t E_t since reset (a float; for reporting)
        self.n_losses = 0  # steps with a target since reset
        self.nonfinite = "raise"  # or "skip": see the module docstring

    # -- protocol --------------------------------------------------------------------------
    def reset(self, batch_size: int) -> None:
        """Start a new batch of sequences: resting network state, zero traces."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise OptionError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        self.steps = 0
        self.loss_sum, self.n_losses = 0.0, 0
        self._reset(batch_size)

    def step(self, x_t: Tensor, target_t: Any, loss_fn: LossFn) -> Tensor:
        """One time step; returns the network output y_t (B, n_out), detached."""
        if self.batch_size is None:
            raise OSTLError("call reset(batch_size) before step()")
        net = self.net
        check_tensor(
            x_t, "x_t", shape=(self.batch_size, net.n_in), dtype=net.dtype, device=net.device
        )
        self._finite(x_t, "x_t")
        if target_t is not None:
            _check_target(target_t, self.batch_size, net.device)
            self._finite(target_t, "target_t")
        with flush_denormals():  # decayed traces must not turn denormal (see ostl.numerics)
            y = self._step(x_t, target_t, loss_fn)
        self.steps += 1
        return y

    def flush(self) -> None:  # noqa: B027 - a hook: online rules have nothing pending
        """Finish what is pending (a no-op for online rules)."""

    def zero_grads(self) -> None:
        torch._foreach_zero_(list(self.grads.values()))

    def restart_stream(self) -> None:
        """Resting network state and zero traces, keeping the step and loss counters.

        What :class:`ostl.Learner` does after skipping an update whose state was poisoned.
        """
        if self.batch_size is not None:
            self._reset(self.batch_size)

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the runner carries between steps, as cloned tensors in plain containers."""
        return {
            "rule": self.rule.name,
            "batch_size": self.batch_size,
            "steps": self.steps,
            "loss_sum": self.loss_sum,
            "n_losses": self.n_losses,
            "grads": {n: _clone(g) for n, g in self.grads.items()},
            "extra": self._state_extra() if self.batch_size is not None else {},
        }

    def load_state_dict(self, state: dict[str, Any], loss_fn: LossFn | None = None) -> None:
        """Continue from :meth:`state_dict` of a runner of the same rule on the same network.

        Args:
            state: what :meth:`state_dict` returned.
            loss_fn: the loss (BPTT replays its open window with it to rebuild the graph).
        """
        if not isinstance(state, dict) or state.get("rule") != self.rule.name:
            got = state.get("rule") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"runner state: expected rule {self.rule.name!r}, got {got!r}")
        grads = state["grads"]
        if set(grads) != set(self.grads):
            raise CheckpointError(
                f"runner state: gradients of {sorted(grads)}, but the network's trainable "
                f"parameters are {sorted(self.grads)}"
            )
        for n, g in grads.items():
            if g.shape != self.grads[n].shape:
                raise CheckpointError(
                    f"runner state: gradient of {n} has shape {tuple(g.shape)}, the parameter "
                    f"{tuple(self.grads[n].shape)}"
                )
        if state["batch_size"] is not None:
            self.reset(int(state["batch_size"]))
            self._load_extra(state["extra"], loss_fn)
        else:  # saved before any reset: so is this one now
            self.batch_size = None
        for n, g in grads.items():
            self.grads[n].copy_(g)
        self.steps = int(state["steps"])
        self.loss_sum, self.n_losses = float(state["loss_sum"]), int(state["n_losses"])

    def named_state(self) -> Iterator[tuple[str, Tensor]]:
        """(dotted name, tensor) of everything in :meth:`state_dict`: names a bad tensor."""
        yield from _flatten("", self.state_dict())

    def state_tensors(self) -> Iterator[Tensor]:
        """Every tensor this runner holds (state, traces, gradients): for memory accounting."""
        yield from self.grads.values()

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state_tensors())

    # -- for subclasses --------------------------------------------------------------------
    @abc.abstractmethod
    def _reset(self, batch_size: int) -> None: ...

    @abc.abstractmethod
    def _step(self, x_t: Tensor, target_t: Any, loss_fn: LossFn) -> Tensor: ...

    def _state_extra(self) -> dict[str, Any]:
        """The rule's own part of :meth:`state_dict` (state, traces, ...), after a reset.

        Every runner here implements it; a runner written elsewhere that does not cannot be
        checkpointed (everything else still works).
        """
        raise UnsupportedError(
            f"{type(self).__name__} does not implement _state_extra/_load_extra: it cannot be "
            "checkpointed (see docs/extending.md)"
        )

    def _load_extra(self, extra: dict[str, Any], loss_fn: LossFn | None) -> None:
        """Inverse of :meth:`_state_extra`, called right after ``reset(batch_size)``."""
        self._state_extra()  # the same error

    def _finite(self, x: Tensor, name: str) -> None:
        """Raise NonFiniteError naming ``name`` and the step, unless the policy is "skip"."""
        if self.nonfinite == "raise":
            check_finite(x, f"{name} at step {self.steps} of the sequence")

    def _accumulate(self, name: str, g: Tensor) -> None:
        if name in self.grads:
            self.grads[name] += g

    def _loss_signal(self, y: Tensor, target: Any, loss_fn: LossFn) -> Tensor:
        """L = ∂E_t/∂y_t for the network output y (B, n_out); records E_t."""

        def loss(y: Tensor) -> Tensor:
            return call_loss(loss_fn, y, target)

        # plain autograd: a third of torch.func.grad_and_value's per-call overhead here
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            e = loss(y)
            if e.requires_grad:
                (L,) = torch.autograd.grad(e, y, allow_unused=True, materialize_grads=True)
            else:  # a loss that does not depend on y (a constant): no signal
                L = torch.zeros_like(y)
            e = e.detach()
        self._record_loss(e)
        self._finite(L, "learning signal dE_t/dy_t")
        return L

    def _record_loss(self, e: Tensor) -> None:
        self.loss_sum += float(e)
        self.n_losses += 1


def _check_target(target: Any, batch_size: int, device: torch.device) -> None:
    if not isinstance(target, Tensor):
        raise ShapeError(f"target_t: expected a Tensor or None, got {type(target).__name__}")
    if target.dim() == 0 or target.shape[0] != batch_size:
        raise ShapeError(
            f"target_t: expected a batch dimension of {batch_size} first, got shape "
            f"{tuple(target.shape)}"
        )
    if target.device != device:
        raise DeviceError(f"target_t: expected a tensor on {device}, got {target.device}")


def call_loss(loss_fn: LossFn, y: Tensor, target: Any) -> Tensor:
    """``loss_fn(y, target)``, checked: a loss that fails on the target is the user's error."""
    try:
        e = loss_fn(y, target)
    except OSTLError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        t = (
            f"{tuple(target.shape)} {target.dtype}"
            if isinstance(target, Tensor)
            else type(target).__name__
        )
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TargetError(
            f"loss_fn(y_t, target_t) failed for y_t {tuple(y.shape)} {y.dtype} and target_t "
            f"{t}: {msg}. Check that the targets are of the kind the loss expects (e.g. class "
            "indices or one-hot vectors of the network's output size)."
        ) from err
    _check_loss(e)
    return e


def _check_loss(e: Any) -> None:
    if not isinstance(e, Tensor) or e.dim() != 0:
        shape = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
        raise ShapeError(
            f"loss_fn must return the scalar loss of one step (mean over the batch), got {shape}"
        )


def _flatten(prefix: str, obj: Any) -> Iterator[tuple[str, Tensor]]:
    if isinstance(obj, Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(f"{prefix}.{k}" if prefix else str(k), v)
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _flatten(f"{prefix}.{i}" if prefix else str(i), v)
