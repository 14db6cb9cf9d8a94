"""The fault-injection suite behind ``scripts/faults.py`` (see that script).

- :mod:`.hook`: the ``sitecustomize.py`` that kills a process, or fills its disk, at an exact
  call of the checkpoint writer;
- :mod:`.procs`: ``ostl`` commands in subprocesses, process trees, kill -9;
- :mod:`.core`: the tiny run, the suite's settings, results, the uninterrupted reference;
- :mod:`.checks`: files compared with the reference (bit for bit);
- one module per family of faults: :mod:`.kills` (kill -9 in training, two writers),
  :mod:`.writes` (faults inside a checkpoint write, disk full), :mod:`.unwritable`,
  :mod:`.nproc` (kills under ``--nproc 2``), :mod:`.hostile` (corrupt, foreign and
  code-carrying files, NaN/Inf);
- :mod:`.report`: the table and ``docs/reliability.md``.
"""
