"""The fused trace kernel (ostl.kernels): the values of PyTorch's three passes, used where it
applies, strict about its inputs, and a clean fallback without a compiler."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import Tensor

import ostl
from ostl import kernels
from ostl.numerics import flush_denormals
from ostl.rules import get_rule
from ostl.traces import DiagonalTrace

from .helpers import CELL_NAMES, make_net, mse, sequence

pytestmark = pytest.mark.skipif(not kernels.available(), reason="no C compiler: PyTorch path only")


def reference(
    e: Tensor, a: Tensor, coef: Tensor, pre: Tensor, w: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """The same step in PyTorch: scale, add the immediate term gate by gate, contract."""
    N, B, _ = e.shape
    G, m = coef.shape[-1], pre.shape[-1]
    imm = (coef.unsqueeze(-1) * pre.view(1, B, 1, m)).reshape(N, B, G * m)
    new = a.unsqueeze(-1) * e + imm
    g = None if w is None else torch.einsum("nb,nbc->nc", w, new)
    return new, g


def operands(N: int, B: int, G: int, m: int, dtype: torch.dtype) -> list[Tensor]:
    """e (N, B, G·m), a (N, B), coef (N, B, G), pre (B, m), w (N, B)."""
    gen = torch.Generator().manual_seed(N * 1000 + G * 10 + m)
    shapes = [(N, B, G * m), (N, B), (N, B, G), (B, m), (N, B)]
    return [torch.randn(*s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]


@contextmanager
def threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(7, 3, 1, 5), (16, 4, 3, 9), (1, 2, 4, 1), (33, 5, 1, 64)])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("contract", [True, False])
def test_the_kernel_computes_the_pytorch_step(
    dtype: torch.dtype, shape: tuple[int, int, int, int], n_threads: int, contract: bool
) -> None:
    N, B, G, m = shape
    e, a, coef, pre, w = operands(N, B, G, m, dtype)
    want_e, want_g = reference(e, a, coef, pre, w if contract else None)
    g = torch.full((N, G * m), float("nan"), dtype=dtype) if contract else None  # all written
    with threads(n_threads):
        kernels.trace_update(e, a, coef, pre, w if contract else None, g)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-13, "atol": 1e-13}
    torch.testing.assert_close(e, want_e, **tol)
    if contract:
        assert g is not None and want_g is not None
        torch.testing.assert_close(g, want_g, **tol)


def test_the_kernel_refuses_what_it_cannot_take() -> None:
    e, a, coef, pre, w = operands(4, 3, 1, 5, torch.float64)
    g = torch.empty(4, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"a \(N, B\)"):
        kernels.trace_update(e, a[:, :2], coef, pre, w, g)
    with pytest.raises(ValueError, match="both or neither"):
        kernels.trace_update(e, a, coef, pre, w, None)
    with pytest.raises(ValueError, match=r"pre \(B, m\)"):
        kernels.trace_update(e, a, coef, pre[:, :4], w, g)
    with pytest.raises(ValueError, match="contiguous CPU tensors of one dtype"):
        kernels.trace_update(e, a.T.contiguous().T, coef, pre, w, g)
    with pytest.raises(ValueError, match="contiguous CPU tensors of one dtype"):
        kernels.trace_update(e, a.float(), coef, pre, w, g)
    assert not kernels.supports(e.half())


@pytest.mark.parametrize("n_threads", [1, 2])
def test_the_kernel_keeps_the_callers_denormal_mode_in_every_thread(n_threads: int) -> None:
    tiny = torch.finfo(torch.float32).tiny

    def subnormals(flush: bool) -> int:
        e = torch.full((64, 8, 16), 4 * tiny)  # normal; × 0.1 makes it subnormal
        a = torch.full((64, 8), 0.1)
        coef, pre = torch.zeros(64, 8, 1), torch.zeros(8, 16)
        with threads(n_threads):
            if flush:
                with flush_denormals():
                    kernels.trace_update(e, a, coef, pre, None, None)
            else:
                kernels.trace_update(e, a, coef, pre, None, None)
        return int(((e != 0) & (e.abs() < tiny)).sum())

    was = ostl.numerics.denormals_flushed()  # another test may have flushed process-wide
    torch.set_flush_denormal(False)
    try:
        assert subnormals(flush=False) == 64 * 8 * 16  # the control: IEEE arithmetic keeps them
        assert subnormals(flush=True) == 0
    finally:
        torch.set_flush_denormal(was)


FUSED_CELLS = ["lif", "snu", "ssnu", "rnn", "gru"]  # one stored trace variable


@contextmanager
def count_kernel_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls = [0]
    real = kernels.run

    def counting(*args: object) -> None:
        calls[0] += 1
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(kernels, "run", counting)
    yield calls


@pytest.mark.parametrize("name", CELL_NAMES)
@pytest.mark.parametrize("rule", ["ostl", "osttp", "eprop", "snap"])
def test_fused_and_pytorch_traces_give_the_same_gradients(
    name: str, rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Targets at some steps only: updates deferred over steps without a signal are applied."""
    net = make_net(name, [3, 6, 5], recurrent=True, bias=True)
    xs, ts = sequence(12, 4, 3)
    targets: list[Tensor | None] = [t if i % 3 == 2 else None for i, t in enumerate(ts)]

    def grads() -> dict[str, Tensor]:
        return ostl.gradients(net, get_rule(rule), xs, targets, mse)

    with count_kernel_calls(monkeypatch) as calls:
        got = grads()
    monkeypatch.setattr(kernels, "ENABLED", False)
    want = grads()
    assert (calls[0] > 0) == (name in FUSED_CELLS), calls  # the fused path ran where it applies
    for n, g in want.items():
        torch.testing.assert_close(got[n], g, rtol=1e-12, atol=1e-14)
    assert max(float(g.norm()) for g in want.values()) > 0


