"""Checkpoint files: atomic writes, keep the last N, safe and clear loads, kill -9 mid-write."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ostl import checkpoint
from ostl.errors import CheckpointError, NonFiniteError, OSTLError
from ostl.run.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def test_round_trip_and_keep_the_last_n(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20):
        save_checkpoint(tmp_path, {"w": torch.full((3,), float(step)), "step": step}, step=step,
                        keep=2)  # fmt: skip
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-000000000015.pt",
        "step-000000000020.pt",
    ]
    payload = load_checkpoint(tmp_path)  # the folder: the newest
    assert payload["step"] == 20 and torch.equal(payload["w"], torch.full((3,), 20.0))
    assert load_checkpoint(list_checkpoints(tmp_path)[0])["step"] == 15
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_bad_files_raise_checkpoint_error_naming_the_path(tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "c", {"w": torch.ones(1000)}, step=1)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.ones(2)}, foreign)  # a torch file, but not ours
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:  # a pickle that would run code if loaded unsafely
        pickle.dump(_Evil(), f)
    for path, message in [
        (truncated, "corrupt, truncated or foreign"),
        (garbage, "corrupt, truncated or foreign"),
        (foreign, "not an ostl checkpoint"),
        (evil, "corrupt, truncated or foreign"),
        (tmp_path / "missing.pt", "no such checkpoint"),
        (tmp_path / "empty-dir", "no checkpoint"),
    ]:
        if path.name == "empty-dir":
            path.mkdir()
        with pytest.raises(CheckpointError, match=message) as e:
            load_checkpoint(path)
        assert str(path) in str(e.value) and isinstance(e.value, OSTLError)
    assert not (tmp_path / "pwned").exists()


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned",))


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"n": 1}, step=1)
    newest = save_checkpoint(tmp_path, {"n": 2}, step=2)
    newest.write_bytes(newest.read_bytes()[:50])
    with pytest.warns(UserWarning, match="unreadable"):
        assert load_checkpoint(tmp_path)["n"] == 1


def test_a_poisoned_payload_is_refused_and_the_previous_kept(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"w": torch.ones(2)}, step=1)
    with pytest.raises(NonFiniteError, match="poisoned checkpoint.*learner.w"):
        save_checkpoint(tmp_path, {"learner": {"w": torch.tensor([1.0, float("nan")])}}, step=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000000001.pt"]
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path, {}, step=3, keep=0)


def test_rng_states_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    save_checkpoint(tmp_path, {"rng": rng_state()}, step=0)
    a = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(load_checkpoint(tmp_path)["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_kill_9_during_a_write_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    """A subprocess pauses halfway through writing its second checkpoint and is killed -9."""
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import time, torch
        from pathlib import Path
        from ostl import checkpoint
        d = Path({str(tmp_path / "ckpt")!r})
        checkpoint.save_checkpoint(d, {{"w": torch.arange(100000.0), "n": 1}}, step=1)
        def pause(tmp):
            Path({str(ready)!r}).write_text(str(tmp))
            time.sleep(600)
        checkpoint.MID_WRITE_HOOK = pause
        checkpoint.save_checkpoint(d, {{"w": torch.zeros(100000), "n": 2}}, step=2)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, "the writer died before pausing"
            assert time.monotonic() < deadline, "the writer never reached the hook"
            time.sleep(0.05)
        tmp = Path(ready.read_text())
        assert tmp.exists() and tmp.stat().st_size > 0  # half written
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    payload = load_checkpoint(tmp_path / "ckpt")
    assert payload["n"] == 1 and torch.equal(payload["w"], torch.arange(100000.0))
    # the next save cleans up the dead writer's temporary file
    save_checkpoint(tmp_path / "ckpt", {"n": 3}, step=3)
    assert not tmp.exists() and load_checkpoint(tmp_path / "ckpt")["n"] == 3
    assert checkpoint.MID_WRITE_HOOK is None
