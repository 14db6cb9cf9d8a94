"""The trace engine: one online step for every trace rule, over an explicit carry.

- :mod:`.jacobians`: per-neuron Jacobians of a cell step (closed form, or ``torch.func``);
- :mod:`.blocks`: a layer's parameters viewed per neuron;
- one module per trace kind: :mod:`.diagonal`, :mod:`.snap1`, :mod:`.exact`, :mod:`.factorised`;
- :mod:`.signals`: the learning signals (backprop sweep, random feedback, target and error
  projections);
- :mod:`.carry`: the carry and the generic code that walks it;
- :mod:`.step`: :class:`TraceEngine`, the step itself.

The fused trace operation these modules call lives in :mod:`ostl.kernels`.
"""

from __future__ import annotations

from .carry import Stats
from .jacobians import NeuronJacobians, neuron_jacobians
from .step import Carry, TraceEngine

__all__ = ["Carry", "Stats", "NeuronJacobians", "TraceEngine", "neuron_jacobians"]
