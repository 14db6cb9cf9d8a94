"""The hardware tests need IBM's aihwkit; without it they skip and say how to install it."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "aihwkit",
    reason="aihwkit is not installed: `make install` installs it "
    "(pip install --no-deps aihwkit==1.1.0 plus the `hardware` extra)",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/hardware/ carries the ``hardware`` marker (``-m hardware``)."""
    for item in items:
        if "tests/hardware/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.hardware)
