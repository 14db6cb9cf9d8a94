"""Trained models: saved with safetensors, rebuilt from the run's configuration, exported.

A run folder holds two models (written by the run through :class:`~.outputs.RunFolder`):

- ``model.safetensors`` (``which="best"``): the weights that model selection keeps, those of
  the epoch with the best validation metric (what ``RunResult.test_metric`` measures); written
  when an epoch beats the best so far, and at the end of the run;
- ``model-last.safetensors`` (``which="last"``): the latest weights: after every epoch, at the
  end (``RunResult.final_test_metric``), and the current weights when the run is stopped
  (``stop_after_steps``) or interrupted (SIGINT/SIGTERM).

Each file is the network's ``state_dict`` in the safetensors format, written atomically:
loading one reads tensors and never runs code (no pickle). Its metadata holds a format tag, a
version, the run's resolved configuration (JSON), the epoch and training step of the weights,
and a SHA-256 of the weights and metadata, checked on load (a flipped bit is refused).

The network is rebuilt from the configuration (``config.json`` of the run folder, or the
file's own metadata), :func:`network_of`::

    get_task(cfg.task, **cfg.task_options).network(cfg.hidden, cfg.cell, cfg.recurrent,
                                                   seed=cfg.seed)

and the weights are loaded into it strictly (every name and shape must match): :func:`load`.
A task of your own code (``"module:attribute"`` in the configuration) is rebuilt by importing
that module, which runs its code: load only runs you trust. A task built from data in memory
(:func:`ostl.tasks.from_tensors`) cannot be rebuilt from its name: pass it (``task=``).
:func:`evaluate_model` recomputes a split's metric from a saved model (``ostl evaluate
RUN_DIR``); :func:`export_step` exports one time step of a network with ``torch.export``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from ..errors import CheckpointError, OptionError
from ..layer import Network
from ..tasks import Task, get_task
from .checkpoint import write_atomic
from .config import TrainConfig
from .evaluate import evaluate

__all__ = [
    "MODEL",
    "MODEL_LAST",
    "MODELS",
    "Evaluation",
    "save_model",
    "read_model",
    "read_config",
    "run_config",
    "network_of",
    "load",
    "evaluate_model",
    "StepModule",
    "flatten_state",
    "export_step",
]

MODEL = "model.safetensors"
MODEL_LAST = "model-last.safetensors"
#: The models of a run folder by ``which``.
MODELS = {"best": MODEL, "last": MODEL_LAST}
FORMAT, VERSION = "ostl-model", "1"


def save_model(
    path: str | Path,
    net: nn.Module,
    cfg: TrainConfig | None = None,
    *,
    epoch: int | None = None,
    step: int | None = None,
) -> Path:
    """Write ``net``'s weights to ``path`` (safetensors, atomically) with their metadata.

    Args:
        path: the file to write (its folder must exist).
        net: the network.
        cfg: the run's resolved configuration, stored in the metadata (:func:`load` can then
            rebuild the network from the file alone).
        epoch: the epoch of the weights (stored in the metadata).
        step: the training step of the weights (stored in the metadata).
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION}
    if cfg is not None:
        meta["config"] = json.dumps(cfg.to_json())
    for key, value in (("epoch", epoch), ("step", step)):
        if value is not None:
            meta[key] = str(value)
    meta["sha256"] = _digest(safetensors_bytes(tensors, metadata=meta), meta)
    return write_atomic(path, safetensors_bytes(tensors, metadata=meta))


