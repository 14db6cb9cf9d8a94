"""One step of an eligibility trace and its contraction with a learning signal, fused.

With M stored trace variables, N neurons, B samples, G gates and m presynaptic inputs
(C = G·m columns), one step updates the trace ``e`` (M, N, B, C) in place and contracts it::

    e_new[i,n,b,k·m+j] = Σ_l A[i,l,b,n] e_old[l,n,b,k·m+j] + coef[i,b,k,n] pre[b,j]
    g[n,c] = Σ_i Σ_b ( w[i,b,n] e_new[i,n,b,c] + w_old[i,b,n] e_old[i,n,b,c] )

with ``A`` (M, M, B, N) the recursion, ``coef`` (M, B, G, N) the immediate coefficients (None:
all ones), ``pre`` (B, m) the presynaptic input, and ``w`` / ``w_old`` (M, B, N) the weights of
the contraction on the new / old trace (None: that term is absent). :func:`trace_step` is the
entry point; it is also registered as two ``torch.library`` custom ops, ``ostl::trace_update``
and ``ostl::trace_update_contract``, so ``torch.compile(..., fullgraph=True)`` traces through
it (eager calls skip the dispatcher, whose overhead is ~20 µs).

The factors are small (B·N), the trace is big (M·N·B·C). Two implementations:

- A C kernel (``trace_step.c``; CPU) that reads and writes every trace element once, parallel
  over neurons with OpenMP (``torch.get_num_threads()`` threads, which take the caller's
  denormal mode). It takes contiguous CPU tensors with M ≤ :data:`MAX_M` (:func:`supports`) in
  these dtypes:

  ========================  ================================
  trace ``e``               factors (A, coef, pre, w, w_old)
  ========================  ================================
  float32 / float64         the same dtype
  bfloat16 / float16        float32
  ========================  ================================

  It multiplies and adds in the factors' dtype without fused multiply-adds; its sums run in
  another order than PyTorch's, so results differ in the last bits. A 16-bit trace element is
  widened to float32, updated with exactly the float32 kernel's arithmetic, and rounded to
  nearest even when stored, bit for bit as ``.to(torch.bfloat16)`` / ``.to(torch.float16)``
  would round that float32 value (overflow to inf, float16 subnormals, NaN); ``g`` (float32)
  uses the unrounded values. As the PyTorch path's float32 values differ from the kernel's in
  the last bits, the two paths' stored 16-bit values differ where those round apart: by one
  unit in the 16-bit last place (more only under cancellation, by at most the float32
  discrepancy). The conversions run as vector instructions where ``-march=native`` has them
  (F16C, AVX512-BF16: :func:`float16_conversion`, :func:`bfloat16_conversion`); float16 needs
  F16C or the compiler's ``_Float16``, else float16 traces take the PyTorch path. The kernel
  is compiled on first use with the system's C compiler (see :mod:`._build`: ``$CC``,
  ``$OSTL_KERNEL_CACHE``); without a compiler one warning says so.
- PyTorch (every other case: CUDA, other layouts, M > MAX_M, kernel off or unbuildable, other
  dtype combinations). A lower-precision trace is computed in the factors' dtype and stored
  rounded; ``g`` is computed from the unrounded new values.

``OSTL_KERNELS=0`` in the environment, or ``ostl.kernels.ENABLED = False`` (:func:`disabled`
scopes it), sends every call to the PyTorch path. Neither path is differentiable: traces are
state, not part of an autograd graph.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from ._build import bfloat16_conversion, float16_conversion, library_path
from ._build import entry_points as _entry_points
from ._build import load as _load

__all__ = [
    "ENABLED",
    "MAX_M",
    "available",
    "bfloat16_conversion",
    "disabled",
    "float16_conversion",
    "library_path",
    "supports",
    "trace_step",
]

#: False: every trace step uses the PyTorch path (also set by ``OSTL_KERNELS=0``;
#: :func:`disabled` scopes it).
ENABLED: bool = os.environ.get("OSTL_KERNELS", "1") != "0"

#: The largest number of stored trace variables the C kernel takes (``OSTL_MAX_M`` in C).
MAX_M = 4

_PLAIN = (Tensor, torch.nn.Parameter)

#: the factors' dtype the C kernel takes with each dtype of the trace
_FACTOR_DTYPE = {
    torch.float32: torch.float32,
    torch.float64: torch.float64,
    torch.bfloat16: torch.float32,
    torch.float16: torch.float32,
}


@contextmanager
def disabled() -> Iterator[None]:
    """Inside the block every trace step uses the PyTorch path; the setting is then restored."""
    global ENABLED
    old, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = old


def available() -> bool:
    """Whether the C kernel is enabled and built (builds it on the first call)."""
    return ENABLED and sys.platform != "win32" and _load() is not None


def supports(*tensors: Tensor) -> bool:
    """Whether the C kernel takes these tensors.

    The first tensor is the trace, the others are factors. True when the kernel is available
    and all are plain contiguous CPU tensors, the trace float32 or float64 with factors of its
    dtype, or the trace bfloat16 or float16 with float32 factors (float16 only where the kernel
    was built with a float16 conversion: :func:`float16_conversion`). If the trace has 4
    dimensions, its M (``shape[0]``) must be at most :data:`MAX_M`.
    """
    if not tensors:
        return False
    e = tensors[0]
    factor = _FACTOR_DTYPE.get(e.dtype)
    if factor is None or (e.ndim == 4 and e.shape[0] > MAX_M):
        return False
    if type(e) not in _PLAIN or not e.is_cpu or not e.is_contiguous():
        return False
    for t in tensors[1:]:
        if type(t) not in _PLAIN or not t.is_cpu or t.dtype != factor or not t.is_contiguous():
            return False
    return available() and e.dtype in _entry_points()


def _shape_error(*tensors: Tensor | None) -> ValueError:
    names = ("e", "A", "coef", "pre", "w", "w_old")
    got = ", ".join(
        f"{n} {'None' if t is None else tuple(t.shape)}" for n, t in zip(names, tensors)
    )
    return ValueError(
        "trace_step expects e (M, N, B, G·m), A (M, M, B, N), coef (M, B, G, N) or None, "
        f"pre (B, m), w and w_old (M, B, N) or None; got {got}"
    )


def _check(
    e: Tensor, A: Tensor, coef: Tensor | None, pre: Tensor, w: Tensor | None, w_old: Tensor | None
) -> None:
    """Shapes, dtypes and devices, from Python attributes only (no tensor op, no GPU sync)."""
    se, sA, sp = e.shape, A.shape, pre.shape
    sc = None if coef is None else coef.shape
    if len(se) != 4 or len(sA) != 4 or len(sp) != 2 or (sc is not None and len(sc) != 4):
        raise _shape_error(e, A, coef, pre, w, w_old)
    M, N, B, C = se
    m = sp[1]
    G = sc[2] if sc is not None else (C // m if m else 0)
    if not (
        sA == (M, M, B, N)
        and sp[0] == B
        and G * m == C
        and (sc is None or sc == (M, B, G, N))
        and (w is None or w.shape == (M, B, N))
        and (w_old is None or w_old.shape == (M, B, N))
    ):
        raise _shape_error(e, A, coef, pre, w, w_old)
    dtype, device = A.dtype, e.device
    if not (e.dtype.is_floating_point and dtype.is_floating_point) or any(
        t is not None and (t.dtype != dtype or t.device != device) for t in (A, coef, pre, w, w_old)
    ):
        factors = [t for t in (A, coef, pre, w, w_old) if t is not None]
        raise ValueError(
            "trace_step expects a floating-point trace e and factors A, coef, pre, w, w_old "
            "of one floating dtype, all on e's device; got e "
            f"{e.dtype} on {e.device}, factors "
            + ", ".join(f"{t.dtype} on {t.device}" for t in factors)
        )


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _kernel(
    e: Tensor, A: Tensor, coef: Tensor | None, pre: Tensor, w: Tensor | None, w_old: Tensor | None,
    contract: bool,
) -> Tensor | None:  # fmt: skip
    """The C path (checked inputs that :func:`supports` takes, e non-empty)."""
    M, N, B, C = e.shape
    m = pre.shape[1]
    g = None
    if contract:  # written by the kernel unless neither weight is given
        alloc = torch.empty if w is not None or w_old is not None else torch.zeros
        g = alloc(N, C, dtype=A.dtype)
    fn = _entry_points()[e.dtype]
    rc = fn(
        torch.get_num_threads(), M, N, B, C // m, m,
        e.data_ptr(), A.data_ptr(), _ptr(coef), pre.data_ptr(), _ptr(w), _ptr(w_old), _ptr(g),
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"ostl trace kernel failed ({rc}) for M={M}")
    return g


def _contract(g: Tensor | None, w: Tensor, t: Tensor) -> Tensor:
    """``g + Σ_i Σ_b w[i, b, n] t[i, n, b, :]``, as (N, 1, C): one batched product per i."""
    wt = w.transpose(1, 2).contiguous().unsqueeze(2)  # (M, N, 1, B); bmm is slow on strided
    for i in range(t.shape[0]):
        g = torch.bmm(wt[i], t[i]) if g is None else torch.baddbmm(g, wt[i], t[i])
    assert g is not None
    return g


def _reference(
    e: Tensor, A: Tensor, coef: Tensor | None, pre: Tensor, w: Tensor | None, w_old: Tensor | None,
    contract: bool,
) -> Tensor | None:  # fmt: skip
    """The PyTorch path: computed in A's dtype, the new trace stored rounded to e's dtype."""
    M, N, B, C = e.shape
    m = pre.shape[1]
    G = coef.shape[2] if coef is not None else (C // m if m else 0)
    old = e if e.dtype == A.dtype else e.to(A.dtype)
    g = _contract(None, w_old, old) if w_old is not None else None  # before old changes
    if M == 1:  # in place: into e itself, or into the private copy of a low-precision e
        new = old.mul_(A[0].transpose(1, 2).unsqueeze(-1))  # A as (1, N, B, 1)
    else:
        new = torch.einsum("ilbn,lnbc->inbc", A, old)
    pre5 = pre.unsqueeze(1)  # (B, 1, m) against (M, N, B, G, m)
    if coef is None:
        new.unflatten(-1, (G, m)).add_(pre5)
    else:
        new.unflatten(-1, (G, m)).addcmul_(coef.permute(0, 3, 1, 2).unsqueeze(-1), pre5)
    if new is not e:
        e.copy_(new)
    if w is not None:
        g = _contract(g, w, new)
    if not contract:
        return None
    return A.new_zeros(N, C) if g is None else g.squeeze(1)


def _step(
    e: Tensor, A: Tensor, coef: Tensor | None, pre: Tensor, w: Tensor | None, w_old: Tensor | None,
    contract: bool,
) -> Tensor | None:  # fmt: skip
    tensors = [t for t in (e, A, coef, pre, w, w_old) if t is not None]
    if e.numel() and supports(*tensors):
        return _kernel(e, A, coef, pre, w, w_old, contract)
    return _reference(e, A, coef, pre, w, w_old, contract)


@torch.library.custom_op("ostl::trace_update", mutates_args=("e",))
def _trace_update(e: Tensor, A: Tensor, coef: Tensor | None, pre: Tensor) -> None:
    """``e ← A e + coef ⊗ pre`` in place (the module docstring)."""
    _check(e, A, coef, pre, None, None)
    _step(e, A, coef, pre, None, None, contract=False)


@_trace_update.register_fake
def _trace_update_fake(e: Tensor, A: Tensor, coef: Tensor | None, pre: Tensor) -> None:
    _check(e, A, coef, pre, None, None)


@torch.library.custom_op("ostl::trace_update_contract", mutates_args=("e",))
def _trace_update_contract(
    e: Tensor, A: Tensor, coef: Tensor | None, pre: Tensor, w: Tensor | None, w_old: Tensor | None
) -> Tensor:
    """``e ← A e + coef ⊗ pre`` in place, and g (N, C) (the module docstring)."""
    _check(e, A, coef, pre, w, w_old)
    g = _step(e, A, coef, pre, w, w_old, contract=True)
    assert g is not None
    return g


@_trace_update_contract.register_fake
def _trace_update_contract_fake(
    e: Tensor, A: Tensor, coef: Tensor | None, pre: Tensor, w: Tensor | None, w_old: Tensor | None
) -> Tensor:
    _check(e, A, coef, pre, w, w_old)
    return A.new_empty(e.shape[1], e.shape[3])


def trace_step(
    e: Tensor,
    A: Tensor,
    coef: Tensor | None,
    pre: Tensor,
    w: Tensor | None = None,
    w_old: Tensor | None = None,
) -> Tensor | None:
    """One trace step: update ``e`` in place and, given ``w`` or ``w_old``, contract it.

    Args:
        e: (M, N, B, C) the trace, C = G·m; updated in place. May be of a lower precision than
            the factors (computed in theirs, stored rounded to nearest even); bfloat16 and
            float16 with float32 factors take the C kernel on the CPU.
        A: (M, M, B, N) recursion coefficients.
        coef: (M, B, G, N) immediate coefficients, or None for all ones.
        pre: (B, m) presynaptic input.
        w: (M, B, N) contraction weights on the new trace, or None.
        w_old: (M, B, N) contraction weights on the old trace (before this step), or None.

    Returns:
        g (N, C) in A's dtype if ``w`` or ``w_old`` is given, else None.

    Raises:
        ValueError: shapes that do not fit each other, factors of different dtypes, or tensors
            on different devices (checked without any tensor operation).
    """
    contract = w is not None or w_old is not None
    if not torch.compiler.is_compiling() and torch._C._len_torch_dispatch_stack() == 0:
        _check(e, A, coef, pre, w, w_old)  # eager: the op's work without the dispatcher
        return _step(e, A, coef, pre, w, w_old, contract)
    if contract:
        return torch.ops.ostl.trace_update_contract(e, A, coef, pre, w, w_old)
    torch.ops.ostl.trace_update(e, A, coef, pre)
    return None
