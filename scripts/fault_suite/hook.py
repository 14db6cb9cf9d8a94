"""The fault-injection hook: installed as ``sitecustomize.py`` in a training subprocess.

Python imports ``sitecustomize`` at start-up from the first folder of ``sys.path`` that holds
one, so a folder holding a copy of this file, put first on ``PYTHONPATH``, runs it in every
Python process started with that environment (the technique of tests/test_distributed.py). It
does nothing unless the environment variable ``OSTL_FAULT`` holds a JSON spec::

    {"stage": "write", "file": 3, "nth": 1, "action": "kill"}

When ``ostl.run.checkpoint`` is imported, the hook replaces that module's ``open`` and ``os``
(only there: every other module keeps the real ones) and ``pathlib.Path.unlink``, and counts
the calls that touch a checkpoint file. At the ``nth`` call of ``stage`` it acts *before* the
call runs: ``"kill"`` sends SIGKILL to its own process (kill -9 at that line), ``"enospc"``
raises ``OSError(ENOSPC)`` there and at every later matching call (a full disk stays full).

Stages, in the order :func:`ostl.run.checkpoint.save_checkpoint` goes through them:

- ``open``: the temporary file ``.step-<n>.pt.tmp-<pid>`` is opened (``nth``: which file);
- ``write``: a ``write`` into a temporary file (``file``: which file, ``nth``: which write into
  it);
- ``fsync-file``: ``os.fsync`` of a temporary file (``nth``: which file);
- ``replace``: ``os.replace`` of a temporary file onto ``step-<n>.pt``;
- ``fsync-dir``: ``os.fsync`` of the checkpoint folder (after the rename);
- ``unlink``: an old checkpoint ``step-<n>.pt`` is deleted (the ``keep`` rotation).

A second variable, ``OSTL_FAULT_PROBE``, names a file that the hook creates at the first
training step (``ostl.learner.Learner.step``): proof that a command got as far as training.

A stage or count the writer never reaches does nothing: the caller sees a run that ended
normally and reports that the injection never fired. This file uses the standard library
only (it runs before anything else is importable).
"""

from __future__ import annotations

import builtins
import errno
import importlib.abc
import importlib.machinery
import json
import os
import pathlib
import re
import signal
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

ENV = "OSTL_FAULT"
PROBE = "OSTL_FAULT_PROBE"
TARGET = "ostl.run.checkpoint"
STAGES = ("open", "write", "fsync-file", "replace", "fsync-dir", "unlink")
ACTIONS = ("kill", "enospc")
_TMP = re.compile(r"^\.step-\d+\.pt\.tmp-")
_DONE = re.compile(r"^step-\d+\.pt$")


class Injector:
    """Counts the calls of each stage and acts at the chosen one (see the module)."""

    def __init__(self, stage: str, nth: int, action: str, file: int | None = None) -> None:
        if stage not in STAGES or action not in ACTIONS or nth < 1:
            raise ValueError(f"bad fault spec: {stage!r} #{nth} {action!r}")
        self.stage, self.nth, self.action, self.file = stage, nth, action, file
        self.counts = dict.fromkeys(STAGES, 0)
        self.files = 0  # temporary checkpoint files opened so far
        self.fired = False

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Injector:
        return cls(spec["stage"], int(spec.get("nth", 1)), spec["action"], spec.get("file"))

    def call(self, stage: str, what: str, file: int | None = None) -> None:
        """One call of ``stage`` (on ``what``, in temporary file number ``file``)."""
        if stage != self.stage or (self.file is not None and file != self.file):
            return
        self.counts[stage] += 1
        if self.fired and self.action == "enospc":
            self._act(what)  # the disk is still full
        elif self.counts[stage] == self.nth:
            self.fired = True
            self._act(what)

    def _act(self, what: str) -> None:
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), what)


