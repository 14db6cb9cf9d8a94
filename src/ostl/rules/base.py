"""Rules, and the runner: the thin loop that drives any rule's step over a stream.

A rule is a small frozen configuration. ``rule.engine(net)`` checks that the rule can handle the
network and returns its *engine*: the rule bound to that network, with the pure step contract
(compare optax's ``init`` / ``update``)::

    engine = rule.engine(net)
    carry = engine.init(batch_size)
    y_t, grads_t, carry = engine.step(params, carry, x_t, target_t, loss_fn)   # grads_t or None
    grads, carry = engine.finish(params, carry)          # what is pending (BPTT's backward)

Every trace rule (OSTL, OSTTP, e-prop, SnAp-1, DFA and any other point on the axes) is one
:class:`TraceRule` served by :class:`~ostl.engine.TraceEngine`; BPTT and RTRL are independent
oracles behind the same contract.

``rule.bind(net)`` wraps the engine in a :class:`Runner`, which keeps the carry and the
gradient accumulated since the last :meth:`Runner.zero_grads`, validates each step's input,
and saves and restores everything generically (:mod:`ostl.engine.carry`)::

    runner = rule.bind(net)
    runner.reset(batch_size)
    for x_t, target_t in stream:
        y_t = runner.step(x_t, target_t, loss_fn)
    runner.flush()
    runner.grads                                    # dict: parameter name -> accumulated dE/dθ

Runners accumulate into ``runner.grads``, never into ``.grad``: :func:`ostl.gradients` returns
them, and :class:`ostl.Learner` writes them into ``.grad`` before an optimizer step. No online
rule keeps anything per time step: its memory is independent of the sequence length.

Non-finite values: the step records, on the device, the first step at which x_t, the target or
the output error held NaN or Inf; with ``nonfinite="raise"`` (the default) :meth:`Runner.flush`
and :class:`ostl.Learner`'s update raise :class:`~ostl.errors.NonFiniteError` naming the tensor
and that step (the oracles BPTT and RTRL check each input as it comes). With ``"skip"`` the
values are let through to the gradient, which the Learner detects at the update and skips.
Only those eager checks read a value back from the device during a step; the counters are read
when asked for (:meth:`Runner.losses`, :meth:`Runner.first_nonfinite`: one read each).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from ..engine import carry as tree
from ..errors import (
    CheckpointError,
    DeviceError,
    NonFiniteError,
    OptionError,
    OSTLError,
    ShapeError,
    UnsupportedError,
    check_finite,
    check_tensor,
)
from ..layer import Layer, Network, Readout
from ..losses import LossFn, call_loss
from ..numerics import flush_denormals

# About 420 lines on purpose: the Rule / Runner contract and the network checks every rule
# shares (network, device, state round trip) read as one unit; splitting off a few lines would
# scatter that contract over two modules.
__all__ = ["Rule", "Engine", "Runner", "LossFn", "NONFINITE", "call_loss", "check_network"]

#: What to do with NaN/Inf (``Runner.nonfinite``, ``Learner(nonfinite=...)``).
NONFINITE = ("raise", "skip")

Grads = dict[str, Tensor]


class Engine(Protocol):
    """A rule bound to a network (see the module docstring)."""

    net: Network
    params: dict[str, nn.Parameter]
    consts: dict[str, list[Tensor | None]]
    #: check each input for NaN/Inf as it comes (the oracles), instead of at the update
    eager_checks: bool

    def init(self, batch_size: int) -> Any: ...

    def step(
        self, params: Mapping[str, Tensor] | None, carry: Any, x: Tensor, target: Any,
        loss_fn: LossFn,
    ) -> tuple[Tensor, Grads | None, Any]: ...  # fmt: skip

    def finish(
        self, params: Mapping[str, Tensor] | None, carry: Any
    ) -> tuple[Grads | None, Any]: ...

    def restore(self, carry: Any, loss_fn: LossFn | None) -> Any: ...


class Rule(abc.ABC):
    """A learning rule: a recipe for dE/dθ that runs one time step at a time."""

    name: ClassVar[str]

    @abc.abstractmethod
    def engine(self, net: Network) -> Engine:
        """Check that this rule can handle ``net`` and bind it (see the module docstring)."""

    def bind(self, net: Network) -> Runner:
        """The rule bound to ``net``, driven by a :class:`Runner`."""
        return Runner(self, self.engine(check_network(net, self)))

    def options(self) -> dict[str, Any]:
        """The options the rule was built with, as its constructor takes them."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


