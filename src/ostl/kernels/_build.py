"""Building and loading the C kernel (``trace_step.c``) of :mod:`ostl.kernels`.

The source is compiled on first use with the system's C compiler (``$CC``, else ``cc``) into a
cache folder, ``$OSTL_KERNEL_CACHE`` or ``~/.cache/ostl/kernels`` (``$XDG_CACHE_HOME`` is
honoured), under a name that hashes the source, the flags, the compiler and the CPU, and is
reused by later processes. If it cannot be built, :func:`load` warns once and returns None.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

__all__ = ["FLAGS", "FUNCTIONS", "SOURCE", "library_path", "load"]

SOURCE = Path(__file__).with_name("trace_step.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-std=c11", "-shared", "-fPIC")
#: the kernel's entry point for each dtype it takes
FUNCTIONS = {torch.float32: "ostl_trace_step_f32", torch.float64: "ostl_trace_step_f64"}


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
    """Where the kernel compiled by ``compiler`` for this source, flags and CPU is cached."""
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    key = hashlib.sha256(
        "\0".join([SOURCE.read_text(), " ".join(FLAGS), version, _cpu_id()]).encode()
    ).hexdigest()[:16]
    return _cache_dir() / f"trace_step-{key}.so"


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
    for name in FUNCTIONS.values():
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        # threads, M, N, B, G, m, then e, A, coef, pre, w, w_old, g
        fn.argtypes = [ctypes.c_int] + [ctypes.c_long] * 5 + [ctypes.c_void_p] * 7
    return lib


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel, built on the first call of the process; None (and one warning) if
    it cannot be built."""
    try:
        return _compile()
    except (OSError, subprocess.SubprocessError, AttributeError) as err:
        detail = getattr(err, "stderr", None) or str(err)
        warnings.warn(
            f"ostl: the fused trace kernel could not be built ({detail.strip()[:500]}); "
            "traces use the PyTorch path (same values, slower). Set OSTL_KERNELS=0 to skip "
            "the attempt.",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
