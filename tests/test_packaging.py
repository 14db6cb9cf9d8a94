"""The package as users get it: one version, forwarded names, no side effects at import, and a
clean install into a fresh environment (slow)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import ostl
from ostl.run.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_string(capsys: pytest.CaptureFixture[str]) -> None:
    assert importlib.metadata.version("ostl") == ostl.__version__
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"ostl {ostl.__version__}\n"


def test_the_package_forwards_the_run_helpers() -> None:
    from ostl.run.checkpoint import load_checkpoint
    from ostl.run.model import export_step, load

    assert (ostl.load, ostl.export_step, ostl.load_checkpoint) == (
        load,
        export_step,
        load_checkpoint,
    )
    assert all(getattr(ostl, name) is not None for name in ostl.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ostl.nope  # noqa: B018


def test_importing_ostl_leaves_the_matplotlib_backend_alone() -> None:
    code = (
        "import matplotlib; matplotlib.use('svg')\n"
        "import ostl, ostl.run.cli, ostl.run.train, ostl.run.plots, ostl.run.compare\n"
        "import benchmarks.plot\n"
        "print(matplotlib.get_backend())"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "svg"


def test_the_shipped_files_are_package_data() -> None:
    """What the package reads at run time is declared as package data (else a wheel lacks it)."""
    text = (ROOT / "pyproject.toml").read_text()
    for name in ("py.typed", "kernels/*.c", "tasks/digits.npz", "tasks/digits-LICENSE.txt"):
        assert f'"{name}"' in text
    src = ROOT / "src" / "ostl"
    assert (src / "py.typed").is_file() and (src / "tasks" / "digits.npz").is_file()


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv(tmp_path: Path) -> None:
    """``pip install .`` (a wheel, not editable) into a new environment: ostl imports, trains
    one quick step on the shipped data, and ``pip check`` is clean. The torch version comes
    from constraints.txt (this machine's CPU wheel; the package itself asks torch>=2.5)."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt")]
    done = subprocess.run([*pip, str(ROOT)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    code = (
        "import ostl, torch\n"
        "from ostl.tasks import get_task\n"
        "t = get_task('digits', steps=2, train_size=8, test_size=8)\n"
        "b = next(t.train_batches(4, torch.Generator().manual_seed(0)))\n"
        "print(ostl.__version__, tuple(b.xs.shape))"
    )
    done = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [ostl.__version__, "(2,", "4,", "64)"]
    cli = subprocess.run(
        [str(env_dir / "bin" / "ostl"), "--version"], capture_output=True, text=True
    )
    assert cli.stdout == f"ostl {ostl.__version__}\n"
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