class _File:
    """A file object whose ``write`` goes through the injector first."""

    def __init__(self, real: Any, injector: Injector, index: int) -> None:
        self._real, self._injector, self._index = real, injector, index

    def write(self, data: Any) -> int:
        self._injector.call("write", self._real.name, self._index)
        return int(self._real.write(data))

    def __enter__(self) -> _File:
        return self

    def __exit__(self, *exc: object) -> None:
        self._real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Os:
    """The ``os`` module as ``ostl.run.checkpoint`` sees it: ``replace`` and ``fsync`` hooked."""

    def __init__(self, injector: Injector) -> None:
        self._injector = injector

    def replace(self, src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if _TMP.match(os.path.basename(os.fspath(src))):
            self._injector.call("replace", os.fspath(src))
        os.replace(src, dst, *args, **kwargs)

    def fsync(self, fd: Any) -> None:
        path = _fd_path(fd)
        name = os.path.basename(path)
        if _TMP.match(name):
            self._injector.call("fsync-file", path)
        elif os.path.isdir(path) and name == "checkpoints":
            self._injector.call("fsync-dir", path)
        os.fsync(fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def _fd_path(fd: Any) -> str:
    n = fd if isinstance(fd, int) else fd.fileno()
    try:
        return os.readlink(f"/proc/self/fd/{n}")
    except OSError:
        return ""


def install(module: ModuleType, injector: Injector) -> Callable[[], None]:
    """Hook ``module``'s ``open`` and ``os``, and ``pathlib.Path.unlink`` (see the module).

    Returns a function that undoes it (the tests install the hook in their own process).
    """
    real_open = builtins.open

    def hooked_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        tmp = isinstance(file, str | os.PathLike) and _TMP.match(os.path.basename(file))
        if tmp and "w" in mode:
            injector.files += 1
            injector.call("open", os.fspath(file))
            return _File(real_open(file, mode, *args, **kwargs), injector, injector.files)
        return real_open(file, mode, *args, **kwargs)

    real_unlink = pathlib.Path.unlink

    def hooked_unlink(self: pathlib.Path, missing_ok: bool = False) -> None:
        if _DONE.match(self.name):
            injector.call("unlink", str(self))
        real_unlink(self, missing_ok=missing_ok)

    had_open, real_os = "open" in vars(module), vars(module).get("os", os)
    setattr(module, "open", hooked_open)  # noqa: B010 - a module's global, shadowing builtins
    setattr(module, "os", _Os(injector))  # noqa: B010
    setattr(pathlib.Path, "unlink", hooked_unlink)  # noqa: B010

    def undo() -> None:
        setattr(pathlib.Path, "unlink", real_unlink)  # noqa: B010
        setattr(module, "os", real_os)  # noqa: B010
        if not had_open:
            delattr(module, "open")

    return undo


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``then(module)`` right after the module ``name`` is first executed."""

    def __init__(self, name: str, then: Callable[[ModuleType], object]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader, then = spec.loader, self.then
        exec_module = loader.exec_module

        def exec_and_hook(module: ModuleType) -> None:
            exec_module(module)
            then(module)

        loader.exec_module = exec_and_hook  # type: ignore[method-assign]
        return spec


def probe(path: str) -> Callable[[ModuleType], None]:
    """Wrap ``Learner.step`` of the ``ostl.learner`` module to create ``path`` at its first call."""

    def wrap(module: ModuleType) -> None:
        step = module.Learner.step

        def probed(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not os.path.exists(path):
                open(path, "w").close()
            return step(self, *args, **kwargs)

        module.Learner.step = probed

    return wrap


def activate(environ: dict[str, str] | None = None) -> Injector | None:
    """Read ``OSTL_FAULT`` (and ``OSTL_FAULT_PROBE``) and arrange for the hooks to be installed;
    the injector, None when ``OSTL_FAULT`` is unset."""
    env = os.environ if environ is None else environ
    if env.get(PROBE):
        sys.meta_path.insert(0, _AfterImport("ostl.learner", probe(env[PROBE])))
    raw = env.get(ENV)
    if not raw:
        return None
    injector = Injector.from_spec(json.loads(raw))
    if TARGET in sys.modules:
        install(sys.modules[TARGET], injector)
    else:
        sys.meta_path.insert(0, _AfterImport(TARGET, lambda m: install(m, injector)))
    return injector


if __name__ == "sitecustomize":
    activate()
