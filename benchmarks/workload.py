"""The benchmarked workloads: networks, Poisson input streams, the loss and the methods.

The headline configuration is 64 Poisson inputs → LIF(256) → LIF(256) → a linear readout to
10 classes, batch 32, a loss at every step; the variant puts recurrent weights H in layer 1.
:class:`NetSpec` describes it and its relatives (other cells, other sizes).

A *method* is what one measurement runs on a network:

- ``"forward"``: inference only, ``net.step`` under ``torch.no_grad()``;
- ``"jacobians"`` / ``"jacobians-derived"``: the forward step of every stateful layer together
  with its per-neuron Jacobian blocks (:func:`ostl.engine.neuron_jacobians`), in closed form or
  derived with ``torch.func``: the Jacobian path alone, without traces, signals or updates;
- a rule name registered in :data:`ostl.rules.RULES` (``"bptt"``, ``"ostl"``, ``"osttp"``,
  ``"eprop"``, ...), trained with :class:`ostl.Learner`: BPTT with ``update_every=None`` (full
  BPTT over the sequence, one optimizer step at its end), every online rule with
  ``update_every=1`` (an optimizer step after every time step). ``"ostl"`` is
  ``OSTL(recurrence="diagonal")``; the others take their default options; ``"ostl-..."`` are the
  OSTL variants of :data:`VARIANTS` (``"ostl-compiled"``: ``Learner(..., compile=True)``);
- ``"torch"``: BPTT with plain autograd over a hand-written LIF network (no ostl);
- ``"snntorch"``: BPTT with snnTorch's ``Leaky`` / ``RLeaky`` neurons;
- ``"ostl-direct"``: OSTL written directly for the hand-written network (feed-forward LIF).

Inputs are drawn once into a pool of frames that the sequence cycles through, so the input
itself does not count towards the memory of long sequences. Targets are one class per sample,
given as a float one-hot vector at every step (OSTTP needs float targets; the loss is the cross
entropy with probability targets, identical to the class-index form).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ostl.layer import Layer, Network, Readout
from ostl.learner import Learner
from ostl.losses import cross_entropy
from ostl.rules import OSTL, RULES, Rule, get_rule

__all__ = [
    "NetSpec",
    "HEADLINE",
    "BENCH_RULES",
    "EXTERNAL",
    "build_network",
    "input_pool",
    "one_hot_targets",
    "loss_fn",
    "make_rule",
    "make_learner",
    "make_optimizer",
    "VARIANTS",
    "KERNEL_OFF",
    "COMPILED",
    "registered_bench_rules",
    "online_rules",
]

#: Rules the benchmark reports, in table order, when they are registered in ``RULES``.
BENCH_RULES: tuple[str, ...] = ("bptt", "ostl", "osttp", "eprop")
#: Methods that are not ostl rules.
EXTERNAL: tuple[str, ...] = (
    "forward", "torch", "snntorch", "ostl-direct", "jacobians", "jacobians-derived"
)  # fmt: skip

# LIF constants shared by every implementation (ostl's LIF defaults): α = 0.9, ϑ = 1, hard
# reset, fast-sigmoid surrogate of slope 5.
LIF_DECAY = 0.9
LIF_THRESHOLD = 1.0
SURROGATE_SLOPE = 5.0


@dataclass(frozen=True)
class NetSpec:
    """A benchmarked network: ``n_in`` Poisson inputs → ``layers`` × cell(hidden) → readout.

    Attributes:
        cell: a registered cell name (``"lif"``, ``"snu"``, ``"lstm"``, ...).
        n_in: number of Poisson inputs.
        hidden: neurons per stateful layer.
        layers: number of stateful layers.
        recurrent: recurrent weights H in the first stateful layer.
        classes: readout size (classes).
        batch: batch size B.
        rate: probability that an input spikes at a step.
        reset, detach_reset: the LIF's reset (``"hard"`` / ``"subtract"``) and whether its
            derivative is stopped; ``"subtract"`` + ``True`` (as in e-prop) is the LIF whose
            traces factorise (:mod:`ostl.engine.factorised`).
    """

    cell: str = "lif"
    n_in: int = 64
    hidden: int = 256
    layers: int = 2
    recurrent: bool = False
    classes: int = 10
    batch: int = 32
    rate: float = 0.1
    reset: str = "hard"
    detach_reset: bool = False

    @property
    def factorised(self) -> bool:
        """A LIF whose diagonal traces factorise into presynaptic ones."""
        return self.cell == "lif" and self.reset == "subtract" and self.detach_reset

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``LIF 64→256→256→10, B=32, rec. L1``."""
        sizes = "→".join(str(n) for n in (self.n_in, *[self.hidden] * self.layers, self.classes))
        rec = ", rec. L1" if self.recurrent else ""
        reset = ""
        if self.reset != "hard" or self.detach_reset:
            reset = f", {self.reset} reset" + (" (not differentiated)" if self.detach_reset else "")
        return f"{self.cell.upper()} {sizes}, B={self.batch}{rec}{reset}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetSpec:
        return cls(**d)

    def with_(self, **changes: Any) -> NetSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)


