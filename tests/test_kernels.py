"""ostl.kernels.trace_step: the C kernel and the PyTorch path against a naive einsum reference,
the custom ops under torch.compile, validation, denormals, and the build/cache machinery."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from ostl import kernels
from ostl.numerics import denormals_flushed, flush_denormals

needs_kernel = pytest.mark.skipif(
    not kernels.available(), reason="the C kernel is not available (no compiler or OSTL_KERNELS=0)"
)

Operands = tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor | None, Tensor | None]

#: (coef given, w given, w_old given): every combination the kernel specialises
VARIANTS = [(c, w, o) for c in (False, True) for w in (False, True) for o in (False, True)]


def naive(
    e: Tensor, A: Tensor, coef: Tensor | None, pre: Tensor, w: Tensor | None, w_old: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The step in float64, straight from the definition: (new trace, g; zeros without w's)."""
    M, N, B, C = e.shape
    m = pre.shape[1]
    G = C // m
    e0 = e.double()
    c = torch.ones(M, B, G, N, dtype=torch.float64) if coef is None else coef.double()
    imm = torch.einsum("ibkn,bj->inbkj", c, pre.double()).reshape(M, N, B, C)
    new = torch.einsum("ilbn,lnbc->inbc", A.double(), e0) + imm
    g = torch.zeros(N, C, dtype=torch.float64)
    if w is not None:
        g = g + torch.einsum("ibn,inbc->nc", w.double(), new)
    if w_old is not None:
        g = g + torch.einsum("ibn,inbc->nc", w_old.double(), e0)
    return new, g


def operands(
    M: int, N: int, B: int, G: int, m: int, dtype: torch.dtype, variant: tuple[bool, bool, bool]
) -> Operands:
    """Random e, A, coef, pre, w, w_old (the ones the variant leaves out are None)."""
    gen = torch.Generator().manual_seed(((M * 31 + N) * 31 + B) * 31 + G * 7 + m)

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    has_coef, has_w, has_old = variant
    e, A, coef, pre = rand(M, N, B, G * m), rand(M, M, B, N), rand(M, B, G, N), rand(B, m)
    w, w_old = rand(M, B, N), rand(M, B, N)
    return (e, A, coef if has_coef else None, pre, w if has_w else None, w_old if has_old else None)


def assert_matches(got: Tensor, want: Tensor, dtype: torch.dtype) -> None:
    """Equal within the dtype's rounding, relative to the reference's scale."""
    assert float(want.abs().max()) > 0, "vacuous comparison: the reference is all zeros"
    scale = float(want.abs().max())
    rtol = 1e-13 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=rtol * scale)


def check_step(ops: Operands, dtype: torch.dtype) -> None:
    """trace_step on a copy of e equals the naive step; g is None exactly without weights."""
    e, A, coef, pre, w, w_old = ops
    want_e, want_g = naive(*ops)
    got_e = e.clone()
    g = kernels.trace_step(got_e, A, coef, pre, w, w_old)
    assert_matches(got_e, want_e, dtype)
    if w is None and w_old is None:
        assert g is None
    else:
        assert g is not None and g.shape == want_g.shape and g.dtype == A.dtype
        assert_matches(g, want_g, dtype)


@contextmanager
def threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _forbidden(name: str) -> Callable[..., Any]:
    def fail(*args: object, **kwargs: object) -> Any:
        raise AssertionError(f"{name} ran where the other path was expected")

    return fail


@pytest.fixture
def c_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The PyTorch path raises: what follows must run the C kernel."""
    monkeypatch.setattr(kernels, "_reference", _forbidden("the PyTorch path"))


@pytest.fixture
def torch_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The C kernel raises: what follows must run the PyTorch path."""
    monkeypatch.setattr(kernels, "_kernel", _forbidden("the C kernel"))


SHAPES = [(1, 1, 1), (1, 4, 3), (6, 1, 1), (13, 3, 17), (40, 5, 33)]  # (N, B, m)