def test_a_checkpoint_taken_between_deferred_updates_resumes_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = make_net("lif", [3, 6, 5], recurrent=True)
    xs, ts = sequence(10, 4, 3)
    runner = ostl.OSTL().bind(net)
    runner.reset(4)
    for t in range(4):  # no signal: the updates stay deferred
        runner.step(xs[t], None, mse)
    trace = runner.traces[0]
    assert isinstance(trace, DiagonalTrace) and trace._pending
    saved = runner.state_dict()
    assert not trace._pending  # state_dict applied them first
    for t in range(4, 10):
        runner.step(xs[t], ts[t], mse)
    want = {n: g.clone() for n, g in runner.grads.items()}

    monkeypatch.setattr(kernels, "ENABLED", False)
    other = ostl.OSTL().bind(net)
    other.reset(4)
    other.load_state_dict(saved)
    for t in range(4, 10):
        other.step(xs[t], ts[t], mse)
    for n, g in want.items():
        torch.testing.assert_close(other.grads[n], g, rtol=1e-12, atol=1e-14)


def test_reading_the_traces_applies_deferred_updates() -> None:
    net = make_net("lif", [3, 5], recurrent=False)
    runner = ostl.OSTL().bind(net)
    runner.reset(2)
    runner.step(torch.ones(2, 3, dtype=torch.float64), None, mse)
    trace = runner.traces[0]
    assert isinstance(trace, DiagonalTrace)
    assert bool((trace.eps["W"] == 0).all())  # deferred: not yet applied
    assert sum(t.numel() for t in runner.state_tensors()) > 0
    assert not bool((trace.eps["W"] == 0).all())  # listing the state tensors applied it


def test_without_a_compiler_one_warning_and_the_pytorch_path(tmp_path: Path) -> None:
    code = (
        "import warnings, torch, ostl\n"
        "from ostl import kernels\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    net = ostl.Network([ostl.Layer(3, 4, 'lif'), ostl.Readout(4, 2)])\n"
        "    g = ostl.gradients(net, ostl.OSTL(), torch.rand(5, 2, 3), [torch.rand(2, 2)] * 5,\n"
        "                       lambda y, t: ((y - t) ** 2).mean())\n"
        "    ostl.gradients(net, ostl.OSTL(), torch.rand(5, 2, 3), [None] * 5, lambda y, t: 0)\n"
        "msgs = [str(x.message) for x in w if 'fused trace kernel' in str(x.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert not kernels.available()\n"
        "assert all(torch.isfinite(v).all() for v in g.values())\n"
        "print(msgs[0])\n"
    )
    env = {
        **os.environ,
        "CC": str(tmp_path / "no-such-compiler"),
        "OSTL_KERNEL_CACHE": str(tmp_path),
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "no C compiler found" in out.stdout
    assert list(tmp_path.iterdir()) == []


def test_the_kernel_is_compiled_once_into_its_cache(tmp_path: Path) -> None:
    code = "from ostl import kernels; assert kernels.available(); print(kernels._load()._name)"
    env = {**os.environ, "OSTL_KERNEL_CACHE": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    built = list(tmp_path.glob("trace_update-*.so"))
    assert len(built) == 1 and first.stdout.strip() == str(built[0])
    stamp = built[0].stat().st_mtime_ns
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert again.returncode == 0 and again.stdout == first.stdout
    assert built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [built[0].name]  # no temporary left


def test_ostl_kernels_0_turns_it_off() -> None:
    code = "from ostl import kernels; assert not kernels.ENABLED and not kernels.available()"
    env = {**os.environ, "OSTL_KERNELS": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
