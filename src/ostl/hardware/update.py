"""Writing weight updates to PCM devices: direct programming or mixed precision.

The learning rules run digitally and write ``.grad``; the optimizer turns it into a desired
change Δw of every weight. On the hardware that change must be *programmed* into the devices
(:class:`~ostl.hardware.pcm.PCMCrossbar`). :func:`attach_scheme` hooks the optimizer: before its
step it records the weights, after it takes Δw = w_new - w_old, puts the old weights back and
hands Δw to a scheme, which programs the crossbars; the parameter then holds the *programmed*
weight (the digital copy the rules read), never the unrealised ideal one.

- :class:`DirectProgramming`: every nonzero Δw is written at once (one programming event per
  weight per update; each event draws PCM programming noise). Updates far below the device's
  precision drown in that noise, and the event count is the number of weights × updates.
- :class:`MixedPrecision` (Nandakumar et al., Front. Neurosci. 2020): Δw accumulates in a
  digital high-precision variable χ; a device is programmed only when |χ| reaches the device
  granularity ε (``PCMConfig.granularity``, in µS): one event of n·ε (n = ⌊|χ|/ε⌋ steps of ε,
  sign of χ), and χ keeps the remainder. Below ε nothing is programmed.

Events count programmed weights (pairs of devices); ``PCMCrossbar.writes`` counts device writes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..layer import Network
from .pcm import PCMCrossbar, crossbars

__all__ = ["ProgrammingScheme", "DirectProgramming", "MixedPrecision", "attach_scheme", "SCHEMES"]


class ProgrammingScheme:
    """How a desired weight change is written to a crossbar; counts programming events.

    Attributes:
        events: weights programmed so far (one per weight per write).
        updates: calls of :meth:`apply` so far (one per optimizer step and crossbar).
    """

    name = "scheme"

    def __init__(self) -> None:
        self.events = 0
        self.updates = 0

    def apply(self, key: str, xbar: PCMCrossbar, delta: Tensor) -> None:
        """Program ``delta`` (the desired change of the weights) into ``xbar``."""
        self.updates += 1
        self.events += self._program(key, xbar, delta.detach().to(torch.float32))

    def _program(self, key: str, xbar: PCMCrossbar, delta: Tensor) -> int:
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        return {"scheme": self.name, "events": self.events, "updates": self.updates}


class DirectProgramming(ProgrammingScheme):
    """Write every nonzero change at once, with programming noise (see the module docstring)."""

    name = "direct"

    def _program(self, key: str, xbar: PCMCrossbar, delta: Tensor) -> int:
        mask = delta != 0
        return xbar.increment(delta, mask) if mask.any() else 0


class MixedPrecision(ProgrammingScheme):
    """Accumulate digitally; program a device when its accumulated change reaches ε.

    Args:
        granularity: ε in µS (None: each crossbar's ``config.granularity``).
    """

    name = "mixed"

    def __init__(self, granularity: float | None = None) -> None:
        super().__init__()
        self.granularity = granularity
        self.chi: dict[str, Tensor] = {}  # accumulated, not yet programmed change (weights)

    def epsilon(self, xbar: PCMCrossbar) -> float:
        """ε in weight units for this crossbar."""
        g = xbar.config.granularity if self.granularity is None else self.granularity
        return g / xbar.g_scale

    def _program(self, key: str, xbar: PCMCrossbar, delta: Tensor) -> int:
        chi = self.chi.get(key)
        chi = delta.clone() if chi is None else chi + delta
        eps = self.epsilon(xbar)
        n = torch.floor(chi.abs() / eps)
        mask = n > 0
        if not mask.any():
            self.chi[key] = chi
            return 0
        step = torch.sign(chi) * n * eps
        self.chi[key] = chi - step
        return xbar.increment(step, mask)


SCHEMES = {"direct": DirectProgramming, "mixed": MixedPrecision}


def attach_scheme(
    net: Network, optimizer: torch.optim.Optimizer, scheme: ProgrammingScheme
) -> list[Any]:
    """Route the optimizer's updates of the crossbar weights through ``scheme``.

    The other parameters (biases, per-neuron parameters: digital) are updated as usual.
    Returns the hook handles (``handle.remove()`` detaches the scheme).
    """
    xbars = crossbars(net)
    if not xbars:
        raise ValueError("attach_scheme: the network has no crossbars; call map_network first")
    params = dict(net.named_parameters())
    missing = [k for k in xbars if k not in params]
    if missing:
        raise ValueError(f"attach_scheme: crossbars {missing} have no parameter in the network")
    before: dict[str, Tensor] = {}

    def pre(opt: Any, args: Any, kwargs: Any) -> None:
        for k in xbars:
            before[k] = params[k].detach().clone()

    @torch.no_grad()
    def post(opt: Any, args: Any, kwargs: Any) -> None:
        for k, xbar in xbars.items():
            p = params[k]
            delta = p - before[k]
            scheme.apply(k, xbar, delta)
            p.copy_(xbar.weight().to(p.dtype))

    return [optimizer.register_step_pre_hook(pre), optimizer.register_step_post_hook(post)]
