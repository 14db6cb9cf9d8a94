"""In-memory computing: online learning on simulated phase-change-memory crossbars (aihwkit).

- :mod:`ostl.hardware.pcm`: the device model and the mapping of a Network's synapses onto
  crossbars (forward MVMs through aihwkit's tile: programming noise, read noise, drift, global
  drift compensation, DAC/ADC quantisation).
- :mod:`ostl.hardware.update`: writing weight updates to the devices (direct programming of
  every update, or mixed precision), with programming-event counters.
- :mod:`ostl.hardware.run`: hardware in the loop for ``ostl train --hardware pcm``, and the
  evaluation after drift.

Needs aihwkit (``make install`` installs it with ``--no-deps`` next to our torch); see
``docs/hardware.md``.
"""

from .pcm import (
    AnalogSynapses,
    PCMConfig,
    PCMCrossbar,
    crossbars,
    drift_network,
    map_network,
    require_aihwkit,
    unmap_network,
)
from .update import DirectProgramming, MixedPrecision, ProgrammingScheme, attach_scheme

__all__ = [
    "AnalogSynapses",
    "PCMConfig",
    "PCMCrossbar",
    "crossbars",
    "drift_network",
    "map_network",
    "require_aihwkit",
    "unmap_network",
    "DirectProgramming",
    "MixedPrecision",
    "ProgrammingScheme",
    "attach_scheme",
]
