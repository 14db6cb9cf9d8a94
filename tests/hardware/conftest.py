"""The hardware tests need IBM's aihwkit; without it they skip and say how to install it."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "aihwkit",
    reason="aihwkit is not installed: `make install` installs it "
    "(pip install --no-deps aihwkit==1.1.0 plus the `hardware` extra)",
)