def check_network(net: object, rule: Rule) -> Network:
    """A rule handles an ostl.Network of ostl.Layer / ostl.Readout modules (with data)."""
    if not isinstance(net, Network):
        raise UnsupportedError(
            f"{rule!r} needs an ostl.Network, got {type(net).__name__}; wrap the layers with "
            "ostl.Network([...])"
        )
    for i, layer in enumerate(net.layers):
        if not isinstance(layer, Layer | Readout):
            raise UnsupportedError(f"{rule!r} cannot handle layer {i} ({type(layer).__name__})")
    if not any(p.requires_grad for p in net.parameters()):
        raise UnsupportedError("the network has no parameter with requires_grad=True")
    if any(p.is_meta for p in net.parameters()):
        raise DeviceError("the network's parameters are on the meta device, and meta tensors "
                          "have no data: move the network to cpu or cuda (net.to_empty(device="
                          "...), then load its weights)")  # fmt: skip
    return net


class Runner:
    """A rule bound to a network, stepped one time step at a time (see the module docstring).

    Attributes:
        rule, net, engine: what it runs.
        params: the trainable parameters by name.
        grads: dE/dθ accumulated since the last :meth:`zero_grads`, keyed like ``params``.
        carry: the engine's carry (None before :meth:`reset`).
        steps: time steps since the last reset.
        nonfinite: ``"raise"`` or ``"skip"`` (see the module docstring).
        on_layer_update: if set (OSTTP only), the step runs the update-unlocked schedule and
            calls ``on_layer_update(i)`` right after layer i's own step and the accumulation
            of its gradient, before layer i+1 runs.
    """

    def __init__(self, rule: Rule, engine: Engine) -> None:
        self.rule = rule
        self.engine = engine
        self.net = engine.net
        self.params: dict[str, nn.Parameter] = engine.params
        # accumulated gradients; None until the first contribution after zero_grads (the
        # step's own tensor is kept, not copied: no zero-filling and adding per update)
        self._grads: dict[str, Tensor | None] = dict.fromkeys(self.params)
        self.batch_size: int | None = None
        self.carry: Any = None
        self.steps = 0
        self.nonfinite = "raise"
        self.on_layer_update: Callable[[int], None] | None = None
        self._loss_fn: LossFn | None = None
        self._x_spec: tuple[tuple[int, int], torch.dtype, torch.device] | None = None
        self._step_fn = engine.step
        self.compiled = False

    # -- what the engine holds, by name ----------------------------------------------------
    @property
    def feedback(self) -> list[Tensor | None]:
        """Fixed random feedback matrices (one per layer; None: the live W or no matrix)."""
        return self.engine.consts.get("feedback", [None] * len(self.net.layers))

    @property
    def projections(self) -> list[Tensor | None]:
        """Fixed random projections B_l (target or error projection rules)."""
        return self.engine.consts["projections"]

    @property
    def traces(self) -> tuple[Any, ...]:
        """Each layer's trace carry (None for memoryless layers), after :meth:`reset`."""
        return self.carry.traces if self.carry is not None else ()

    # -- the loop --------------------------------------------------------------------------
    def reset(self, batch_size: int) -> None:
        """Start a new batch of sequences: resting network state, zero traces."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise OptionError(f"batch_size must be a positive int, got {batch_size!r}")
        self.carry = self.engine.init(batch_size)
        self.batch_size = batch_size
        self.steps = 0
        # what each step's input must be (read once: the network's dtype and device are
        # properties that walk its parameters)
        net = self.net
        self._x_spec = ((batch_size, net.n_in), net.dtype, net.device)

    def step(self, x_t: Tensor, target_t: Any, loss_fn: LossFn) -> Tensor:
        """One time step; returns the network output y_t (B, n_out), detached."""
        if self.batch_size is None:
            raise OSTLError("call reset(batch_size) before step()")
        assert self._x_spec is not None
        shape, dtype, device = self._x_spec
        check_tensor(x_t, "x_t", shape=shape, dtype=dtype, device=device)
        if target_t is not None:
            _check_target(target_t, self.batch_size, device)
        if self.nonfinite == "raise" and self.engine.eager_checks:
            check_finite(x_t, f"x_t at step {self.steps} of the sequence")
            if target_t is not None:
                check_finite(target_t, f"target_t at step {self.steps} of the sequence")
        self._loss_fn = loss_fn
        with flush_denormals():  # decayed traces must not turn denormal (see ostl.numerics)
            if self.on_layer_update is not None:
                step_unlocked = getattr(self.engine, "step_unlocked", None)
                if step_unlocked is None or getattr(self.rule, "signal", None) != "target":
                    raise UnsupportedError(f"{self.rule!r} cannot run update-unlocked")
                y, self.carry = step_unlocked(
                    None, self.carry, x_t, target_t, loss_fn, self._apply_layer
                )
            else:
                y, g, self.carry = self._step_fn(None, self.carry, x_t, target_t, loss_fn)
                if g is not None:
                    self._accumulate(g)
        self.steps += 1
        return y

    def compile(self) -> None:
        """Run the rule's step under ``torch.compile`` from now on (trace rules only).

        The whole step (every layer's forward and Jacobians, the learning signals, the trace
        updates, the counters) becomes one graph; the fused trace operation stays one call.
        The first steps with and without a target each compile once (seconds on a CPU).
        """
        if not getattr(self.engine, "compilable", False):
            raise OptionError(
                f"{self.rule!r}: compile=True applies to the online trace rules; BPTT and RTRL "
                "build autograd graphs across steps and run eagerly"
            )
        self._step_fn = torch.compile(self.engine.step, dynamic=False)
        self.compiled = True

    def _apply_layer(self, i: int, g: Grads) -> None:
        self._accumulate(g)
        assert self.on_layer_update is not None
        self.on_layer_update(i)

    @property
    def grads(self) -> Grads:
        """dE/dθ accumulated since the last :meth:`zero_grads`, keyed like ``params``."""
        return {n: self.grad(n) for n in self._grads}

    def grad(self, name: str) -> Tensor:
        """The accumulated gradient of one parameter (zeros if nothing was added yet)."""
        g = self._grads[name]
        if g is None:
            g = self._grads[name] = torch.zeros_like(self.params[name])
        return g

    def _accumulate(self, g: Grads) -> None:
        acc = self._grads
        for n, v in g.items():
            if n not in acc:
                continue
            cur = acc[n]
            if cur is None:
                acc[n] = v
            else:
                cur.add_(v)

    def flush(self) -> None:
        """Finish what is pending (BPTT's backward pass; nothing for online rules)."""
        if self.carry is None:
            return
        g, self.carry = self.engine.finish(None, self.carry)
        if g is not None:
            self._accumulate(g)

    def check_finite(self) -> None:
        """Raise :class:`~ostl.errors.NonFiniteError` naming the first non-finite input,
        target or output error since the reset, if there was one (one host synchronisation)."""
        cause = self.first_nonfinite()
        if cause is not None:
            raise NonFiniteError(f"{cause}: expected finite values, found NaN or Inf")

    def zero_grads(self, names: Iterable[str] | None = None) -> None:
        """Forget the accumulated gradients (of ``names``; default: all)."""
        for n in self.params if names is None else names:
            self._grads[n] = None

    def restart_stream(self) -> None:
        """Resting network state and zero traces, keeping the step and loss counters.

        What :class:`ostl.Learner` does after an update whose state was poisoned.
        """
        if self.batch_size is not None:
            stats = self.carry.stats
            self.carry = self.engine.init(self.batch_size)._replace(stats=stats)
            self.clear_nonfinite()

    def restart_where(self, skipped: Tensor) -> None:
        """:meth:`restart_stream` if the state is poisoned, and :meth:`clear_nonfinite`, where
        ``skipped`` (a () bool tensor): decided on the device, nothing read back."""
        if self.batch_size is not None:
            fresh, consts = self.engine.init(self.batch_size), tree.tensors(self.engine.consts)
            self.carry = tree.restart_where(self.carry, fresh, skipped, consts)

    def clear_nonfinite(self) -> None:
        """Forget the record of non-finite inputs, targets and signals (see the module
        docstring), e.g. once it has been reported."""
        if self.carry is not None:
            s = self.carry.stats
            self.carry = self.carry._replace(
                stats=s._replace(first_bad=torch.full_like(s.first_bad, -1))
            )

    # -- counters: kept on the device by the step, read back here (one synchronisation) ----
    def first_nonfinite(self) -> str | None:
        """``"<tensor> at step <t> of the sequence"`` for the earliest step since the reset at
        which an input, a target or an output error held NaN or Inf; None if none did."""
        if self.carry is None:
            return None
        first = self.carry.stats.first_bad.tolist()
        seen = [(t, i) for i, t in enumerate(first) if t >= 0]
        if not seen:
            return None
        t, i = min(seen)  # the earliest step; at one step, inputs before the signal
        return f"{tree.NONFINITE_WHAT[i]} at step {t} of the sequence"

    @property
    def loss_sum(self) -> float:
        """Σ_t E_t since the reset (or since :meth:`take_losses`)."""
        return self.losses()[0]

    @property
    def n_losses(self) -> int:
        """Steps with a target since the reset (or since :meth:`take_losses`)."""
        return self.losses()[1]

    def losses(self) -> tuple[float, int]:
        """(loss sum, steps with a target) since the reset or :meth:`take_losses`."""
        if self.carry is None:
            return 0.0, 0
        s = self.carry.stats
        total, n = torch.stack((s.loss_sum.double(), s.n_losses.double())).tolist()
        return total, int(n)

    def take_losses(self) -> tuple[float, int]:
        """(loss sum, steps with a target) since the reset or the last call; resets both."""
        if self.carry is None:
            return 0.0, 0
        s = self.carry.stats
        out = self.losses()
        zero = s._replace(loss_sum=torch.zeros_like(s.loss_sum), n_losses=s.n_losses * 0)
        self.carry = self.carry._replace(stats=zero)
        return out

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the runner carries between steps, as cloned tensors in plain containers."""
        return {
            "rule": self.rule.name,
            "batch_size": self.batch_size,
            "steps": self.steps,
            "grads": tree.pack(self.grads),
            "carry": tree.pack(self.carry),
            "consts": tree.pack(self.engine.consts),
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
        grads = tree.unpack(self.grads, state.get("grads"), "runner gradients")
        consts = tree.unpack(self.engine.consts, state.get("consts"), "fixed random matrices")
        if state["batch_size"] is not None:
            self.reset(int(state["batch_size"]))
            template = self.carry
            carry = tree.unpack(template, state.get("carry"), "carry")
            self.carry = self.engine.restore(carry, loss_fn or self._loss_fn)
        else:  # saved before any reset: so is this one now
            self.batch_size, self.carry = None, None
        self._grads = dict(grads)
        self.engine.consts.update(consts)
        self.steps = int(state["steps"])

    def named_state(self) -> Iterator[tuple[str, Tensor]]:
        """(dotted name, tensor) of everything in :meth:`state_dict`: names a bad tensor."""
        yield from tree.named_tensors(self._grads, "grads")
        yield from tree.named_tensors(self.carry, "carry")
        yield from tree.named_tensors(self.engine.consts, "consts")

    def state_tensors(self) -> Iterator[Tensor]:
        """Every tensor this runner holds (state, traces, gradients, fixed matrices)."""
        return (t for _, t in self.named_state())

    def state_bytes(self) -> int:
        """Bytes of the carry, the fixed matrices and one gradient per trainable parameter
        (what the runner holds at an update, whether or not a gradient is pending now)."""
        held = (*tree.tensors(self.carry), *tree.tensors(self.engine.consts))
        grads = sum(p.numel() * p.element_size() for p in self.params.values())
        return grads + sum(t.numel() * t.element_size() for t in held)


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
