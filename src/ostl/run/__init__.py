"""The application: training runs, the ``ostl`` command and what a run writes.

The library's core (cells, layers, the trace engine, rules, the learner, tasks) lives in the
packages above; this package uses it and is never imported by it.

- :mod:`.train`: ``train()`` and ``resume()``, a training run; :mod:`.run`: the :class:`Run`
  behind them and its collaborators; :mod:`.config`: its configuration and result;
  :mod:`.resume`: the resumable epoch loop and checkpointing; :mod:`.evaluate`: evaluation and
  model selection; :mod:`.compare`: several rules side by side;
- :mod:`.checkpoint`: checkpoint files (atomic writes, safe loads, RNG states);
- :mod:`.outputs`, :mod:`.plots`, :mod:`.meter`: what a run folder holds, its figures, and the
  memory and time meters;
- :mod:`.cli`: the ``ostl`` command, its run options generated from the configuration
  (:mod:`.options`); :mod:`.demo`: ``ostl demo``;
- :mod:`.alignment`: ``python -m ostl.run.alignment``, every rule's gradient against BPTT's;
- :mod:`.sections`: named sections of the Markdown reports that several commands write.
"""

from . import checkpoint

__all__ = ["checkpoint"]
