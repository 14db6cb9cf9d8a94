"""Interoperability: networks in and out of ostl.

- :mod:`ostl.interop.nir`: spiking networks to and from NIR, the Neuromorphic Intermediate
  Representation that simulators (snnTorch, Norse, Sinabs, Rockpool, Lava) and neuromorphic
  chips read (needs the ``nir`` package: ``pip install ostl[nir]``).
- :mod:`ostl.interop.torch_modules`: ostl layers from PyTorch's ``nn.RNN``, ``nn.GRU``,
  ``nn.LSTM`` and ``nn.Linear``, with their weights.
"""