@needs_kernel
@pytest.mark.usefixtures("c_path_only")
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("G", [1, 3, 4])
@pytest.mark.parametrize("M", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_kernel_computes_the_step(
    dtype: torch.dtype, M: int, G: int, shape: tuple[int, int, int], n_threads: int
) -> None:
    N, B, m = shape
    with threads(n_threads):
        for variant in VARIANTS:
            check_step(operands(M, N, B, G, m, dtype, variant), dtype)


@needs_kernel
@pytest.mark.usefixtures("c_path_only")
def test_the_kernel_takes_its_largest_m_and_gives_the_same_bits_on_any_thread_count() -> None:
    ops = operands(kernels.MAX_M, 9, 3, 2, 19, torch.float64, (True, True, True))
    check_step(ops, torch.float64)
    e, A, coef, pre, w, w_old = ops
    results = []
    for n in (1, 2):
        got = e.clone()
        with threads(n):
            g = kernels.trace_step(got, A, coef, pre, w, w_old)
        assert g is not None
        results.append((got, g))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.usefixtures("torch_path_only")
@pytest.mark.parametrize("shape", SHAPES[:4])
@pytest.mark.parametrize("G", [1, 3])
@pytest.mark.parametrize("M", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_pytorch_path_computes_the_step(
    dtype: torch.dtype, M: int, G: int, shape: tuple[int, int, int]
) -> None:
    N, B, m = shape
    with kernels.disabled():
        for variant in VARIANTS:
            check_step(operands(M, N, B, G, m, dtype, variant), dtype)


@pytest.mark.usefixtures("torch_path_only")
def test_more_variables_than_the_kernel_takes_go_to_pytorch() -> None:
    M = kernels.MAX_M + 1
    for variant in VARIANTS:
        ops = operands(M, 5, 3, 2, 7, torch.float64, variant)
        assert not kernels.supports(ops[0], ops[1])
        check_step(ops, torch.float64)


LOW = [torch.bfloat16, torch.float16]
MANTISSA_BITS = {torch.bfloat16: 7, torch.float16: 10}


def kernel_takes(dtype: torch.dtype) -> bool:
    """Whether the built kernel has an entry point for traces of this dtype."""
    return kernels.available() and dtype in kernels._entry_points()


def require_kernel_for(dtype: torch.dtype) -> None:
    if not kernel_takes(dtype):
        pytest.skip(f"the C kernel takes no {dtype} trace here (float16: no compiler conversion)")


def bits(t: Tensor) -> Tensor:
    """The bit patterns, as integers (so -0 differs from 0)."""
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def assert_same_bits(got: Tensor, want: Tensor) -> None:
    """Bit for bit, except that any NaN matches any NaN: which operand's NaN an operation
    propagates (sign, payload) depends on the operand order the compiler picks. A bfloat16 NaN
    must still be torch's 0xFFFF."""
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan)
    assert torch.equal(bits(got)[~nan], bits(want)[~nan]), int((bits(got) != bits(want)).sum())
    if got.dtype == torch.bfloat16:
        assert bool((bits(got)[nan] == -1).all())


def ulp(x: Tensor, dtype: torch.dtype) -> Tensor:
    """One unit in the last place of ``dtype`` at the magnitude of x (float64; subnormal range
    included)."""
    _, exponent = torch.frexp(x.double())
    smallest = torch.finfo(dtype).tiny * 2.0 ** -MANTISSA_BITS[dtype]
    return torch.pow(2.0, (exponent - 1 - MANTISSA_BITS[dtype]).double()).clamp(min=smallest)


@pytest.mark.parametrize("path", ["pytorch", "kernel"])
@pytest.mark.parametrize("low", LOW)
@pytest.mark.parametrize("M", [1, 2])
def test_a_low_precision_trace_is_computed_in_the_factors_dtype_and_stored_rounded(
    low: torch.dtype, M: int, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "kernel":
        require_kernel_for(low)
        monkeypatch.setattr(kernels, "_reference", _forbidden("the PyTorch path"))
    else:
        monkeypatch.setattr(kernels, "_kernel", _forbidden("the C kernel"))
    for variant in VARIANTS:
        e, A, coef, pre, w, w_old = operands(M, 7, 3, 2, 11, torch.float32, variant)
        e = e.to(low)
        want_e, want_g = naive(e, A, coef, pre, w, w_old)
        got = e.clone()
        with kernels.disabled() if path == "pytorch" else nullcontext():
            g = kernels.trace_step(got, A, coef, pre, w, w_old)
        assert got.dtype == low
        # within one unit in the last place of the storage dtype (float32 arithmetic, one rounding)
        assert float(want_e.abs().max()) > 0
        assert bool(((got.double() - want_e).abs() <= ulp(want_e, low)).all())
        assert not torch.equal(got.double(), want_e)  # it was rounded (float64 values would not be)
        if w is not None or w_old is not None:
            assert g is not None and g.dtype == torch.float32
            assert_matches(g, want_g, torch.float32)  # from the unrounded new values


@needs_kernel
@pytest.mark.usefixtures("c_path_only")
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("G", [1, 4])
@pytest.mark.parametrize("M", [1, 2, 3])
@pytest.mark.parametrize("low", LOW)
def test_a_16_bit_trace_in_the_kernel_is_its_float32_step_rounded(
    low: torch.dtype, M: int, G: int, n_threads: int
) -> None:
    """The 16-bit kernel computes what the float32 kernel computes on the widened trace (same
    operations, same order), then rounds it as torch does; g is the float32 kernel's, bit for
    bit (from the unrounded values). m = 37: two vectors of 16 columns and a scalar tail."""
    require_kernel_for(low)
    for variant in VARIANTS:
        e, A, coef, pre, w, w_old = operands(M, 9, 3, G, 37, torch.float32, variant)
        e = e.to(low)
        got, wide = e.clone(), e.float()
        with threads(n_threads):
            g = kernels.trace_step(got, A, coef, pre, w, w_old)
            want_g = kernels.trace_step(wide, A, coef, pre, w, w_old)  # the float32 kernel
        assert_same_bits(got, wide.to(low))
        assert not torch.equal(got.float(), wide)  # the kernel did round
        if w is None and w_old is None:
            assert g is None
        else:
            assert g is not None and want_g is not None and g.dtype == torch.float32
            assert torch.equal(g, want_g)


def special_values() -> Tensor:
    """float32 values at the edges of both 16-bit formats: ties (to even: down and up), just off
    ties, overflow to inf (and just not), subnormals of float16 and of float32, signed zeros,
    inf and NaN."""
    patterns = [
        0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF,  # bfloat16 ties (down, up), near ties
        0xBF808000, 0xBF818000,  # ... negative
        0x7F7F8000, 0x7F7E8000,  # ties by the largest bfloat16: up to inf, down to even
        0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F7FFF,  # float32's largest rounds to inf; just below
        0x00008000, 0x00018000, 0x80000001, 0x00400000,  # float32 subnormals
    ]  # fmt: skip
    # (int64 first: the patterns above 2^31 wrap to negative int32, the same bits)
    f32_bits = torch.tensor(patterns, dtype=torch.int64).to(torch.int32)
    one = 1.0
    decimal = [
        one + 2.0**-11, one + 3 * 2.0**-11, one + 2.0**-11 + 2.0**-20,  # float16 ties
        2049.0, 2051.0, -2051.0,  # ties at ulp 2
        65504.0, 65519.0, 65520.0, -65520.0, 1e6, -7e4,  # float16 max, rounds down, overflows
        2.0**-24, 2.0**-25, 3 * 2.0**-25, 5 * 2.0**-26, 1e-5, -6e-8, 3e-8,  # float16 subnormals
        2.0**-14, 2.0**-14 - 2.0**-25, -(2.0**-14 - 2.0**-24),  # float16's smallest normal
        0.0, -0.0, 1.5, -2.5, 1e-39, -1e-40,
        float("inf"), float("-inf"), float("nan"),
    ]  # fmt: skip
    return torch.cat([f32_bits.view(torch.float32), torch.tensor(decimal, dtype=torch.float32)])


@needs_kernel
@pytest.mark.usefixtures("c_path_only")
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("low", LOW)
def test_a_16_bit_trace_rounds_ties_overflow_subnormals_and_nan_as_torch(
    low: torch.dtype, n_threads: int
) -> None:
    """With A = 1, coef = 1 and a trace of -0, the first step's new values are exactly pre, so
    the stored trace must be pre.to(low); the second step mixes the stored specials (inf - inf,
    overflowing sums, ...) and must give the float32 kernel's values rounded. Every value sits
    in vector lanes and in the scalar tail (m = 41), and g holds the unrounded values."""
    require_kernel_for(low)
    values = special_values()
    m, B, N = 41, 3, 4
    tiled = values.repeat(m * B // len(values) + 1)[: m * B].reshape(B, m)
    pre = torch.stack([tiled[b].roll(7 * b) for b in range(B)])  # each value in several columns
    e = torch.full((1, N, B, m), -0.0).to(low)
    A, w = torch.ones(1, 1, B, N), torch.ones(1, B, N)
    with threads(n_threads):
        g = kernels.trace_step(e, A, None, pre, w)
    assert g is not None
    assert_same_bits(e, pre.expand(1, N, B, m).to(low))
    # g = Σ_b w e_new: compare one sample's worth through a batch of one
    e1 = torch.full((1, N, 1, m), -0.0).to(low)
    with threads(n_threads):
        g1 = kernels.trace_step(e1, A[:, :, :1], None, pre[:1], w[:, :1])
    assert g1 is not None
    finite = ~torch.isnan(pre[0])
    assert torch.equal(g1[:, finite], pre[0, finite].expand(N, -1))  # unrounded: pre itself
    assert not torch.equal(g1[:, finite], e1[0, :, 0, finite].float())

    # the second step: stored specials plus specials in another order, with a factor
    A2 = torch.tensor([1.0, 0.5, -1.0]).repeat(N)[:N].expand(1, 1, B, N).contiguous()
    coef = torch.tensor([1.0, -1.0, 2.0, 1e-3]).repeat(B * N)[: B * N].reshape(1, B, 1, N)
    pre2 = pre.flip(-1).contiguous()
    wide = e.float()
    with threads(n_threads):
        g2 = kernels.trace_step(e, A2, coef, pre2, w, w)
        want_g2 = kernels.trace_step(wide, A2, coef, pre2, w, w)
    assert_same_bits(e, wide.to(low))
    assert g2 is not None and want_g2 is not None
    torch.testing.assert_close(g2, want_g2, rtol=0, atol=0, equal_nan=True)
    assert bool(torch.isinf(e).any()) and bool(torch.isnan(e).any())


@needs_kernel
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("G", [1, 4])
@pytest.mark.parametrize("M", [1, 2, 3])
@pytest.mark.parametrize("low", LOW)
def test_a_16_bit_trace_in_the_kernel_agrees_with_the_pytorch_path(
    low: torch.dtype, M: int, G: int, n_threads: int
) -> None:
    """Both paths compute in float32 and round once, but PyTorch's float32 arithmetic is not the
    kernel's: addcmul fuses its multiply-add on FMA CPUs and einsum (M > 1) sums in BLAS order.
    So the stored values are equal where the float32 values round alike, and otherwise differ by
    at most the float32 discrepancy (a few float32 ulps of the terms' magnitudes) plus one unit
    in the 16-bit last place. With M = 1 and no coef both do one product and one sum, and agree
    bit for bit. g agrees to float32 precision."""
    require_kernel_for(low)
    for variant in VARIANTS:
        e, A, coef, pre, w, w_old = operands(M, 9, 3, G, 37, torch.float32, variant)
        e = e.to(low)
        got, ref = e.clone(), e.clone()
        assert kernels.supports(*(t for t in (got, A, coef, pre, w, w_old) if t is not None))
        with threads(n_threads):
            g = kernels.trace_step(got, A, coef, pre, w, w_old)
        with kernels.disabled():
            g_ref = kernels.trace_step(ref, A, coef, pre, w, w_old)
        if M == 1 and coef is None:
            assert_same_bits(got, ref)
        else:
            magnitude, _ = naive(e.abs(), A.abs(), None if coef is None else coef.abs(), pre.abs(),
                                 None, None)  # fmt: skip
            diff = (got.double() - ref.double()).abs()
            bound = ulp(torch.maximum(got.abs(), ref.abs()), low) + 2.0**-21 * magnitude
            assert bool((diff <= bound).all())
            assert float((bits(got) != bits(ref)).double().mean()) < 0.01  # rare
        if g is not None or g_ref is not None:
            assert g is not None and g_ref is not None
            assert_matches(g, g_ref.double(), torch.float32)


@pytest.mark.parametrize("M", [1, 2])
def test_non_contiguous_inputs_give_the_same_values(M: int) -> None:
    N, B, G, m = 6, 4, 2, 5
    ops = operands(M, N, B, G, m, torch.float64, (True, True, True))
    e, A, coef, pre, w, w_old = ops
    assert coef is not None and w is not None and w_old is not None
    want_e, want_g = naive(*ops)
    # the same values behind other strides: e every other column of a wider buffer, the rest
    # transposed copies
    buffer = torch.full((M, N, B, 2 * G * m), 7.0, dtype=torch.float64)
    strided_e = buffer[..., ::2]
    strided_e.copy_(e)
    strided = (
        A.transpose(2, 3).contiguous().transpose(2, 3),
        coef.transpose(1, 3).contiguous().transpose(1, 3),
        pre.T.contiguous().T,
        w.transpose(0, 2).contiguous().transpose(0, 2),
        w_old.transpose(1, 2).contiguous().transpose(1, 2),
    )
    assert not any(t.is_contiguous() for t in (strided_e, *strided))
    g = kernels.trace_step(strided_e, *strided)
    assert g is not None
    assert_matches(strided_e, want_e, torch.float64)
    assert_matches(g, want_g, torch.float64)
    assert bool((buffer[..., 1::2] == 7.0).all())  # the columns in between are untouched


def test_an_empty_batch_contracts_to_zeros() -> None:
    e, A, coef, pre, w, w_old = operands(1, 3, 0, 2, 4, torch.float64, (True, True, True))
    g = kernels.trace_step(e, A, coef, pre, w, w_old)
    assert g is not None and g.shape == (3, 8) and bool((g == 0).all())


BAD_SHAPES: dict[str, Callable[[Operands], Operands]] = {
    "A": lambda o: (o[0], o[1][:, :, :2], o[2], o[3], o[4], o[5]),
    "A's M": lambda o: (o[0], o[1][:1], o[2], o[3], o[4], o[5]),
    "coef": lambda o: (o[0], o[1], o[2][:, :, :1], o[3], o[4], o[5]),  # type: ignore[index]
    "pre's B": lambda o: (o[0], o[1], o[2], o[3][:2], o[4], o[5]),
    "pre's m": lambda o: (o[0], o[1], o[2], o[3][:, :4], o[4], o[5]),
    "C not G·m": lambda o: (o[0][..., :-1], o[1], None, o[3], o[4], o[5]),
    "w": lambda o: (o[0], o[1], o[2], o[3], o[4][:, :, :2], o[5]),  # type: ignore[index]
    "w_old": lambda o: (o[0], o[1], o[2], o[3], o[4], o[5][0]),  # type: ignore[index]
    "e 3-d": lambda o: (o[0][0], o[1], o[2], o[3], o[4], o[5]),
}


@pytest.mark.parametrize("case", list(BAD_SHAPES))
def test_shapes_that_do_not_fit_raise_naming_the_expected_ones(case: str) -> None:
    good = operands(2, 4, 3, 2, 5, torch.float64, (True, True, True))
    check_step(good, torch.float64)  # the control: the unaltered operands are accepted
    bad = BAD_SHAPES[case](good)
    before = bad[0].clone()
    with pytest.raises(ValueError, match=r"expects e \(M, N, B, G·m\), A \(M, M, B, N\)") as err:
        kernels.trace_step(*bad)
    assert "got e (" in str(err.value)
    assert torch.equal(bad[0], before)  # nothing was written


def test_factors_of_another_dtype_or_device_raise() -> None:
    e, A, coef, pre, w, w_old = operands(1, 4, 3, 1, 5, torch.float64, (True, True, False))
    with pytest.raises(ValueError, match="of one floating dtype"):
        kernels.trace_step(e, A, coef, pre.float(), w)
    with pytest.raises(ValueError, match="of one floating dtype"):
        kernels.trace_step(e.long(), A, coef, pre, w)
    with pytest.raises(ValueError, match="on e's device"):
        kernels.trace_step(e, A, coef, pre.to("meta"), w)


def test_supports_and_disabled() -> None:
    e, A, coef, pre, _, _ = operands(1, 4, 3, 1, 5, torch.float64, (True, False, False))
    assert not kernels.supports()
    assert not kernels.supports(e.half(), A.half())
    assert not kernels.supports(e, A.float())
    assert not kernels.supports(e, A.transpose(2, 3))
    assert not kernels.supports(e.expand(kernels.MAX_M + 1, -1, -1, -1).contiguous(), A)
    assert coef is not None and kernels.supports(e, A, coef, pre) == kernels.available()
    was = kernels.ENABLED
    with kernels.disabled():
        assert not kernels.ENABLED and not kernels.available() and not kernels.supports(e, A)
    assert was == kernels.ENABLED


@pytest.mark.parametrize("low", LOW)
def test_supports_takes_a_16_bit_trace_with_float32_factors_only(low: torch.dtype) -> None:
    e, A, coef, pre, w, _ = operands(2, 4, 3, 1, 5, torch.float32, (True, True, False))
    assert coef is not None and w is not None
    e16 = e.to(low)
    assert kernels.supports(e16, A, coef, pre, w) == kernel_takes(low)
    assert kernels.supports(e16) == kernel_takes(low)
    assert not kernels.supports(e16, A.double(), coef.double())  # float64 factors
    assert not kernels.supports(e16, A.to(low))  # 16-bit factors
    assert not kernels.supports(e16, A, coef.to(low))
    assert not kernels.supports(e16, A, coef, pre.T.contiguous().T)  # strided factor
    strided = e16.transpose(2, 3).contiguous().transpose(2, 3)
    assert not kernels.supports(strided, A)
    assert not kernels.supports(e.to(low), e16)  # (a 16-bit trace as a factor)
    assert not kernels.supports(e16[:1].expand(kernels.MAX_M + 1, -1, -1, -1).contiguous(), A)
    if kernels.available():  # float16 is in the kernel exactly when it has a conversion
        assert (torch.float16 in kernels._entry_points()) == (
            kernels.float16_conversion() is not None
        )
        assert torch.bfloat16 in kernels._entry_points()
        assert kernels.bfloat16_conversion() in ("AVX512-BF16", "bits")
    with kernels.disabled():
        assert not kernels.supports(e16, A, coef, pre, w)


@needs_kernel
@pytest.mark.usefixtures("c_path_only")
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_kernel_keeps_the_callers_denormal_mode_in_every_thread(
    dtype: torch.dtype, n_threads: int
) -> None:
    """A bfloat16 trace shares float32's exponent range: its subnormals come from the float32
    arithmetic (flushed or not), and are then stored as they are."""
    tiny = torch.finfo(torch.float32).tiny

    def subnormals(flush: bool) -> int:
        e = torch.full((1, 64, 8, 16), 4 * tiny).to(dtype)  # normal; × 0.1 makes it subnormal
        A = torch.full((1, 1, 8, 64), 0.1)
        coef, pre = torch.zeros(1, 8, 1, 64), torch.zeros(8, 16)
        with threads(n_threads):
            if flush:
                with flush_denormals():
                    kernels.trace_step(e, A, coef, pre)
            else:
                kernels.trace_step(e, A, coef, pre)
        return int(((e != 0) & (e.abs() < tiny)).sum())

    was = denormals_flushed()  # another test may have flushed process-wide
    torch.set_flush_denormal(False)
    try:
        assert subnormals(flush=False) == 64 * 8 * 16  # the control: IEEE arithmetic keeps them
        assert subnormals(flush=True) == 0
    finally:
        torch.set_flush_denormal(was)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_custom_ops_pass_opcheck(dtype: torch.dtype) -> None:
    e, A, coef, pre, w, w_old = operands(2, 3, 2, 2, 3, torch.float32, (True, True, True))
    e = e.to(dtype)
    torch.library.opcheck(torch.ops.ostl.trace_update.default, (e.clone(), A, coef, pre))
    torch.library.opcheck(
        torch.ops.ostl.trace_update_contract.default, (e.clone(), A, None, pre, w, w_old)
    )


def step_twice(
    e: Tensor, A: Tensor, coef: Tensor, pre: Tensor, w: Tensor, w_old: Tensor
) -> tuple[Tensor, Tensor]:
    """Two steps (update + contract, then update only) with a little arithmetic around them."""
    g = kernels.trace_step(e, A * 0.5, coef, pre, w, w_old)
    assert g is not None
    kernels.trace_step(e, A, None, pre + 1.0)
    return g * 2.0, e.sum(dim=(0, 2))


def test_torch_compile_traces_the_op_in_one_graph_and_computes_the_same() -> None:
    ops = operands(2, 5, 3, 2, 4, torch.float32, (True, True, True))
    e, A, coef, pre, w, w_old = ops
    assert coef is not None and w is not None and w_old is not None
    want_e = e.clone()
    want = step_twice(want_e, A, coef, pre, w, w_old)
    assert float(want[0].abs().max()) > 0

    graphs: list[torch.fx.GraphModule] = []

    def capture(gm: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Callable[..., Any]:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    try:
        got_e = e.clone()
        torch.compile(step_twice, backend=capture, fullgraph=True)(got_e, A, coef, pre, w, w_old)
        assert len(graphs) == 1
        targets = {node.target for node in graphs[0].graph.nodes}
        for op in (torch.ops.ostl.trace_update_contract, torch.ops.ostl.trace_update):
            assert targets & {op, op.default}, targets  # the custom op, not its insides

        got_e = e.clone()
        got = torch.compile(step_twice, fullgraph=True)(got_e, A, coef, pre, w, w_old)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(got_e, want_e, rtol=1e-6, atol=1e-6)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}
    )


def test_without_a_compiler_one_warning_and_the_pytorch_path(tmp_path: Path) -> None:
    code = (
        "import warnings, torch\n"
        "from ostl import kernels\n"
        "torch.manual_seed(0)\n"
        "e, A, c = torch.randn(1, 5, 3, 8), torch.randn(1, 1, 3, 5), torch.randn(1, 3, 2, 5)\n"
        "pre, w = torch.randn(3, 4), torch.randn(1, 3, 5)\n"
        "want = torch.einsum('lbn,lnbc->lnbc', A[0], e)"
        " + torch.einsum('ibkn,bj->inbkj', c, pre).reshape(1, 5, 3, 8)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    g = kernels.trace_step(e, A, c, pre, w)\n"
        "    kernels.trace_step(e.clone(), A, c, pre)\n"
        "    assert not kernels.available()\n"
        "msgs = [str(x.message) for x in caught if issubclass(x.category, RuntimeWarning)]\n"
        "assert len(msgs) == 1, msgs\n"
        "torch.testing.assert_close(e, want)\n"
        "torch.testing.assert_close(g, torch.einsum('bn,nbc->nc', w[0], want[0]))\n"
        "assert want.abs().max() > 0 and g.abs().max() > 0\n"
        "print(msgs[0])\n"
    )
    out = run_python(code, CC=str(tmp_path / "no-such-compiler"), OSTL_KERNEL_CACHE=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "fused trace kernel could not be built" in out.stdout
    assert "no C compiler found" in out.stdout
    assert list(tmp_path.iterdir()) == []


@needs_kernel
def test_the_kernel_is_compiled_once_into_its_cache(tmp_path: Path) -> None:
    code = "from ostl import kernels; assert kernels.available(); print(kernels._load()._name)"
    first = run_python(code, OSTL_KERNEL_CACHE=str(tmp_path))
    assert first.returncode == 0, first.stderr
    built = list(tmp_path.glob("trace_step-*.so"))
    assert len(built) == 1 and first.stdout.strip() == str(built[0])
    stamp = built[0].stat().st_mtime_ns
    again = run_python(code, OSTL_KERNEL_CACHE=str(tmp_path))
    assert again.returncode == 0 and again.stdout == first.stdout
    assert built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [built[0].name]  # no temporary left


def test_ostl_kernels_0_turns_it_off(tmp_path: Path) -> None:
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "from ostl import kernels; assert not kernels.ENABLED and not kernels.available()\n"
    )
    out = run_python(code, OSTL_KERNELS="0", OSTL_KERNEL_CACHE=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.iterdir()) == []  # no build was attempted
