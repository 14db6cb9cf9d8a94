"""The fault-injection suite (scripts/faults.py, scripts/fault_suite): its machinery, fast, and
one quick run of the classes whose promises hold (slow).

The hook is checked in this process (it counts the writer's calls and acts at the chosen one)
and in a subprocess (installed as sitecustomize.py, it kills the writer at that exact call).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from ostl.errors import CheckpointError
from ostl.run import checkpoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import faults  # noqa: E402
from fault_suite import report  # noqa: E402
from fault_suite.checks import same  # noqa: E402
from fault_suite.core import TINY, FaultClass, Reference, Suite, Try  # noqa: E402
from fault_suite.hook import Injector, install  # noqa: E402
from fault_suite.hostile import code_pickle, code_torch, flip_bit  # noqa: E402
from fault_suite.procs import Done, environment, hook_folder  # noqa: E402
from fault_suite.unwritable import unwritable_try  # noqa: E402


# -- the hook ------------------------------------------------------------------------------
def test_the_injector_acts_at_the_nth_call_of_its_stage_only() -> None:
    inj = Injector("write", nth=3, action="enospc", file=2)
    for _ in range(5):
        inj.call("write", "a", file=1)  # another file: not counted
        inj.call("replace", "a")  # another stage: not counted
    inj.call("write", "b", file=2)
    inj.call("write", "b", file=2)
    assert not inj.fired and inj.counts["write"] == 2
    with pytest.raises(OSError) as e:
        inj.call("write", "b", file=2)
    assert e.value.errno == errno.ENOSPC and inj.fired
    with pytest.raises(OSError):  # a full disk stays full
        inj.call("write", "b", file=2)
    with pytest.raises(ValueError):
        Injector("nowhere", nth=1, action="kill")


def test_the_hook_fails_the_chosen_write_of_the_real_checkpoint_writer(tmp_path: Path) -> None:
    undo = install(checkpoint, Injector("write", nth=1, action="enospc", file=2))
    try:
        checkpoint.save_checkpoint(tmp_path, {"w": torch.ones(3)}, step=1)
        with pytest.raises(OSError, match="No space left"):
            checkpoint.save_checkpoint(tmp_path, {"w": torch.zeros(3)}, step=2)
    finally:
        undo()
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-000000000001.pt"]
    checkpoint.save_checkpoint(tmp_path, {"w": torch.zeros(3)}, step=3)  # undone
    assert not hasattr(checkpoint, "open") and checkpoint.os is os


def test_the_hook_kills_the_process_at_the_chosen_stage_as_sitecustomize(tmp_path: Path) -> None:
    """A subprocess with the hook on PYTHONPATH dies by SIGKILL at the rename of its second
    checkpoint: the first is whole, the second never appears."""
    fault = {"stage": "replace", "nth": 2, "action": "kill"}
    env = environment(fault, hook_folder(tmp_path))
    script = (
        "import torch; from ostl.run.checkpoint import save_checkpoint as s\n"
        f"for n in (1, 2, 3): s({str(tmp_path / 'ck')!r}, {{'w': torch.ones(2)}}, step=n)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    done, *rest = checkpoint.list_checkpoints(tmp_path / "ck")
    assert done.name == "step-000000000001.pt" and rest == []
    assert list((tmp_path / "ck").glob(".step-000000000002.pt.tmp-*"))  # written, not renamed
    assert checkpoint.load_checkpoint(tmp_path / "ck")["w"].tolist() == [1.0, 1.0]


def test_the_probe_marks_the_first_training_step_of_a_real_run(tmp_path: Path) -> None:
    """What class 4 relies on to tell "refused before training": a run that trains creates the
    probe's file (and the hook changes nothing else)."""
    trained = tmp_path / "trained"
    env = environment(None, hook_folder(tmp_path), probe=trained)
    argv = ["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "run")]
    proc = subprocess.run([sys.executable, "-m", "ostl", *argv], env=env, timeout=300)
    assert proc.returncode == 0 and trained.is_file()


# -- checks and spoiled files --------------------------------------------------------------
def test_same_is_bit_identity() -> None:
    a = {"w": torch.ones(2), "n": [1, (2.0, "x")]}
    assert same(a, {"w": torch.ones(2), "n": [1, (2.0, "x")]})
    assert not same(a, {"w": torch.ones(2, dtype=torch.float64), "n": [1, (2.0, "x")]})
    assert not same(a, {"w": torch.tensor([1.0, 1.0 + 2**-23]), "n": [1, (2.0, "x")]})
    assert not same(a, {"w": torch.ones(2)})


def test_a_flipped_bit_lands_in_a_tensor_record_of_a_checkpoint(tmp_path: Path) -> None:
    import random

    path = checkpoint.save_checkpoint(tmp_path, {"w": torch.zeros(1000)}, step=1)
    before = path.read_bytes()
    flip_bit(path, random.Random(0), tmp_path / "marker")
    after = path.read_bytes()
    diff = [i for i in range(len(before)) if before[i] != after[i]]
    assert len(diff) == 1 and bin(before[diff[0]] ^ after[diff[0]]).count("1") == 1
    with zipfile.ZipFile(path) as z:  # the zip itself is untouched: only the data changed
        assert any(i.filename.endswith("/data/0") for i in z.infolist())
    # torch.load alone returns the changed weight; ostl's loader checks the zip's CRCs
    assert not same(torch.load(path, weights_only=True)["payload"]["w"], torch.zeros(1000))
    with pytest.raises(CheckpointError, match="damaged"):
        checkpoint.load_checkpoint(path)


def test_the_code_carrying_files_do_run_code_when_loaded_unsafely(tmp_path: Path) -> None:
    """Else "no code ran" would prove nothing: plain pickle and torch.load without
    weights_only run their code and create the marker."""
    import pickle
    import random

    for name, spoil, load in [
        ("pickle", code_pickle, pickle.loads),
        ("torch", code_torch, _unsafe_torch_load),
    ]:
        marker = tmp_path / f"ran-{name}"
        bad = spoil(tmp_path / f"{marker.name}.bin", random.Random(0), marker)
        assert not marker.exists()
        load(bad.read_bytes())
        assert marker.exists()


def _unsafe_torch_load(data: bytes) -> object:
    import io

    return torch.load(io.BytesIO(data), weights_only=False)


def test_a_one_line_error_is_told_from_a_traceback() -> None:
    ok = Done(2, "", "ostl train: error: cannot write the run folder x\n", 1.0)
    assert ok.error_line("train") is None
    tb = Done(1, "", "Traceback (most recent call last):\n  ...\nOSError: x\n", 1.0)
    assert tb.traceback and "traceback" in str(tb.error_line("train"))
    two = Done(1, "", "warning: x\nostl train: error: y\n", 1.0)
    assert two.error_line("train") and two.error_line("train", strict=False) is None


# -- the report ----------------------------------------------------------------------------
def _classes() -> list[FaultClass]:
    good = FaultClass(4, "unwritable", "unwritable --out", "Refused.", "exit 2", [Try("a")])
    bad = FaultClass(
        1, "kill", "kill -9", "Resumes.", "weights", unit="kills",
        tries=[Try("chain 1", count=3), Try("chain 2", ["weights differ"], ["blocked folder"],
                                            count=2)],
    )  # fmt: skip
    return [bad, good]


def test_the_table_counts_tries_failures_and_data_lost() -> None:
    lines = report.table(_classes()).splitlines()
    assert lines[0] == (
        "| fault class | tries | failures (a promise broken) | data lost | what was checked |"
    )
    assert (
        lines[2] == "| 1. kill -9 | 5 kills in 2 chains | 1 of 2 | 1 (1 blocked folder) | weights |"
    )
    assert lines[3] == "| 4. unwritable --out | 1 | 0 of 1 | 0 | exit 2 |"
    assert report.failures(_classes()) == ["1. chain 2: weights differ"]


def test_the_report_states_the_promises_and_keeps_marked_sections(tmp_path: Path) -> None:
    out = tmp_path / "reliability.md"
    out.write_text("obsolete\n<!-- section:extra -->\nkept\n<!-- /section:extra -->\n")
    report.write(out, report.markdown(_classes(), "python scripts/faults.py --quick", 90.0))
    text = out.read_text()
    assert "1. **kill -9.** Resumes. (**broken in 1 of 2 chains, 5 kills**)" in text
    assert "4. **unwritable --out.** Refused. (held in 1 of 1 try)" in text
    assert "- 1. chain 2: weights differ" in text and "Machine: " in text and "kept" in text
    assert "`python scripts/faults.py --quick`, 1.5 min" in text and "obsolete" not in text


def test_classes_are_chosen_by_name_or_number() -> None:
    assert [fc.key for fc, _ in faults.select("4,nonfinite")] == ["unwritable", "nonfinite"]
    assert len(faults.select(None)) == 8
    with pytest.raises(SystemExit, match="unknown"):
        faults.select("kill,bogus")


# -- one class end to end ------------------------------------------------------------------
def test_an_unwritable_out_is_refused_in_one_line(tmp_path: Path) -> None:
    suite = Suite("quick", seed=0, jobs=1)
    try:
        suite.use_reference(Reference(tmp_path, [5], ready=20.0, seconds=30.0))
        t = unwritable_try(suite, "under a file", "under a regular file", "train")
    finally:
        suite.cleanup()
    assert t.failures == [] and t.lost == [], t.failures
    assert "refused after" in t.notes[0] and "Not a directory" in t.notes[0]


@pytest.mark.slow
def test_the_quick_suite_passes_for_the_promises_that_hold(tmp_path: Path) -> None:
    """Every class but the --nproc kills and the hostile files (a bit flipped in a tensor is
    not detected: the files carry no checksum)."""
    out = tmp_path / "reliability.md"
    only = "kill,write-kill,disk-full,unwritable,concurrent,nonfinite"
    assert faults.main(["--quick", "--only", only, "--out", str(out)]) == 0
    text = out.read_text()
    assert "None: every promise held." in text and text.count("held in") == 6