#: The headline configuration (feed-forward; ``HEADLINE.with_(recurrent=True)``
#: is the recurrent variant).
HEADLINE = NetSpec()


def build_network(spec: NetSpec, *, seed: int = 0, device: str | torch.device = "cpu") -> Network:
    """The ostl network of a spec, float32, weights drawn from ``seed``."""
    torch.manual_seed(seed)
    layers: list[Layer | Readout] = []
    n = spec.n_in
    kw: dict[str, Any] = {}
    if spec.reset != "hard" or spec.detach_reset:
        if spec.cell != "lif":
            raise ValueError(f"NetSpec: reset options apply to the LIF only, got {spec.cell!r}")
        kw = {"reset": spec.reset, "detach_reset": spec.detach_reset}
    for i in range(spec.layers):
        rec = spec.recurrent and i == 0
        layers.append(Layer(n, spec.hidden, spec.cell, recurrent=rec, **kw))
        n = spec.hidden
    layers.append(Readout(n, spec.classes))
    return Network(layers).to(device)


def input_pool(
    spec: NetSpec, frames: int, *, seed: int = 0, device: str | torch.device = "cpu"
) -> Tensor:
    """Poisson spike frames (frames, B, n_in), float32 0/1, drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed + 1)
    xs = (torch.rand(frames, spec.batch, spec.n_in, generator=gen) < spec.rate).float()
    return xs.to(device)


def one_hot_targets(spec: NetSpec, *, seed: int = 0, device: str | torch.device = "cpu") -> Tensor:
    """One random class per sample as a float one-hot (B, classes)."""
    gen = torch.Generator().manual_seed(seed + 2)
    labels = torch.randint(0, spec.classes, (spec.batch,), generator=gen)
    return F.one_hot(labels, spec.classes).float().to(device)


#: Cross entropy of one step with probability (one-hot) targets, mean over the batch
#: (:data:`ostl.losses.cross_entropy`: a closed-form output error for the online rules,
#: autograd for BPTT and the hand-written baselines).
loss_fn = cross_entropy


#: OSTL variants the bench measures beside the rules (the options of their ``OSTL``): the
#: generic derived Jacobians instead of the closed forms, traces stored in half precision, the
#: trace update in PyTorch ops instead of the fused kernel (:data:`KERNEL_OFF`), and the whole
#: step under ``torch.compile`` (:data:`COMPILED`).
VARIANTS: dict[str, dict[str, Any]] = {
    "ostl-derived": {"jacobians": "derived"},
    "ostl-torch": {},
    "ostl-compiled": {},
    "ostl-bf16": {"trace_dtype": torch.bfloat16},
    "ostl-fp16": {"trace_dtype": torch.float16},
}

#: Variants measured with :mod:`ostl.kernels` turned off in their process (PyTorch's three
#: passes over the trace instead of the fused one).
KERNEL_OFF = frozenset({"ostl-torch"})

#: Variants trained with ``Learner(..., compile=True)``: the rule's whole step runs under
#: ``torch.compile``. Its first step compiles it (seconds): the warm-up sequences do that.
COMPILED = frozenset({"ostl-compiled"})


def make_rule(name: str) -> Rule:
    """The rule object a method name stands for (``"ostl"`` is the diagonal OSTL; see
    :data:`VARIANTS` for the ``"ostl-..."`` variants)."""
    if name == "ostl":
        return OSTL(recurrence="diagonal")
    if name in VARIANTS:
        return OSTL(recurrence="diagonal", **VARIANTS[name])
    return get_rule(name)


def make_optimizer(params: Any, lr: float = 1e-3) -> torch.optim.Optimizer:
    """Adam, the fused implementation (one kernel for all parameters) for every method."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def make_learner(net: Network, method: str, *, lr: float = 1e-3) -> Learner:
    """A Learner with Adam: BPTT updates at the end of the sequence, online rules every step;
    the methods of :data:`COMPILED` with ``compile=True``."""
    return Learner(
        net,
        make_rule(method),
        loss_fn=loss_fn,
        optimizer=make_optimizer(net.parameters(), lr),
        update_every=None if method == "bptt" else 1,
        compile=method in COMPILED,
    )


def registered_bench_rules() -> list[str]:
    """The rules of :data:`BENCH_RULES` registered right now, in table order."""
    return [r for r in BENCH_RULES if r in RULES]


def online_rules() -> list[str]:
    """Every registered rule except BPTT: the rules whose memory must not grow with T."""
    return [r for r in RULES if r != "bptt"]
