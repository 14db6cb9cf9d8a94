"""Building and loading the C kernel (``trace_step.c``) of :mod:`ostl.kernels`.

The source is compiled on first use with the system's C compiler (``$CC``, else ``cc``) into a
cache folder, ``$OSTL_KERNEL_CACHE`` or ``~/.cache/ostl/kernels`` (``$XDG_CACHE_HOME`` is
honoured), under a name that hashes the source, the flags, the compiler and the CPU, and is
reused by later processes. If it cannot be built, :func:`load` warns once and returns None.

The library has one entry point per storage dtype of the trace (:data:`FUNCTIONS`, found by
:func:`entry_points`). The float16 one exists only where the compiler converts float16: with
the F16C instructions (x86-64), else with ``_Float16``; :func:`float16_conversion` says which
(and :func:`bfloat16_conversion` how bfloat16 is rounded).
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
from typing import Any

import torch

__all__ = [
    "FLAGS",
    "FUNCTIONS",
    "OPTIONAL",
    "SOURCE",
    "bfloat16_conversion",
    "entry_points",
    "float16_conversion",
    "library_path",
    "load",
]

SOURCE = Path(__file__).with_name("trace_step.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-std=c11", "-shared", "-fPIC")
#: the kernel's entry point for each storage dtype of the trace it takes (the factors are
#: float64 for a float64 trace, float32 otherwise)
FUNCTIONS = {
    torch.float32: "ostl_trace_step_f32",
    torch.float64: "ostl_trace_step_f64",
    torch.bfloat16: "ostl_trace_step_bf16",
    torch.float16: "ostl_trace_step_f16",
}
#: the trace dtypes whose entry point a build may lack (no float16 conversion in the compiler)
OPTIONAL = frozenset({torch.float16})


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
    for dtype, name in FUNCTIONS.items():
        fn = getattr(lib, name, None) if dtype in OPTIONAL else getattr(lib, name)
        if fn is not None:
            fn.restype = ctypes.c_int
            # threads, M, N, B, G, m, then e, A, coef, pre, w, w_old, g
            fn.argtypes = [ctypes.c_int] + [ctypes.c_long] * 5 + [ctypes.c_void_p] * 7
    for name in ("ostl_bf16_conversion", "ostl_f16_conversion"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = []
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


@functools.cache
def entry_points() -> dict[torch.dtype, Any]:
    """The built kernel's function for each trace dtype it has (empty if it cannot be built)."""
    lib = load()
    if lib is None:
        return {}
    found = {dtype: getattr(lib, name, None) for dtype, name in FUNCTIONS.items()}
    return {dtype: fn for dtype, fn in found.items() if fn is not None}


def _conversion(function: str) -> str | None:
    lib = load()
    name = None if lib is None else getattr(lib, function)()
    return None if name is None else str(name.decode())


def float16_conversion() -> str | None:
    """How the built kernel converts float16 (``"F16C"``: the x86 instructions; ``"_Float16"``:
    the compiler's type), or None: not built, or its compiler converts no float16 (float16
    traces then take the PyTorch path)."""
    return _conversion("ostl_f16_conversion")


def bfloat16_conversion() -> str | None:
    """How the built kernel rounds to bfloat16 (``"AVX512-BF16"``: the x86 instruction, with the
    bit rule for vectors holding NaN or subnormals; ``"bits"``: integer operations), or None if
    it is not built."""
    return _conversion("ostl_bf16_conversion")
