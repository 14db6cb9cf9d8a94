"""Tasks from your own data: tensors (:func:`from_tensors`) or DataLoaders
(:func:`ostl.tasks.loaders.from_dataloader`, which reads them into tensors).

::

    task = ostl.tasks.from_tensors(train=(xs, labels), test=(xs_test, labels_test))
    result = ostl.run.train(TrainConfig(rule="ostl"), task=task)

Layouts (time-major, as everywhere in ostl; ``batch_first=True`` for ``(N, T, ...)``), with
N sequences of T steps and ``n_in`` inputs per step:

- inputs ``xs``: ``(T, N, n_in)``, floating point (or bool spikes); stored as ``dtype``
  (float32, the default network's dtype). Every sequence of a split has the same T (pad
  shorter ones yourself); splits may differ in T.
- classification (integer targets): ``(N,)`` one class per sequence, given as a one-hot target
  at every step (``targets_at="every"``, a learning signal at every step for the online rules)
  or at the last step only (``"last"``); metric: accuracy of the logits summed over the steps
  with a target. Or ``(T, N)``, a class per step (sequence labelling); metric: accuracy per
  step. Loss: softmax cross-entropy per step. ``n_out`` is ``n_classes`` (default: the largest
  label + 1).
- regression (floating-point targets): ``(T, N, K)``, a target per step, or ``(N, K)``, one per
  sequence (at every step or the last, as above; K = 1 must be written out). Loss and metric:
  mean squared error. ``n_out`` is K.

``kind`` (``"classification"`` or ``"regression"``) defaults to what the targets' dtype says
(integers: classes; floats: values); given, it must agree. The validation split is ``valid``,
or when it is None a seeded random ``valid_fraction`` of the training sequences (at least one;
``seed``). The training batches are reshuffled every epoch with the run's seed.

Default network and budget (:class:`~ostl.tasks.base.Defaults`): an LSTM of 64 units, 10
epochs, batches of 32, Adam lr 2e-3; ``defaults`` replaces any of them (a ``Defaults`` or a dict
of its fields), and so do the run's own options. Inputs of only 0s and 1s are taken as spikes
(``spiking_input``: the spiking cells' defaults, as the spiking tasks use).

A task built here holds its data in memory and its configuration records the name ``"custom"``:
to rebuild a run from its folder alone (``ostl evaluate``, ``ostl.load``, ``--resume``), wrap
the call in a function of your own module and give that as the task (``--task
mypkg.data:make_task``, see :func:`ostl.tasks.get_task`); otherwise pass the task again
(``ostl.load(run, task=task)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import DTypeError, OptionError, ShapeError, TargetError, check_finite
from .base import Defaults, IndexedTask
from .data import Batch, one_hot, step_targets
from .losses import cross_entropy, mse
from .metrics import MeanSquaredError, Metric, SequenceAccuracy, StepAccuracy

__all__ = ["TensorTask", "from_tensors", "KINDS", "DEFAULTS"]

KINDS = ("classification", "regression")
#: The default network and budget of a task built here.
DEFAULTS = Defaults(cell="lstm", hidden=(64,), epochs=10, batch_size=32, lr=2e-3)
SPLITS = ("train", "valid", "test")


class TensorTask(IndexedTask):
    """A task over sequences held in memory; built by :func:`from_tensors` (see the module).

    It has no options of its own (its configuration records none).

    Attributes:
        data: split ("train", "valid", "test") -> ``(xs, ys)``, time-major: ``xs`` (T, N, n_in)
            and targets (N,) / (T, N) class indices or (N, K) / (T, N, K) values.
        kind: ``"classification"`` or ``"regression"``.
        per_step: the targets are per step (else one per sequence).
        targets_at: where a target per sequence is given: ``"every"`` step or the ``"last"``.
    """

    name = "custom"
    summary = "your own sequences (ostl.tasks.from_tensors / from_dataloader)"
    defaults = DEFAULTS
    quick = {"epochs": 1}
    __eq__ = object.__eq__  # a task is its data: two are equal only if they are the same
    __hash__ = object.__hash__

    def __init__(
        self,
        data: Mapping[str, tuple[Tensor, Tensor]],
        *,
        kind: str,
        n_out: int,
        per_step: bool,
        targets_at: str = "every",
        spiking_input: bool = False,
        defaults: Defaults = DEFAULTS,
    ) -> None:
        self.data = dict(data)
        self.kind, self.per_step, self.targets_at = kind, per_step, targets_at
        self._n_in, self._n_out = int(self.data["train"][0].shape[-1]), n_out
        self.spiking_input = spiking_input  # type: ignore[misc]  # per task, not per class
        self.defaults = defaults  # type: ignore[misc]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.split_size(s)}" for s in SPLITS)
        return f"TensorTask({self.kind}, n_in={self.n_in}, n_out={self.n_out}, {sizes})"

    @property
    def n_in(self) -> int:
        return self._n_in

    @property
    def n_out(self) -> int:
        return self._n_out

    @property
    def loss_fn(self) -> Any:  # type: ignore[override]  # a per-instance choice
        return cross_entropy if self.kind == "classification" else mse

    def split_size(self, split: str) -> int:
        """How many sequences ``split`` ("train", "valid" or "test") holds."""
        return int(self.data[split][0].shape[1])

    def metric(self) -> Metric:
        if self.kind == "regression":
            return MeanSquaredError()
        return StepAccuracy() if self.per_step else SequenceAccuracy()

    def make_batch(self, split: str, idx: Tensor) -> Batch:
        xs, ys = self.data[split]
        xs, ys = xs[:, idx], ys[:, idx] if self.per_step else ys[idx]
        if self.kind == "classification":  # float one-hot targets, as every rule takes them
            ys = one_hot(ys, self.n_out, xs.dtype)
        return Batch(xs, ys if self.per_step else step_targets(ys, len(xs), self.targets_at))


# -- checks ------------------------------------------------------------------------------
def _tensor(value: Any, what: str) -> Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, Tensor):
        raise DTypeError(f"{what}: expected a torch.Tensor or numpy array, got {type(value)}")
    return value.detach().cpu()


def _kind(kind: str | None, ys: Tensor, where: str) -> str:
    """The task's kind: given, or from the targets' dtype; checked against that dtype."""
    found = "regression" if ys.is_floating_point() else "classification"
    if ys.dtype == torch.bool or ys.is_complex():
        raise DTypeError(
            f"{where} targets: expected integer class labels or floating-point values, got "
            f"{ys.dtype}"
        )
    if kind is None:
        return found
    if kind not in KINDS:
        raise OptionError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind != found:
        want = "integer class labels" if kind == "classification" else "floating-point values"
        raise DTypeError(f"{where} targets: kind={kind!r} expects {want}, got {ys.dtype}")
    return kind


def _per_step(kind: str, ys: Tensor, where: str) -> bool:
    """Whether the targets are per step ((T, N) labels, (T, N, K) values) or per sequence."""
    one, per_step = (1, 2) if kind == "classification" else (2, 3)
    if ys.dim() not in (one, per_step):
        want = "(N,) or (T, N)" if kind == "classification" else "(N, K) or (T, N, K)"
        raise ShapeError(
            f"{where} targets ({kind}): expected shape {want} (time-major; batch_first=True "
            f"for (N, T, ...)), got {tuple(ys.shape)}"
        )
    return ys.dim() == per_step


def _split(
    pair: Any, where: str, kind: str | None, batch_first: bool, dtype: torch.dtype
) -> tuple[Tensor, Tensor, str, bool]:
    """One split's (xs, ys) checked and made time-major; its kind and target layout."""
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise OptionError(f"{where}: expected a pair (inputs, targets), got {type(pair).__name__}")
    xs, ys = _tensor(pair[0], f"{where} inputs"), _tensor(pair[1], f"{where} targets")
    if xs.dim() != 3:
        layout = "(N, T, n_in)" if batch_first else "(T, N, n_in) (time-major)"
        raise ShapeError(f"{where} inputs: expected shape {layout}, got {tuple(xs.shape)}")
    if not (xs.is_floating_point() or xs.dtype == torch.bool):
        raise DTypeError(
            f"{where} inputs: expected floating-point values (or bool spikes), got {xs.dtype}; "
            "convert with .float() (one-hot encode tokens)"
        )
    kind = _kind(kind, ys, where)
    per_step = _per_step(kind, ys, where)
    if batch_first:
        xs = xs.transpose(0, 1)
        ys = ys.transpose(0, 1) if per_step else ys
    T, N = xs.shape[:2]
    want = (T, N) if per_step else (N,)
    if tuple(ys.shape[: len(want)]) != want or 0 in xs.shape:
        raise ShapeError(
            f"{where}: inputs of {N} sequences of {T} steps (time-major shape {tuple(xs.shape)})"
            f" need targets of leading shape {want}, got {tuple(ys.shape)}"
        )
    xs = check_finite(xs.to(dtype).contiguous(), f"{where} inputs")
    ys = ys.long() if kind == "classification" else check_finite(ys.to(dtype), f"{where} targets")
    return xs, ys, kind, per_step


