"""Online learning on the crossbars: OSTTP reduces the loss; rules that need a backward refuse."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ostl
from ostl.errors import UnsupportedError
from ostl.hardware import MixedPrecision, PCMConfig, attach_scheme, map_network
from ostl.hardware.run import HardwareSession


def _patterns(n_classes: int = 3, n_in: int = 20, T: int = 10, B: int = 16, seed: int = 0):
    """Each class spikes from its own random subset of inputs (fixed prototypes)."""
    gen = torch.Generator().manual_seed(seed)
    protos = torch.rand(n_classes, n_in, generator=gen) * 0.8

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, n_classes, (B,), generator=gen)
        xs = (torch.rand(T, B, n_in, generator=gen) < protos[labels]).float()
        return xs, F.one_hot(labels, n_classes).float()

    return batch


def _loss(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(y, target)


def test_osttp_on_pcm_reduces_the_loss() -> None:
    net = ostl.Network([ostl.Layer(20, 32, cell="ssnu"), ostl.Readout(32, 3)])
    map_network(net, PCMConfig())
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    scheme = MixedPrecision()
    attach_scheme(net, opt, scheme)
    learner = ostl.Learner(net, "osttp", loss_fn=_loss, optimizer=opt, update_every=1)
    batch = _patterns()
    losses = []
    for _ in range(30):
        xs, target = batch()
        learner.reset(xs.shape[1])
        runner = learner.runner
        for x in xs:
            learner.step(x, target)
        learner.end_sequence()
        loss_sum, n = runner.take_losses()
        losses.append(loss_sum / n)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert 0 < scheme.events < 30 * 10 * (20 * 32 + 32 * 3)  # fewer events than updates


def test_bptt_refuses_to_learn_on_the_crossbars() -> None:
    net = ostl.Network([ostl.Layer(4, 3, cell="rnn"), ostl.Readout(3, 2)])
    session = HardwareSession("mixed")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(UnsupportedError, match="offline"):
        session.attach(net, opt, ostl.rules.BPTT())
