"""Built-in demo: a shallow SNU network learns a synthetic pattern online with OSTL.

Pattern generation in the style of e-prop: frozen Poisson spike trains in, a sum of sinusoids
as the target of a linear readout at every step. The demo

1. checks exactness: OSTL's gradients against autograd BPTT in float64 on the same network
   (one stateful layer without H, where OSTL is exactly BPTT) and prints the table;
2. trains online with ``update_every=1`` (the weights change after every step; nothing is
   stored per step) and prints the loss falling, epoch by epoch;
3. reports the learner's memory at two sequence lengths: it does not grow with T.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from ..api import compare_to_bptt
from ..layer import Layer, Network, Readout
from ..learner import Learner
from ..rules import OSTL
from .display import display_mode

__all__ = ["DemoConfig", "pattern_task", "run_demo"]


@dataclass
class DemoConfig:
    n_in: int = 20
    hidden: int = 64
    steps: int = 100  # T
    epochs: int = 60
    lr: float = 3e-3
    rate: float = 0.1  # Poisson firing probability per step
    seed: int = 0


def pattern_task(cfg: DemoConfig, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Frozen Poisson inputs (T, 1, n_in) and a sum-of-sinusoids target (T, 1, 1)."""
    g = torch.Generator().manual_seed(cfg.seed)
    xs = (torch.rand(cfg.steps, 1, cfg.n_in, generator=g) < cfg.rate).to(dtype)
    t = torch.arange(cfg.steps, dtype=torch.float64) / cfg.steps
    amp = torch.rand(3, generator=g, dtype=torch.float64) * 0.5 + 0.5
    phase = torch.rand(3, generator=g, dtype=torch.float64) * 2 * math.pi
    target = sum(
        a * torch.sin(2 * math.pi * (k + 1) * t + p) for k, (a, p) in enumerate(zip(amp, phase))
    )
    return xs, torch.as_tensor(target, dtype=dtype).view(cfg.steps, 1, 1)


def make_net(cfg: DemoConfig) -> Network:
    torch.manual_seed(cfg.seed)
    # A lower SNU threshold (b = -0.2) so the hidden layer spikes from the first epoch.
    net = Network([Layer(cfg.n_in, cfg.hidden, "snu", b=-0.2), Readout(cfg.hidden, 1)])
    with torch.no_grad():
        net.typed_layers[0].W.mul_(3.0)
    return net


def mse(y: Tensor, target: Tensor) -> Tensor:
    return ((y - target) ** 2).mean()


def run_demo(cfg: DemoConfig | None = None, *, progress: bool = True) -> dict[str, float]:
    """Run the demo; prints as it goes and returns the headline numbers.

    ``progress``: a bar over the epochs when stderr is a terminal; without it (or off), the
    loss every 10 epochs.
    """
    cfg = cfg or DemoConfig()
    out: dict[str, float] = {}

    print("1) Exactness: OSTL vs autograd BPTT, float64, SNU(20→64) + linear readout")
    net64 = make_net(cfg).double()
    xs64, ts64 = pattern_task(cfg, torch.float64)
    report = compare_to_bptt(net64, OSTL(), xs64, ts64, mse)
    print(report.table())
    out["max_relative_error"] = report.max_relative_error
    print(f"   max relative error {report.max_relative_error:.2e} (theory: exact)\n")

    print(f"2) Online learning with OSTL, update_every=1, {cfg.epochs} epochs × {cfg.steps} steps")
    net = make_net(cfg)
    xs, ts = pattern_task(cfg)
    learner = Learner(
        net, OSTL(), loss_fn=mse, optimizer=torch.optim.Adam(net.parameters(), lr=cfg.lr)
    )
    t0 = time.perf_counter()
    bars = display_mode(progress) == "bars"  # a bar on a terminal, a line every 10 epochs else
    bar = tqdm(range(cfg.epochs), desc="epochs", unit="epoch", disable=not bars)
    losses = []
    for epoch in bar:
        learner.reset(1)
        for x_t, y_t in zip(xs, ts):
            learner.step(x_t, y_t)
        learner.end_sequence()
        losses.append(learner.mean_loss)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if not bars and (epoch % 10 == 0 or epoch == cfg.epochs - 1):
            print(f"   epoch {epoch:3d}  loss {losses[-1]:.4f}")
    elapsed = time.perf_counter() - t0
    out.update(first_loss=losses[0], last_loss=losses[-1], seconds=elapsed)
    print(
        f"   loss {losses[0]:.4f} -> {losses[-1]:.4f} in {elapsed:.1f} s "
        f"({1e3 * elapsed / (cfg.epochs * cfg.steps):.2f} ms per online step)\n"
    )

    print("3) Memory held by the learner (state, traces, gradients) vs sequence length")
    for T in (100, 1000):
        learner.reset(1)
        for _ in range(T):
            learner.step(xs[0], ts[0])
        out[f"bytes_T{T}"] = learner.state_bytes()
        print(f"   T={T:5d}: {learner.state_bytes():,} bytes")
    return out
