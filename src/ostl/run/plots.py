"""Figures of a run folder: PNG files, drawn on :class:`matplotlib.figure.Figure` objects.

No pyplot and no backend: importing ostl never changes the user's matplotlib backend, and no
display is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

__all__ = ["learning_curves", "spike_raster", "compare_curves"]


def _axes_curves(
    ax_loss: Any, ax_metric: Any, history: Sequence[Mapping[str, float]], label: str, metric: str
) -> None:
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label=label)
    ax_metric.plot(epochs, [h["valid_metric"] for h in history], marker="o", label=label)
    for ax in (ax_loss, ax_metric):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (mean per step)")
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylabel(f"validation {metric}")


def learning_curves(
    history: Sequence[Mapping[str, float]], metric: str, title: str, path: Path
) -> Path:
    """Training loss and validation metric per epoch of one run."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    a, b = fig.subplots(1, 2)
    _axes_curves(a, b, history, "train", metric)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


def compare_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]], metric: str, title: str, path: Path
) -> Path:
    """Every rule's learning curves in one figure."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    a, b = fig.subplots(1, 2)
    for rule, history in histories.items():
        _axes_curves(a, b, history, rule, metric)
    a.legend()
    b.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


def spike_raster(
    inputs: Tensor, layers: Sequence[Tensor], names: Sequence[str], title: str, path: Path
) -> Path:
    """Raster of one sample: input spikes and each spiking layer's spikes over time.

    Args:
        inputs: (T, N_in) input of one sample.
        layers: per layer, (T, N) outputs of one sample (spikes are the nonzero entries).
        names: a label per layer.
        title: figure title.
        path: where to write the PNG.
    """
    panels = [("input", inputs), *zip(names, layers)]
    fig = Figure(figsize=(8, 2 + 1.5 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, x) in zip(axes, panels):
        t, n = (x.detach().cpu() != 0).nonzero(as_tuple=True)
        ax.scatter(t.numpy(), n.numpy(), s=2, marker="|", color="k")
        ax.set_ylabel(f"{label}\nneuron")
        ax.set_ylim(-0.5, x.shape[1] - 0.5)
    axes[-1].set_xlabel("time step")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path
