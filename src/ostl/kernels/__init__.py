"""A fused CPU kernel for the diagonal trace: update and contraction in one pass.

A diagonal trace step is ``ε ← a ⊙ ε + c ⊗ x`` followed, at steps with a learning signal, by
``g = Σ_b w_b ε_b``. PyTorch runs that as three passes over the trace (scale, add, batched
matrix product); the trace is the largest thing OSTL touches per step, so those passes are
most of its time. :func:`trace_update` does it in one pass (``trace_update.c`` beside this
file, parallel over neurons with OpenMP, as many threads as ``torch.get_num_threads()``).

The C source is compiled on first use with the system's C compiler (``$CC``, else ``cc``;
``-O3 -march=native -fopenmp``) into a cache folder, ``$OSTL_KERNEL_CACHE`` or
``~/.cache/ostl/kernels`` (``$XDG_CACHE_HOME`` is honoured), under a name that hashes the
source, the flags, the compiler and the CPU, and is reused by later processes. Without a
compiler, or if compiling fails, one warning says so and every trace uses the PyTorch path,
which computes the same values (the tests compare the two). ``OSTL_KERNELS=0`` in the
environment, or ``ostl.kernels.ENABLED = False``, turns the kernel off.

Only contiguous float32 / float64 tensors on the CPU take the kernel (:func:`supports`); CUDA,
half-precision traces and every other layout use PyTorch. The kernel multiplies and adds in
the trace's dtype and may contract them into fused multiply-adds, so its results differ from
PyTorch's in the last bits (float64: relative 1e-15).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["ENABLED", "available", "disabled", "supports", "trace_update", "library_path"]

#: False: traces built from now on (at the next ``reset``) use the PyTorch path (also set by
#: ``OSTL_KERNELS=0``; :func:`disabled` scopes it).
ENABLED: bool = os.environ.get("OSTL_KERNELS", "1") != "0"

SOURCE = Path(__file__).with_name("trace_update.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-std=c11", "-shared", "-fPIC")
_DTYPES = {torch.float32: "ostl_trace_update_f32", torch.float64: "ostl_trace_update_f64"}


def _cache_dir() -> Path:
    if os.environ.get("OSTL_KERNEL_CACHE"):
        return Path(os.environ["OSTL_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ostl" / "kernels"


def _cpu_id() -> str:
    """The CPU's model and feature flags (``-march=native`` code is only valid on such a CPU)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() + platform.machine()
    keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(keep)))


def library_path(compiler: str) -> Path:
    """Where the compiled kernel for this source, compiler, flags and CPU is cached."""
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    key = hashlib.sha256(
        "\0".join([SOURCE.read_text(), " ".join(FLAGS), version, _cpu_id()]).encode()
    ).hexdigest()[:16]
    return _cache_dir() / f"trace_update-{key}.so"


def _compile() -> ctypes.CDLL:
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise OSError(f"no C compiler found (looked for {os.environ.get('CC', 'cc')!r})")
    path = library_path(compiler)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # compiled next to its final name and renamed: concurrent processes never load half a file
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
        os.close(fd)
        try:
            subprocess.run(
                [compiler, *FLAGS, "-o", tmp, str(SOURCE)],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(path))
    for name in _DTYPES.values():
        fn = getattr(lib, name)
        fn.restype = None
        fn.argtypes = [ctypes.c_int] + [ctypes.c_long] * 4 + [ctypes.c_void_p] * 6
    return lib


@functools.cache
def _load() -> ctypes.CDLL | None:
    """The compiled kernel, built on the first call of the process; None (and one warning) if
    it cannot be built."""
    try:
        return _compile()
    except (OSError, subprocess.SubprocessError, AttributeError) as err:
        detail = getattr(err, "stderr", None) or str(err)
        warnings.warn(
            f"ostl: the fused trace kernel could not be built ({detail.strip()[:500]}); "
            "diagonal traces use the PyTorch path (same values, slower). Set "
            "OSTL_KERNELS=0 to skip the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


@contextmanager
def disabled() -> Iterator[None]:
    """Traces built inside the block use the PyTorch path; the previous setting is restored."""
    global ENABLED
    old, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = old


def available() -> bool:
    """Whether the kernel is enabled and built (builds it on the first call)."""
    return ENABLED and sys.platform != "win32" and _load() is not None


def supports(*tensors: Tensor) -> bool:
    """Whether :func:`trace_update` can take these tensors: the kernel is available and they are
    contiguous CPU tensors of one dtype, float32 or float64."""
    t0 = tensors[0]
    return (
        t0.dtype in _DTYPES
        and all(
            t.device.type == "cpu" and t.dtype == t0.dtype and t.is_contiguous() for t in tensors
        )
        and available()
    )


def trace_update(
    e: Tensor, a: Tensor, coef: Tensor, pre: Tensor, w: Tensor | None, g: Tensor | None
) -> None:
    """In place: ``e[n, b, k·m + j] = a[n, b]·e[n, b, k·m + j] + coef[n, b, k]·pre[b, j]``, then,
    if ``w`` and ``g`` are given, ``g[n, c] = Σ_b w[n, b]·e[n, b, c]``.

    Shapes: e (N, B, G·m), a (N, B), coef (N, B, G), pre (B, m), w (N, B), g (N, G·m); all
    contiguous, on the CPU, of one dtype (check with :func:`supports`). Shapes are checked here;
    a mismatch raises ValueError rather than reading out of bounds.
    """
    N, B, C = e.shape
    G = coef.shape[-1]
    m = pre.shape[-1]
    if (
        a.shape != (N, B)
        or coef.shape != (N, B, G)
        or pre.shape != (B, m)
        or G * m != C
        or (w is None) != (g is None)
        or (w is not None and w.shape != (N, B))
        or (g is not None and g.shape != (N, C))
    ):
        shapes = [None if t is None else tuple(t.shape) for t in (e, a, coef, pre, w, g)]
        raise ValueError(
            "trace_update expects e (N, B, G·m), a (N, B), coef (N, B, G), pre (B, m), "
            f"w (N, B) and g (N, G·m), w and g both or neither; got {shapes}"
        )
    if not supports(e, a, coef, pre, *(t for t in (w, g) if t is not None)):
        raise ValueError(
            "trace_update takes contiguous CPU tensors of one dtype (float32 or float64) and "
            "needs the kernel built (ostl.kernels.available())"
        )
    run(e, a, coef, pre, w, g)


def run(
    e: Tensor, a: Tensor, coef: Tensor, pre: Tensor, w: Tensor | None, g: Tensor | None
) -> None:
    """:func:`trace_update` without its checks, for callers that made them once
    (:class:`ostl.traces.DiagonalTrace` checks :func:`supports` when it is built)."""
    N, B, _ = e.shape
    G, m = coef.shape[-1], pre.shape[-1]
    lib = _load()
    assert lib is not None
    fn = getattr(lib, _DTYPES[e.dtype])
    fn(
        torch.get_num_threads(),
        N,
        B,
        G,
        m,
        e.data_ptr(),
        a.data_ptr(),
        coef.data_ptr(),
        pre.data_ptr(),
        None if w is None else w.data_ptr(),
        None if g is None else g.data_ptr(),
    )
