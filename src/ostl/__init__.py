"""ostl: online spatio-temporal learning for recurrent and spiking neural networks.

Public API: :class:`Layer`, :class:`Readout`, :class:`Network`,
:func:`gradients`, :func:`compare_to_bptt`, :class:`Learner`, and the rules in
:mod:`ostl.rules`; :func:`load` (a trained network from a run folder) and
:func:`export_step` (one time step as a ``torch.export`` program); :func:`to_nir` and
:func:`from_nir` (LIF networks to and from NIR, the Neuromorphic Intermediate Representation,
:mod:`ostl.interop.nir`; they need the ``nir`` package). Time-major tensors everywhere:
(T, B, N).
"""

from __future__ import annotations

from . import cells, distributed, engine, errors, losses, rules, surrogate
from ._version import __version__ as __version__
from .api import Comparison, compare_to_bptt, gradients
from .cells import CELLS
from .errors import (
    CheckpointError,
    DeviceError,
    DTypeError,
    LayerTypeError,
    NonFiniteError,
    OptionError,
    OSTLError,
    ShapeError,
    TargetError,
    TraceTooLargeError,
    UnsupportedError,
)
from .layer import Layer, Network, Readout
from .learner import Learner
from .rules import BPTT, DFA, OSTL, OSTTP, RTRL, RULES, EProp, SnAp

__all__ = [
    "Layer",
    "Readout",
    "Network",
    "gradients",
    "compare_to_bptt",
    "Comparison",
    "Learner",
    "BPTT",
    "RTRL",
    "OSTL",
    "OSTTP",
    "EProp",
    "SnAp",
    "DFA",
    "RULES",
    "CELLS",
    "cells",
    "rules",
    "surrogate",
    "engine",
    "losses",
    "errors",
    "distributed",
    "OSTLError",
    "ShapeError",
    "DTypeError",
    "DeviceError",
    "NonFiniteError",
    "UnsupportedError",
    "LayerTypeError",
    "TraceTooLargeError",
    "CheckpointError",
    "TargetError",
    "OptionError",
    "checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load",
    "export_step",
    "to_nir",
    "from_nir",
]

#: Names that the package forwards, imported on first use: those of the application layer
#: (:mod:`ostl.run`; the core modules never import the application) and the NIR functions
#: (:mod:`ostl.interop.nir`: ``import ostl`` never imports the optional ``nir`` package).
_RUN_NAMES = {"checkpoint": "ostl.run", "save_checkpoint": "ostl.run.checkpoint",
              "load_checkpoint": "ostl.run.checkpoint", "load": "ostl.run.model",
              "export_step": "ostl.run.model", "to_nir": "ostl.interop.nir",
              "from_nir": "ostl.interop.nir"}  # fmt: skip


def __getattr__(name: str) -> object:
    module = _RUN_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'ostl' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
