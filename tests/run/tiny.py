"""The tiny training configuration the run tests share: digits, a few steps, seconds to train."""

from __future__ import annotations

from typing import Any

from ostl.run.config import TrainConfig


def tiny(
    *, steps: int = 4, train_size: int = 48, test_size: int = 16, **changes: Any
) -> TrainConfig:
    """OSTL on digits with one hidden layer of 8, 2 epochs of ``train_size / 16`` batches of
    ``steps`` steps; ``changes`` replace any other field."""
    task_options = {"steps": steps, "train_size": train_size, "test_size": test_size}
    fields: dict[str, Any] = dict(
        task="digits", rule="ostl", hidden=(8,), epochs=2, batch_size=16, task_options=task_options
    )
    return TrainConfig(**{**fields, **changes})
