"""The application: training runs, the ``ostl`` command and what a run writes.

The library's core (cells, layers, the trace engine, rules, the learner, tasks) lives in the
packages above; this package uses it and is never imported by it.

- :mod:`.train` and :mod:`.resume`: a training run and its resumable epoch loop;
  :mod:`.compare`: several rules side by side;
- :mod:`.checkpoint`: checkpoint files (atomic writes, safe loads, RNG states);
- :mod:`.outputs`, :mod:`.plots`, :mod:`.meter`: what a run folder holds, its figures, and the
  memory and time meters;
- :mod:`.cli`: the ``ostl`` command; :mod:`.demo`: ``ostl demo``;
- :mod:`.alignment`: ``python -m ostl.run.alignment``, every rule's gradient against BPTT's;
- :mod:`.sections`: named sections of the Markdown reports that several commands write.
"""

from . import checkpoint

__all__ = ["checkpoint"]
