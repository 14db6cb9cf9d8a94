"""``ostl export-nir``: a trained run as a NIR file; one-line errors; ostl without ``nir``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ostl
from ostl import Layer, Network, Readout
from ostl.interop.nir import DEFAULT_DT, from_nir, to_nir
from ostl.run.cli import main
from ostl.run.model import network_of, save_model
from ostl.run.train import train
from ostl.tasks import MissingDependencyError

from ..run.tiny import tiny


@pytest.fixture(scope="module")
def lif_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of a recurrent LIF network trained for one short epoch."""
    out = tmp_path_factory.mktemp("nir") / "run"
    train(tiny(cell="lif", recurrent=True, epochs=1, train_size=16), out, progress=False)
    return out


def _assert_equal_networks(a: Network, b: Network) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    xs = (torch.rand(30, 3, a.n_in) < 0.3).to(a.dtype)  # spike input, as the task's
    assert torch.equal(a(xs), b(xs))


def test_export_nir_writes_the_trained_network(
    lif_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nir = pytest.importorskip("nir", reason="NIR export needs the nir package")
    out = tmp_path / "model.nir"
    assert main(["export-nir", str(lif_run), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "LIF 8 (recurrent) → readout 10" in printed
    graph = nir.read(out)
    assert float(graph.metadata["dt"]) == DEFAULT_DT
    assert isinstance(graph.nodes["layer0.neurons"], nir.LIF)
    trained, _ = ostl.load(lif_run)
    _assert_equal_networks(from_nir(graph), trained)
    # the latest weights, at another time step: the same network, another τ
    assert main(["export-nir", str(lif_run), str(out), "--which", "last", "--dt", "1e-3"]) == 0
    graph = nir.read(out)
    assert float(graph.metadata["dt"]) == 1e-3
    last, _ = ostl.load(lif_run, "last")
    tau = 1e-3 / (1 - last.layers[0].cell.decay.double().numpy())
    np.testing.assert_allclose(graph.nodes["layer0.neurons"].tau, tau, rtol=1e-6)
    _assert_equal_networks(from_nir(graph), last)
    assert [p.name for p in tmp_path.iterdir()] == ["model.nir"]  # no temporary file left


def test_export_nir_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["export-nir", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: best)" in text and f"(default: {DEFAULT_DT})" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "ostl export-nir runs/x model.nir" in capsys.readouterr().out


def test_export_nir_errors_are_one_line(
    lif_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("nir", reason="NIR export needs the nir package")
    snu = tmp_path / "snu.safetensors"  # a real model file of a network NIR cannot express
    save_model(snu, network_of(tiny()), tiny())
    cases = [
        ([str(tmp_path / "none"), "x.nir"], "no such model file"),
        ([str(tmp_path), "x.nir"], "no model.safetensors in this run folder"),
        ([str(snu), str(tmp_path / "x.nir")], "network of SNU cells, which has no NIR form"),
        ([str(lif_run), str(tmp_path / "no" / "x.nir")], "no such folder to write x.nir"),
        ([str(lif_run), str(tmp_path)], "is a folder: name the NIR file"),
    ]
    for argv, message in cases:
        assert main(["export-nir", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snu.safetensors"]


def test_without_nir_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "nir", None)  # `import nir` raises ImportError
    net = Network([Layer(3, 4, "lif"), Readout(4, 2)])
    for call in (lambda: to_nir(net), lambda: from_nir(tmp_path / "x.nir")):
        with pytest.raises(MissingDependencyError, match=r"pip install 'ostl\[nir\]'") as e:
            call()
        assert isinstance(e.value, ImportError) and "\n" not in str(e.value)
    assert main(["export-nir", str(tmp_path), str(tmp_path / "x.nir")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'ostl[nir]'" in err and err.count("\n") == 1


def test_ostl_imports_nir_only_when_asked() -> None:
    code = (
        "import sys, ostl\n"
        "assert ostl.to_nir is ostl.interop.nir.to_nir and 'from_nir' in ostl.__all__\n"
        "assert 'nir' not in sys.modules, 'import ostl imported nir'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