def _defaults(defaults: Defaults | Mapping[str, Any] | None) -> Defaults:
    if defaults is None or isinstance(defaults, Defaults):
        return defaults or DEFAULTS
    known = {f.name for f in dataclasses.fields(Defaults)}
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise OptionError(f"defaults: unknown field(s) {unknown}; expected some of {sorted(known)}")
    return dataclasses.replace(DEFAULTS, **dict(defaults))


def _n_classes(n_classes: int | None, labels: Iterable[Tensor]) -> int:
    labels = list(labels)
    low = min(int(y.min()) for y in labels)
    high = max(int(y.max()) for y in labels)
    if n_classes is None:
        n_classes = high + 1
    elif not isinstance(n_classes, int) or n_classes < 1:
        raise OptionError(f"n_classes must be a positive int, got {n_classes!r}")
    if low < 0 or high >= n_classes:
        raise TargetError(
            f"class labels must be in 0..{n_classes - 1} (n_classes={n_classes}), got labels "
            f"from {low} to {high}"
        )
    if n_classes < 2:
        raise TargetError("classification needs at least 2 classes; the labels hold only 0")
    return n_classes


def _valid_split(
    xs: Tensor, ys: Tensor, per_step: bool, fraction: float, seed: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """(train, valid): a seeded random ``fraction`` of the sequences (at least one) held out."""
    if not isinstance(fraction, float | int) or not 0 < fraction < 1:
        raise OptionError(f"valid_fraction must be in (0, 1), got {fraction!r}")
    n = xs.shape[1]
    n_valid = max(1, round(fraction * n))
    if n - n_valid < 1:
        raise ShapeError(
            f"train: {n} sequence(s) are too few to hold out a validation set; give valid=..."
        )
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    out = []
    for idx in (perm[n_valid:], perm[:n_valid]):
        out.append((xs[:, idx], ys[:, idx] if per_step else ys[idx]))
    return out[0], out[1]


# -- public constructors -----------------------------------------------------------------
def from_tensors(
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    valid: tuple[Any, Any] | None = None,
    *,
    kind: str | None = None,
    batch_first: bool = False,
    targets_at: str = "every",
    n_classes: int | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    spiking_input: bool | None = None,
    defaults: Defaults | Mapping[str, Any] | None = None,
) -> TensorTask:
    """A task from ``(inputs, targets)`` pairs of tensors (or numpy arrays); see the module.

    Args:
        train: the training sequences, ``(xs, ys)``.
        test: the test sequences.
        valid: the validation sequences (None: a seeded split of ``train``).
        kind: ``"classification"`` or ``"regression"`` (None: from the targets' dtype).
        batch_first: the tensors are ``(N, T, ...)`` instead of time-major ``(T, N, ...)``.
        targets_at: for one target per sequence: at ``"every"`` step or the ``"last"`` one.
        n_classes: classification: the number of classes (None: the largest label + 1).
        valid_fraction: with ``valid=None``: the fraction of ``train`` held out.
        seed: with ``valid=None``: the seed of that split.
        dtype: the floating dtype the inputs (and regression targets) are stored in.
        spiking_input: the inputs are spikes (None: when they hold only 0s and 1s).
        defaults: the default network and budget, or a dict of the fields to change.

    Raises:
        ShapeError, DTypeError, TargetError, OptionError: data or options that do not fit,
            with what was expected.
    """
    if targets_at not in ("every", "last"):
        raise OptionError(f"targets_at must be 'every' or 'last', got {targets_at!r}")
    pairs = {"train": train, "test": test, **({"valid": valid} if valid is not None else {})}
    data: dict[str, tuple[Tensor, Tensor]] = {}
    layout: tuple[str, bool] | None = None
    for where, pair in pairs.items():
        xs, ys, found, per_step = _split(pair, where, kind, batch_first, dtype)
        if layout is not None and (found, per_step) != layout:
            raise ShapeError(
                f"{where} targets: {found}, {'per step' if per_step else 'per sequence'}; "
                f"train's: {layout[0]}, {'per step' if layout[1] else 'per sequence'}; every "
                "split needs the same kind and layout"
            )
        layout = (found, per_step)
        data[where] = (xs, ys)
    assert layout is not None
    kind, per_step = layout
    if per_step and targets_at != "every":
        raise OptionError("targets_at applies to one target per sequence; these are per step")
    _check_sizes(data)
    if valid is None:
        data["train"], data["valid"] = _valid_split(*data["train"], per_step, valid_fraction, seed)
    if kind == "classification":
        n_out = _n_classes(n_classes, (ys for _, ys in data.values()))
    else:
        n_out = int(data["train"][1].shape[-1])
    if spiking_input is None:
        spiking_input = bool(((data["train"][0] == 0) | (data["train"][0] == 1)).all())
    return TensorTask(data, kind=kind, n_out=n_out, per_step=per_step, targets_at=targets_at,
                      spiking_input=spiking_input, defaults=_defaults(defaults))  # fmt: skip


def _check_sizes(data: Mapping[str, tuple[Tensor, Tensor]]) -> None:
    """Every split has train's n_in (and, for regression, train's K)."""
    xs0, ys0 = data["train"]
    for where, (xs, ys) in data.items():
        if xs.shape[-1] != xs0.shape[-1]:
            raise ShapeError(
                f"{where} inputs have {xs.shape[-1]} features per step, train's {xs0.shape[-1]}"
            )
        if ys.is_floating_point() and ys.shape[-1] != ys0.shape[-1]:
            raise ShapeError(
                f"{where} targets have {ys.shape[-1]} values per step, train's {ys0.shape[-1]}"
            )
