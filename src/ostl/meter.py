"""Memory held by a learner between time steps.

*Held memory* is what a rule keeps from one step to the next: network state, eligibility
traces, accumulated gradients (``Learner.state_bytes()``) and, for BPTT, the tensors autograd
saved for the backward pass since the last update (counted with
``torch.autograd.graph.saved_tensors_hooks``; parameters and duplicates are not counted). The
peak of that over a run is the *peak memory* of the rule: it grows with the sequence length for
BPTT and not for the online rules. Transient buffers inside one step (the per-neuron Jacobians of
the trace engine, for example) are not counted: they are freed before the next step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from .learner import Learner
from .rules import BPTT

__all__ = ["MemoryMeter"]


def _unpack(t: Tensor) -> Tensor:
    return t


class _SavedBytes:
    """The bytes of the tensors autograd saves while a step runs (its pack hook), each storage
    once, parameters left out. Neither it nor what it packs may lead back into the graph: every
    node keeps its hook and its packed tensors, and a reference from there to the learner (or
    to a tensor's own grad_fn) is a cycle through autograd's C++ nodes that Python's garbage
    collector cannot see, so the graph, and with the learner every run's last state, would
    stay in memory after the run."""

    def __init__(self, params: set[int]) -> None:
        self.params = params
        self.seen: set[int] = set()
        self.bytes = 0

    def pack(self, t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.params and ptr not in self.seen:
            self.seen.add(ptr)
            self.bytes += storage.nbytes()
        # the same data without its history: a saved output returned as itself would hold its
        # own grad_fn, a cycle through the C++ graph that is never freed
        return t.detach()

    def clear(self) -> None:
        self.seen.clear()
        self.bytes = 0


class MemoryMeter:
    """Tracks the peak held memory (bytes) of a learner; see the module docstring."""

    def __init__(self, learner: Learner) -> None:
        self.learner = learner
        # Only plain-autograd rules keep a graph across steps; torch.func (used by the trace
        # engine) refuses saved-tensor hooks, and the online rules keep no graph anyway.
        self.count_graph = isinstance(learner.rule, BPTT)
        self._saved = _SavedBytes(
            {p.untyped_storage().data_ptr() for p in learner.net.parameters()}
        )
        self.peak = 0
        self._updates = learner.updates

    @property
    def graph_bytes(self) -> int:
        """Bytes autograd has saved since the graph was last released."""
        return self._saved.bytes

    @contextmanager
    def step(self) -> Iterator[None]:
        """Wrap one ``learner.step``; the held memory is sampled when it returns."""
        if self.count_graph:
            with torch.autograd.graph.saved_tensors_hooks(self._saved.pack, _unpack):
                yield
        else:
            yield
        self.sample()

    def sample(self) -> None:
        """Record the memory held now; forget the graph if the learner updated since."""
        self.peak = max(self.peak, self.learner.state_bytes() + self.graph_bytes)
        # only a graph needs forgetting; reading the count may wait for the device (ostl.learner)
        if self.count_graph and self.learner.updates != self._updates:
            self.graph_freed()

    def graph_freed(self) -> None:
        """The autograd graph was released (after an update or at the end of a sequence)."""
        self._updates = self.learner.updates
        self._saved.clear()
