"""Process pools of the scripts (``ostl.torchrun.process_pool``): their workers die with the
script, so a script killed mid-run leaves no worker running on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux prctl")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie is dead


def test_a_killed_script_leaves_no_worker_running(tmp_path: Path) -> None:
    """The script starts a worker on a long task, then is killed (SIGKILL: no clean-up of its
    own); the worker must be gone within seconds."""
    pid_file = tmp_path / "worker.pid"
    script = textwrap.dedent(f"""
        import os, time
        from ostl.torchrun import process_pool

        def work():
            open({str(pid_file)!r}, "w").write(str(os.getpid()))
            time.sleep(60)

        if __name__ == "__main__":
            with process_pool(1) as pool:
                pool.submit(work)
                time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert _alive(worker)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker)
    finally:
        proc.kill()
