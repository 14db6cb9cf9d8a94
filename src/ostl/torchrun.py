"""torchrun as :func:`ostl.distributed.launch` runs it, and processes that die with their parent.

``python -m ostl.torchrun ARGS`` is ``python -m torch.distributed.run ARGS`` (PyTorch's torchrun,
same arguments) with three differences:

- it dies with the process that started it (:func:`die_with_parent`), and its workers die with
  it (:func:`ostl.distributed.init` calls :func:`die_with_parent` in every worker it started):
  a ``kill -9`` of ``ostl train --nproc N`` stops the whole run at once instead of leaving
  orphaned workers training and writing the run folder;
- when a worker fails, torchrun's multi-line failure report (a traceback of torchrun itself) is
  replaced by one line naming the rank that failed first, and only when that rank could not
  report itself (killed by a signal): a rank that raised has printed its own error;
- torchrun's own log lines are off unless ``LOGLEVEL`` is set (``LOGLEVEL=INFO`` shows them);
- when it stops its workers (one failed, or torchrun was told to stop), it gives each
  :data:`SHUTDOWN_GRACE` seconds after SIGTERM before SIGKILL, not 30 s: a worker that cannot
  act on SIGTERM (stopped with SIGSTOP, hung in C code) would otherwise hold the end of the run
  back by half a minute after its peers' ``OSTL_DIST_TIMEOUT`` expired. (torchrun's
  ``--shutdown-timeout`` does not apply to a failed worker's group: the cap is set on
  ``PContext.close``, where torchrun stops its processes; a torch without it keeps its 30 s.)

:func:`die_with_parent` is ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux (the kernel kills the
process when its parent exits, however the parent ends); elsewhere a daemon thread polls the
parent's PID every half second and kills its own process when it changes.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

__all__ = ["die_with_parent", "process_pool", "main", "AGENT_ENV", "LAUNCHER_ENV", "SHUTDOWN_GRACE"]

#: The PID of the ``ostl.torchrun`` process, in its workers' environment.
AGENT_ENV = "OSTL_TORCHRUN_PID"
#: The PID of the process that ran :func:`ostl.distributed.launch`, in torchrun's environment.
LAUNCHER_ENV = "OSTL_LAUNCHER_PID"
#: Seconds a worker gets to exit after torchrun's SIGTERM, before SIGKILL.
SHUTDOWN_GRACE = 2.0
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """Have this process killed (SIGKILL) when its parent process exits.

    ``parent``: the PID the parent should have; if this process's parent is already another
    (the parent died before this call, and the process was re-parented), it exits now.
    """
    if parent is not None and os.getppid() != parent:
        os._exit(1)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                if parent is not None and os.getppid() != parent:  # died meanwhile
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    if not any(t.name == "ostl-parent" for t in threading.enumerate()):
        watched = os.getppid() if parent is None else parent
        threading.Thread(target=_watch, args=(watched,), daemon=True, name="ostl-parent").start()


def process_pool(workers: int, *, spawn: bool = False) -> ProcessPoolExecutor:
    """A process pool whose workers die with this process (:func:`die_with_parent`): a script
    killed mid-run leaves no worker running on. ``spawn``: start workers with the spawn method
    (safe after this process has run torch)."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn") if spawn else None,
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _quiet() -> None:
    """torchrun's log lines off, unless LOGLEVEL sets their level."""
    if "LOGLEVEL" in os.environ:
        return
    os.environ["LOGLEVEL"] = "CRITICAL"  # torchrun's loggers read it when they are created
    for name, log in logging.root.manager.loggerDict.items():  # those created already
        if name.startswith("torch.distributed") and isinstance(log, logging.Logger):
            log.setLevel(logging.CRITICAL)


def _short_shutdown(grace: float) -> None:
    """Cap the seconds torchrun waits for its processes after SIGTERM (see the module)."""
    try:
        from torch.distributed.elastic.multiprocessing.api import PContext
    except ImportError:
        return
    close = getattr(PContext, "close", None)
    if close is None:
        return

    def capped(self: Any, death_sig: Any = None, timeout: float = 30) -> Any:
        return close(self, death_sig, min(timeout, grace))

    PContext.close = capped  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    """Run torchrun with ``argv``; its exit status (1 when a worker failed)."""
    launcher = os.environ.get(LAUNCHER_ENV)
    die_with_parent(int(launcher) if launcher and launcher.isdigit() else None)
    os.environ[AGENT_ENV] = str(os.getpid())  # inherited by the workers
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    _quiet()
    _short_shutdown(SHUTDOWN_GRACE)
    try:
        run(parse_args(argv))
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode < 0:  # killed: it could not say so itself
            print(
                f"ostl: worker rank {rank} (pid {failure.pid}) was killed by "
                f"{failure.signal_name()}",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
