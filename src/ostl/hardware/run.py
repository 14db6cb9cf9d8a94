"""Hardware in the loop for ``ostl train --hardware pcm`` and the evaluation after drift.

Three ways to put a network on PCM (``--pcm-update``):

- ``offline``: train in software (any rule, e.g. BPTT), then program the trained weights onto
  the crossbars once (one full write per weight) and run inference there;
- ``mixed`` / ``direct``: hardware in the loop. The network is mapped at the start; every
  forward pass (training and evaluation) runs through the crossbars; the rule's traces and
  learning signals are computed digitally from the layers' inputs and outputs; the optimizer's
  updates are programmed with :class:`~ostl.hardware.update.MixedPrecision` or
  :class:`~ostl.hardware.update.DirectProgramming`.

OSTTP needs nothing more from the crossbars than the forward pass: its hidden signals are a
fixed projection of the target and its output signal the readout's own error, so there is no
backward pass through the crossbars and no transposed read. OSTL's learning signal sends the
output error down through the readout's transposed weights: on hardware that is a transposed
read of the readout crossbar; here it is done digitally, from the digital copy of the
programmed weights (the layers' parameters).

After training, :meth:`HardwareSession.report` reads the crossbars at the inference times
(:data:`DRIFT_TIMES`) with and without global drift compensation and evaluates the test split
at each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..errors import UnsupportedError
from ..layer import Network
from ..rules.base import Rule
from ..rules.trace import TraceRule
from .pcm import PCMConfig, crossbars, drift_network, map_network
from .update import SCHEMES, ProgrammingScheme, attach_scheme

__all__ = ["HardwareSession", "DRIFT_TIMES", "PCM_UPDATES", "HARDWARE"]

#: Inference times after programming (seconds) at which the report evaluates.
DRIFT_TIMES: dict[str, float] = {"1s": 1.0, "1h": 3600.0, "1d": 86400.0, "1y": 3.156e7}
PCM_UPDATES = ("mixed", "direct", "offline")
HARDWARE = ("pcm",)


@dataclass
class HardwareSession:
    """The PCM side of one training run (see the module docstring).

    Args:
        update: ``"mixed"``, ``"direct"`` or ``"offline"``.
        config: device and periphery options.
        seed: seed of the device noise (torch's global generator is seeded with it when
            the network is mapped: aihwkit draws from it).
    """

    update: str = "mixed"
    config: PCMConfig = field(default_factory=PCMConfig)
    seed: int = 0
    scheme: ProgrammingScheme | None = None
    program_events: int = 0
    _handles: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.update not in PCM_UPDATES:
            raise ValueError(f"pcm update must be one of {PCM_UPDATES}, got {self.update!r}")

    @property
    def online(self) -> bool:
        """Whether training runs on the crossbars (hardware in the loop)."""
        return self.update != "offline"

    def attach(self, net: Network, optimizer: torch.optim.Optimizer, rule: Rule) -> None:
        """Before training: map the network and hook the optimizer (online schemes only).

        Online learning on the crossbars needs a rule whose learning runs on eligibility
        traces (OSTL, OSTTP, e-prop, SnAp-1, DFA): BPTT and RTRL differentiate through the
        forward pass, which the crossbars do not offer; train them with ``"offline"``.
        """
        if not self.online:
            return
        if not isinstance(rule, TraceRule):
            raise UnsupportedError(
                f"{rule.name} cannot learn on the PCM crossbars: it needs a backward pass (or "
                "forward-mode derivatives) through the analog matrix products. Use a trace "
                "rule (ostl, osttp, eprop, ...) or pcm_update='offline' (train in software, "
                "then program)."
            )
        self._map(net)
        self.scheme = SCHEMES[self.update]()
        self._handles = attach_scheme(net, optimizer, self.scheme)

    def _map(self, net: Network) -> None:
        torch.manual_seed(self.seed)
        # trained weights programmed once will not grow: the full range for them
        config = self.config if self.online else replace(self.config, headroom=1.0)
        xbars = map_network(net, config)
        self.program_events += sum(x.weight().numel() for x in xbars.values())

    def finish(self, net: Network) -> None:
        """After training (best weights loaded for offline): program them if offline."""
        for h in self._handles:
            h.remove()
        self._handles = []
        if not self.online:
            self._map(net)

    def report(self, net: Network, evaluate: Callable[[Network], float]) -> dict[str, Any]:
        """Programming events and the test metric after drift, with and without compensation.

        ``evaluate(net)`` returns the test metric of the network as it is now mapped.
        """
        xbars = crossbars(net)
        devices = sum(x.weight().numel() for x in xbars.values())
        training_events = self.scheme.events if self.scheme is not None else 0
        out: dict[str, Any] = {
            "update": self.update,
            "weights_on_pcm": devices,
            "program_events": self.program_events + training_events,
            "training_events": training_events,
            "events_per_weight": (self.program_events + training_events) / max(devices, 1),
            "device_writes": sum(x.writes for x in xbars.values()),
            "config": {k: getattr(self.config, k) for k in self.config.__dataclass_fields__},
            "test_programmed": evaluate(net),
            "drift": {},
        }
        for comp in (False, True):
            for name, t in DRIFT_TIMES.items():
                drift_network(net, t, compensation=comp)
                out["drift"][f"{name}{'+comp' if comp else ''}"] = evaluate(net)
        drift_network(net, None, compensation=self.config.compensation)
        return out
