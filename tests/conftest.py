"""Shared fixtures: float64 by default for exactness tests, one thread per test worker; the
tiny data files of every task (``tiny_root``) for the tests that run each task end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ostl.numerics import denormals_flushed

from .tiny_tasks import tiny_data

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _ieee_denormals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts and ends with IEEE denormals. ``ostl`` (``ostl.run.cli.main``) and the
    denormal benchmark flush denormals for their whole process, which is right for a command
    but would leak into the tests that run after an in-process call (the threads torch starts
    later inherit the mode; the kernel tests check IEEE subnormals): here those calls keep IEEE
    arithmetic, and a test that flushed on purpose is undone. The subprocess tests run the
    real commands."""
    monkeypatch.setattr("ostl.run.cli.flush_denormals_globally", lambda: False)
    monkeypatch.setattr("ostl.numerics.flush_denormals_globally", lambda: False)
    yield
    if denormals_flushed():
        torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A module's tiny data folder (``tests/tiny_tasks.py``), in place for the whole module."""
    with pytest.MonkeyPatch.context() as mp, tiny_data(tmp_path_factory.mktemp("tiny"), mp) as root:
        yield root
