"""Shared fixtures: float64 by default for exactness tests, one thread per test worker."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _cli_keeps_ieee_denormals(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ostl`` (``ostl.run.cli.main``) flushes denormals for its whole process, which is right
    for a command but would leak into the tests that run after an in-process ``main([...])``
    (the threads torch starts later inherit the mode; the kernel tests check IEEE subnormals).
    In-process calls keep IEEE arithmetic here; the subprocess tests run the real command."""
    monkeypatch.setattr("ostl.run.cli.flush_denormals_globally", lambda: False)
