"""Cells: per-neuron dynamics with explicit state. One file per cell; register new ones here."""

from __future__ import annotations

from typing import Any

from ..errors import OptionError
from .alif import ALIF, ALIFState
from .base import Cell
from .gru import GRU, GRUState
from .lif import LIF, LIFState
from .lstm import LSTM, LSTMState
from .rf import ResonateAndFire, RFState
from .rnn import RNN, RNNState
from .snu import SNU, SNUState, SoftSNU

__all__ = [
    "Cell",
    "SNU",
    "SoftSNU",
    "LIF",
    "ALIF",
    "RNN",
    "LSTM",
    "GRU",
    "ResonateAndFire",
    "SNUState",
    "LIFState",
    "ALIFState",
    "RNNState",
    "LSTMState",
    "GRUState",
    "RFState",
    "CELLS",
    "make_cell",
]

#: The cell registry: name -> class. Adding a cell is one file and one line here.
CELLS: dict[str, type[Cell]] = {
    "snu": SNU,
    "ssnu": SoftSNU,
    "lif": LIF,
    "alif": ALIF,
    "rnn": RNN,
    "lstm": LSTM,
    "gru": GRU,
    "rf": ResonateAndFire,
}


def make_cell(cell: str | type[Cell] | Cell, n: int, **kwargs: Any) -> Cell:
    """Build a cell of ``n`` neurons from a registry name, a Cell class, or an instance."""
    if isinstance(cell, Cell):
        if kwargs:
            raise OptionError("cell options are given to the Cell instance, not to the Layer")
        if cell.n != n:
            raise OptionError(f"the cell has {cell.n} neurons but the layer has n_out={n}")
        return cell
    if isinstance(cell, type) and issubclass(cell, Cell):
        return cell(n, **kwargs)
    if isinstance(cell, str) and cell.lower() in CELLS:
        return CELLS[cell.lower()](n, **kwargs)
    raise OptionError(f"unknown cell {cell!r}: expected one of {sorted(CELLS)} or a Cell")
