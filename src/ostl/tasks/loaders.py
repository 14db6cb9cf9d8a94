"""Tasks from your own DataLoaders: each is read once into tensors, then
:func:`ostl.tasks.custom.from_tensors` makes the task (layouts, kinds, defaults: see there)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ..errors import OptionError, ShapeError
from .custom import TensorTask, _tensor, from_tensors

__all__ = ["from_dataloader"]


def _collect(loader: Any, where: str, batch_first: bool) -> tuple[Tensor, Tensor]:
    """Every (x, y) batch of ``loader``, concatenated along the sequence (sample) dimension."""
    if isinstance(loader, torch.utils.data.Dataset) and not isinstance(
        loader, torch.utils.data.IterableDataset
    ):
        raise OptionError(
            f"{where}: got a Dataset; pass a DataLoader of it (DataLoader(dataset, batch_size=..."
            ")) or use from_tensors"
        )
    xs, ys = [], []
    for i, batch in enumerate(loader):
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            size = f" of {len(batch)}" if isinstance(batch, tuple | list) else ""
            raise OptionError(
                f"{where} batch {i}: expected a pair (inputs, targets), got a "
                f"{type(batch).__name__}{size}"
            )
        xs.append(_tensor(batch[0], f"{where} batch {i} inputs"))
        ys.append(_tensor(batch[1], f"{where} batch {i} targets"))
    if not xs:
        raise ShapeError(f"{where}: the loader yielded no batches")
    x_dim = 0 if batch_first else 1
    # one target per sequence: (N,) labels, (N, K) values; per step: T first unless batch_first
    per_sequence = ys[0].dim() == (1 if not ys[0].is_floating_point() else 2)
    y_dim = 0 if batch_first or per_sequence else 1
    try:
        return torch.cat(xs, x_dim), torch.cat(ys, y_dim)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ShapeError(
            f"{where}: the batches do not fit together (same sequence length and sizes needed; "
            f"time-major unless batch_first=True): {first}"
        ) from None


def from_dataloader(
    train: Iterable[Any],
    test: Iterable[Any],
    valid: Iterable[Any] | None = None,
    *,
    batch_first: bool = False,
    **options: Any,
) -> TensorTask:
    """A task from DataLoaders (or any iterables) of ``(inputs, targets)`` batches.

    Each loader is read once, into memory; the run then batches, shuffles and splits the
    sequences itself (its own batch size and seed), as :func:`from_tensors` does, so the data
    must fit in memory (for larger data, write a :class:`~ostl.tasks.base.Task`). The batches
    are time-major ``(T, B, n_in)`` unless ``batch_first=True`` (``(B, T, n_in)``, what
    PyTorch's default collate makes of ``(T, n_in)`` samples). ``options`` are
    :func:`from_tensors`'s (``kind``, ``targets_at``, ``n_classes``, ``valid_fraction``, ...).
    """
    splits = {"train": train, "test": test, **({"valid": valid} if valid is not None else {})}
    pairs = {k: _collect(v, k, batch_first) for k, v in splits.items()}
    return from_tensors(
        pairs["train"], pairs["test"], pairs.get("valid"), batch_first=batch_first, **options
    )