def _digest(blob: bytes, meta: dict[str, str]) -> str:
    """SHA-256 of a safetensors file's data section (the bytes after its 8-byte length and
    JSON header: the same whatever the metadata) and of its metadata but the digest itself.
    safetensors files carry no checksum: this one finds a flipped bit."""
    n = int.from_bytes(blob[:8], "little")
    h = hashlib.sha256(memoryview(blob)[8 + n :])
    h.update(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    return h.hexdigest()


def read_model(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The weights (on the CPU) and the metadata of a model file; safe (no code runs).

    Raises:
        CheckpointError: no such file, or a file that is corrupt, truncated or not ours.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such model file")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # truncated header, foreign bytes, I/O error
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{p}: not a readable model file (corrupt, truncated or not safetensors): {first}"
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an ostl model (no {FORMAT!r} format tag)")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{p}: model format version {meta.get('version')!r}; this ostl reads {VERSION}"
        )
    if meta.get("sha256") != _digest(p.read_bytes(), meta):
        raise CheckpointError(
            f"{p}: damaged: its weights or metadata do not match the checksum saved with them"
        )
    return tensors, meta


def read_config(run_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` of a run folder (its ``config.json``)."""
    path = Path(run_dir) / "config.json"
    try:
        return TrainConfig.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot read the run's config: {e}") from None


def network_of(cfg: TrainConfig, task: Task | None = None) -> Network:
    """The network of a run's configuration, as the run built it (initial weights of its seed).

    ``task``: the task of ``cfg``, already built (default: built from ``cfg``).
    """
    task = task or get_task(cfg.task, **cfg.task_options)
    return task.network(cfg.hidden, cfg.cell, cfg.recurrent, seed=cfg.seed)


def _config_of(path: Path, meta: dict[str, str]) -> TrainConfig:
    if "config" not in meta:
        raise CheckpointError(f"{path}: the model holds no config: load its run folder instead")
    try:
        return TrainConfig.from_json(json.loads(meta["config"]))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: the model's config cannot be read: {e}") from None


def run_config(run: str | Path) -> TrainConfig:
    """The configuration of a run folder (its config.json) or of a model file (its metadata)."""
    p = Path(run)
    if p.is_dir():
        return read_config(p)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such run folder or model file")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
    except Exception:
        meta = {}
    return _config_of(p, meta)


def _open(
    run: str | Path, which: str
) -> tuple[Path, dict[str, Tensor], dict[str, str], TrainConfig]:
    """The model file of ``run`` (a run folder or a model file), its weights, metadata, config."""
    p = Path(run)
    if which not in MODELS:
        raise OptionError(f"which must be one of {', '.join(MODELS)}, got {which!r}")
    if not p.is_dir():
        tensors, meta = read_model(p)
        return p, tensors, meta, _config_of(p, meta)
    path = p / MODELS[which]
    if not path.is_file():
        hint = ""
        if which == "best" and (p / MODEL_LAST).is_file():
            hint = " (the run stopped before its first epoch ended): load which='last'"
        raise CheckpointError(f"{p}: no {MODELS[which]} in this run folder{hint}")
    tensors, meta = read_model(path)
    return path, tensors, meta, read_config(p)


def _build(
    path: Path, tensors: dict[str, Tensor], cfg: TrainConfig, task: Task | None, device: Any
) -> Network:
    net = network_of(cfg, task)
    try:
        net.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: the weights do not fit the network of the run's config: {first}"
        ) from None
    return net.to(device)


def load(
    run: str | Path,
    which: str = "best",
    *,
    device: str | torch.device = "cpu",
    task: Task | None = None,
) -> tuple[Network, TrainConfig]:
    """The trained network of a run, and the run's configuration.

    Args:
        run: a run folder (``config.json`` and the models), or a model file (its metadata
            holds the configuration).
        which: in a run folder, ``"best"`` (``model.safetensors``: the best validation
            epoch's weights) or ``"last"`` (``model-last.safetensors``: the latest weights).
        device: where to put the network.
        task: the run's task, already built (default: rebuilt from the configuration; needed
            for a task made from data in memory, :func:`ostl.tasks.from_tensors`).

    Raises:
        CheckpointError: no such model, an unreadable file, or weights that do not fit.
    """
    path, tensors, _, cfg = _open(run, which)
    return _build(path, tensors, cfg, task, device), cfg


@dataclass
class Evaluation:
    """A metric recomputed from a saved model (:func:`evaluate_model`)."""

    metric: str  # the task's metric, e.g. "accuracy"
    value: float
    split: str
    path: Path  # the model file
    epoch: int | None  # the epoch of the weights (None: not recorded)
    config: TrainConfig


def evaluate_model(
    run: str | Path,
    which: str = "best",
    split: str = "test",
    *,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    threads: int | None = None,
    task: Task | None = None,
) -> Evaluation:
    """The task's metric on ``split`` of a run's saved model (see :func:`load`).

    The evaluation is the run's (:func:`ostl.run.evaluate.evaluate`, with the run's batch size
    unless ``batch_size`` is given): for ``which="best"`` and ``split="test"`` it recomputes
    ``RunResult.test_metric``, for ``which="last"`` its ``final_test_metric``. ``threads``
    sets torch's CPU threads (as the run did with ``cfg.threads``; None: leave them).
    ``task``: the run's task, already built (default: rebuilt from the configuration).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    path, tensors, meta, cfg = _open(run, which)
    task = task or get_task(cfg.task, **cfg.task_options)
    net = _build(path, tensors, cfg, task, device)
    batch = batch_size or cfg.batch_size or task.defaults.batch_size
    value = evaluate(net, task, task.check_split(split), batch)
    epoch = int(meta["epoch"]) if "epoch" in meta else None
    return Evaluation(task.metric().name, value, split, path, epoch, cfg)


def flatten_state(state: Sequence[Sequence[Tensor]]) -> tuple[Tensor, ...]:
    """A network state (one NamedTuple per layer) as a flat tuple of tensors, bottom first."""
    return tuple(t for layer_state in state for t in layer_state)


class StepModule(nn.Module):
    """One time step of ``net`` with a flat state: ``(x_t, *state) -> (y_t, *new_state)``.

    The state tensors are :func:`flatten_state` of ``net.init_state(B)``: every layer's state
    fields in order, bottom layer first (a :class:`~ostl.Readout` has none).
    """

    def __init__(self, net: Network) -> None:
        super().__init__()
        self.net = net
        self.layout = [(type(s), len(s)) for s in net.init_state(1)]

    def unflatten(self, flat: Sequence[Tensor]) -> tuple[Any, ...]:
        """Inverse of :func:`flatten_state`."""
        if len(flat) != sum(n for _, n in self.layout):
            raise OptionError(
                f"expected {sum(n for _, n in self.layout)} state tensors, got {len(flat)}"
            )
        it = iter(flat)
        return tuple(cls(*(next(it) for _ in range(n))) for cls, n in self.layout)

    def forward(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        y, new = self.net.step(x, self.unflatten(state))
        return (y, *flatten_state(new))


def export_step(net: Network, batch_size: int) -> torch.export.ExportedProgram:
    """One time step of ``net`` as a ``torch.export`` program (inference: no training rule).

    The program takes ``(x_t, *state)`` and returns ``(y_t, *new_state)``: ``x_t`` is
    ``(batch_size, net.n_in)``, the state tensors are :func:`flatten_state` of
    ``net.init_state(batch_size)`` (start from those: the resting state) and ``y_t`` is
    ``(batch_size, net.n_out)``. The batch size is fixed. Run a sequence by feeding each step's
    new state to the next::

        prog = export_step(net, 1).module()
        state = flatten_state(net.init_state(1))
        for x_t in xs:  # xs: (T, 1, n_in)
            y_t, *state = prog(x_t, *state)

    The program holds the weights of ``net`` when exported; ``torch.export.save`` writes it.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise OptionError(f"batch_size must be a positive int, got {batch_size!r}")
    step = StepModule(net)
    x = torch.zeros(batch_size, net.n_in, dtype=net.dtype, device=net.device)
    state = flatten_state(net.init_state(batch_size))
    with torch.no_grad():
        return torch.export.export(step, (x, *state))
