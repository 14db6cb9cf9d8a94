/* One step of an eligibility trace and its contraction, in one pass (see ostl.kernels).
 *
 * All arrays are contiguous and row-major; C = G * m:
 *
 *     e    (M, N, B, C)   the trace, updated in place
 *     A    (M, M, B, N)   recursion coefficients
 *     coef (M, B, G, N)   immediate coefficients, or NULL for all ones
 *     pre  (B, m)         presynaptic input
 *     w    (M, B, N)      contraction weights on the new trace, or NULL
 *     wo   (M, B, N)      contraction weights on the old trace, or NULL
 *     g    (N, C)         written when w or wo is given (may be NULL otherwise)
 *
 *     e'[i, n, b, k*m + j] = sum_l A[i, l, b, n] e[l, n, b, k*m + j] + coef[i, b, k, n] pre[b, j]
 *     g[n, c]              = sum_i sum_b w[i, b, n] e'[i, n, b, c] + wo[i, b, n] e[i, n, b, c]
 *
 * Entry points, one per storage format of the trace (the other arrays are of the compute type):
 *
 *     ostl_trace_step_f32    every array float
 *     ostl_trace_step_f64    every array double
 *     ostl_trace_step_bf16   e bfloat16 (its uint16_t bits), the rest float
 *     ostl_trace_step_f16    e IEEE binary16, the rest float; only where the compiler converts
 *                            float16: F16C intrinsics, else _Float16 (ostl_f16_conversion says
 *                            which; NULL: the function is absent)
 *
 * A 16-bit trace element is widened to float, the step is computed exactly as in the float
 * kernel (the same expressions in the same order, so the unrounded values are bit for bit those
 * of ostl_trace_step_f32 on the widened trace, g included), and the new value is rounded to
 * nearest, ties to even, when stored, as torch's `.to(torch.bfloat16)` / `.to(torch.float16)`
 * rounds it: overflow to inf, float16 subnormals, bfloat16 NaN stored as 0xFFFF (torch's
 * choice), float16 NaN with its sign and top payload bits (F16C's). g uses the unrounded values.
 *
 * Every trace element is read and written once. The body is specialised at compile time for
 * each M in 1..OSTL_MAX_M and each combination of coef / w / wo present, so the inner loop over
 * j has no branches and the M-loops are unrolled; `omp simd` vectorises it for float and double
 * (the M rows of a trace never overlap). The 16-bit bodies run the same expressions on GCC/Clang
 * vectors of OSTL_VL floats, converted by vector instructions (AVX-512, AVX2, F16C, AVX512-BF16
 * where -march=native has them), and the last m % OSTL_VL columns one by one. Threads split the
 * neurons (each owns its rows of g: no atomics), and the caller's floating-point control word
 * (denormals flushed or not) is copied to every worker thread for the call and restored
 * afterwards. Built with -std=c11, whose default -ffp-contract=off fuses no multiply-add.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE__) || defined(__F16C__)
#include <immintrin.h>
#endif

#define OSTL_MAX_M 4 /* keep equal to ostl.kernels.MAX_M */
#define OSTL_INLINE static inline __attribute__((always_inline))

#if defined(__SSE__)
#define OSTL_SAVE_CSR const unsigned int csr = _mm_getcsr();
#define OSTL_ENTER_CSR                     \
    const unsigned int own = _mm_getcsr(); \
    _mm_setcsr(csr);
#define OSTL_LEAVE_CSR _mm_setcsr(own);
#else
#define OSTL_SAVE_CSR
#define OSTL_ENTER_CSR
#define OSTL_LEAVE_CSR
#endif

/* ---- 16-bit storage formats ------------------------------------------------------------- */

/* The 16-bit kernels run their column loop on vectors of OSTL_VL floats (GCC/Clang vector
 * extensions: the same C expressions as the scalar code, lane by lane), the columns left over
 * one at a time; each format has a vector and a scalar load (widen to float) and store (round
 * to nearest even). */
#if defined(__AVX512F__)
#define OSTL_VL 16
#elif defined(__AVX__)
#define OSTL_VL 8
#else
#define OSTL_VL 4
#endif
typedef float ostl_vf __attribute__((vector_size(OSTL_VL * 4)));
typedef uint32_t ostl_vu __attribute__((vector_size(OSTL_VL * 4)));
typedef uint16_t ostl_vh __attribute__((vector_size(OSTL_VL * 2)));

OSTL_INLINE ostl_vf ostl_vf_load(const float *p) {
    ostl_vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
OSTL_INLINE void ostl_vf_store(float *p, ostl_vf v) { memcpy(p, &v, sizeof v); }

/* bfloat16: the top half of a float, so widening is exact. Rounding to nearest, ties to even,
 * on the bits (torch's rule, whatever the rounding mode): a carry out of the mantissa rounds up
 * the exponent (to inf past the largest finite value), subnormals round like normals; NaN is
 * stored as 0xFFFF, as torch stores it. */
typedef uint16_t ostl_bf16;

OSTL_INLINE float ostl_bf16_load1(const ostl_bf16 *p) {
    const uint32_t u = (uint32_t)*p << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
OSTL_INLINE void ostl_bf16_store1(ostl_bf16 *p, float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    const uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    *p = (u & 0x7FFFFFFFu) > 0x7F800000u ? (ostl_bf16)0xFFFFu : (ostl_bf16)r;
}
/* widening u16 -> u32 and narrowing u32 (< 2^16) -> u16, with one instruction where there is
 * one (GCC's __builtin_convertvector splits the AVX-512 widening in two) */
OSTL_INLINE ostl_vu ostl_widen(const uint16_t *p) {
#if OSTL_VL == 16
    return (ostl_vu)_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
#elif OSTL_VL == 8 && defined(__AVX2__)
    return (ostl_vu)_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
#else
    ostl_vh h;
    memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, ostl_vu);
#endif
}
OSTL_INLINE void ostl_narrow(uint16_t *p, ostl_vu u) {
#if OSTL_VL == 16
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16((__m512i)u));
#elif OSTL_VL == 8 && defined(__AVX2__)
    const __m256i v = (__m256i)u;
    _mm_storeu_si128((__m128i *)p,
                     _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
#else
    const ostl_vh h = __builtin_convertvector(u, ostl_vh);
    memcpy(p, &h, sizeof h);
#endif
}

OSTL_INLINE ostl_vf ostl_bf16_load(const ostl_bf16 *p) { return (ostl_vf)(ostl_widen(p) << 16); }
/* the bit rule on a vector (the same as ostl_bf16_store1 in every lane) */
OSTL_INLINE void ostl_bf16_store_bits(ostl_bf16 *p, ostl_vf v) {
    const ostl_vu u = (ostl_vu)v;
    const ostl_vu nan = (ostl_vu)(v != v); /* all ones where NaN (one compare) */
    ostl_narrow(p, ((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16) | (nan & 0xFFFFu));
}
#if defined(__AVX512BF16__) && defined(__AVX512DQ__) && OSTL_VL == 16
#define OSTL_BF16_CONVERSION "AVX512-BF16"
/* vcvtneps2bf16 rounds to nearest even like the bit rule, except that it treats subnormal
 * inputs as zero and keeps NaN's payload: a vector holding either takes the bit rule */
OSTL_INLINE void ostl_bf16_store(ostl_bf16 *p, ostl_vf v) {
    if (__builtin_expect(_mm512_fpclass_ps_mask((__m512)v, 0x01 | 0x20 | 0x80) != 0, 0)) {
        ostl_bf16_store_bits(p, v); /* 0x01 quiet NaN, 0x20 subnormal, 0x80 signalling NaN */
        return;
    }
    _mm256_storeu_si256((__m256i *)p, (__m256i)_mm512_cvtneps_pbh((__m512)v));
}
#else
#define OSTL_BF16_CONVERSION "bits"
#define ostl_bf16_store ostl_bf16_store_bits
#endif

/* float16: the F16C instructions (vcvtph2ps / vcvtps2ph, rounding to nearest even by their
 * immediate, not by MXCSR's mode, as torch's vectorised conversion does), else _Float16 (the
 * compiler's conversions, lane by lane; rounding in the current mode, to nearest even unless
 * changed), else no float16 kernel */
#if defined(__F16C__)
#define OSTL_F16_CONVERSION "F16C"
typedef uint16_t ostl_f16;
#define OSTL_F16_ROUND _MM_FROUND_TO_NEAREST_INT
OSTL_INLINE float ostl_f16_load1(const ostl_f16 *p) { return _cvtsh_ss(*p); }
OSTL_INLINE void ostl_f16_store1(ostl_f16 *p, float f) { *p = _cvtss_sh(f, OSTL_F16_ROUND); }
#if OSTL_VL == 16
OSTL_INLINE ostl_vf ostl_f16_load(const ostl_f16 *p) {
    return (ostl_vf)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
OSTL_INLINE void ostl_f16_store(ostl_f16 *p, ostl_vf v) {
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtps_ph((__m512)v, OSTL_F16_ROUND));
}
#else /* OSTL_VL == 8: F16C implies AVX */
OSTL_INLINE ostl_vf ostl_f16_load(const ostl_f16 *p) {
    return (ostl_vf)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
OSTL_INLINE void ostl_f16_store(ostl_f16 *p, ostl_vf v) {
    _mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph((__m256)v, OSTL_F16_ROUND));
}
#endif
#elif defined(__FLT16_MAX__)
#define OSTL_F16_CONVERSION "_Float16"
typedef _Float16 ostl_f16;
OSTL_INLINE float ostl_f16_load1(const ostl_f16 *p) { return (float)*p; }
OSTL_INLINE void ostl_f16_store1(ostl_f16 *p, float f) { *p = (ostl_f16)f; }
OSTL_INLINE ostl_vf ostl_f16_load(const ostl_f16 *p) {
    ostl_vf v;
    for (int q = 0; q < OSTL_VL; ++q) v[q] = (float)p[q];
    return v;
}
OSTL_INLINE void ostl_f16_store(ostl_f16 *p, ostl_vf v) {
    for (int q = 0; q < OSTL_VL; ++q) p[q] = (ostl_f16)v[q];
}
#endif

/* which bfloat16 rounding ostl_trace_step_bf16 uses ("AVX512-BF16", "bits") */
const char *ostl_bf16_conversion(void) { return OSTL_BF16_CONVERSION; }

/* which float16 conversion ostl_trace_step_f16 uses ("F16C", "_Float16"), or NULL if it is
 * not compiled in */
const char *ostl_f16_conversion(void) {
#if defined(OSTL_F16_CONVERSION)
    return OSTL_F16_CONVERSION;
#else
    return NULL;
#endif
}

/* ---- the step ----------------------------------------------------------------------------- */

/* One column: old[] (M values) and p in, upd[] out, g's column accumulated; the arithmetic every
 * kernel shares (the 16-bit ones thereby give the float kernel's unrounded values) */
#define OSTL_COLUMN(T, ZERO, M, HC, HW, HO, old, upd, p, a, ck, wn, on, gkj) \
    for (int i = 0; i < M; ++i) {                                            \
        T v = HC ? ck[i] * p : p;                                            \
        for (int l = 0; l < M; ++l) v += a[i][l] * old[l];                   \
        upd[i] = v;                                                          \
    }                                                                        \
    if (HW || HO) {                                                          \
        T s = ZERO;                                                          \
        for (int i = 0; i < M; ++i) {                                        \
            if (HW) s += wn[i] * upd[i];                                     \
            if (HO) s += on[i] * old[i];                                     \
        }                                                                    \
        gkj += s;                                                            \
    }

/* the factors of neuron n, sample b, held in registers over the row */
#define OSTL_FACTORS(T, M, HW, HO)                                                   \
    T a[OSTL_MAX_M][OSTL_MAX_M], wn[OSTL_MAX_M], on[OSTL_MAX_M];                     \
    for (int i = 0; i < M; ++i) {                                                    \
        for (int l = 0; l < M; ++l) a[i][l] = A[((i * M + l) * B + b) * N + n];      \
        wn[i] = HW ? w[(i * B + b) * N + n] : 0;                                     \
        on[i] = HO ? wo[(i * B + b) * N + n] : 0;                                    \
    }

#define OSTL_COEFS(T, M, HC)                                                         \
    T ck[OSTL_MAX_M];                                                                \
    for (int i = 0; i < M; ++i) ck[i] = HC ? coef[((i * B + b) * G + k) * N + n] : 1;

/* the switch over (M, coef?, w?, wo?) that picks a specialised body */
#define OSTL_ARGS n0, n1, N, B, G, m, e, A, coef, pre, w, wo, g
#define OSTL_CASE(BODY, MM, HC, HW, HO) \
    case (MM) * 8 + (HC) * 4 + (HW) * 2 + (HO): BODY(MM, HC, HW, HO, OSTL_ARGS); return;
#define OSTL_CASES_M(BODY, MM)                                                              \
    OSTL_CASE(BODY, MM, 0, 0, 0) OSTL_CASE(BODY, MM, 0, 0, 1) OSTL_CASE(BODY, MM, 0, 1, 0) \
    OSTL_CASE(BODY, MM, 0, 1, 1) OSTL_CASE(BODY, MM, 1, 0, 0) OSTL_CASE(BODY, MM, 1, 0, 1) \
    OSTL_CASE(BODY, MM, 1, 1, 0) OSTL_CASE(BODY, MM, 1, 1, 1)
#define OSTL_CASES(BODY) \
    OSTL_CASES_M(BODY, 1) OSTL_CASES_M(BODY, 2) OSTL_CASES_M(BODY, 3) OSTL_CASES_M(BODY, 4)

/* the trace stored in the compute type T: read, update and write each element in one loop */
#define OSTL_DEFINE_BODY(NAME, T)                                                            \
    /* neurons n0 <= n < n1; M, HC (coef given), HW (w given), HO (wo given) are constants */ \
    OSTL_INLINE void NAME##_body(const int M, const int HC, const int HW, const int HO,      \
                                 long n0, long n1, long N, long B, long G, long m,           \
                                 T *restrict e, const T *restrict A, const T *restrict coef, \
                                 const T *restrict pre, const T *restrict w,                 \
                                 const T *restrict wo, T *restrict g) {                      \
        const long C = G * m, S = N * B * C; /* S: the stride between trace variables */     \
        for (long n = n0; n < n1; ++n) {                                                     \
            T *restrict gn = (HW || HO) ? g + n * C : NULL;                                  \
            if (HW || HO)                                                                    \
                for (long c = 0; c < C; ++c) gn[c] = 0;                                      \
            for (long b = 0; b < B; ++b) {                                                   \
                OSTL_FACTORS(T, M, HW, HO)                                                   \
                const T *restrict pb = pre + b * m;                                          \
                for (long k = 0; k < G; ++k) {                                               \
                    OSTL_COEFS(T, M, HC)                                                     \
                    T *restrict ek = e + (n * B + b) * C + k * m; /* variable i: ek + i*S */ \
                    T *restrict gk = (HW || HO) ? gn + k * m : NULL;                         \
                    _Pragma("omp simd") for (long j = 0; j < m; ++j) {                       \
                        T old[OSTL_MAX_M], upd[OSTL_MAX_M];                                  \
                        const T p = pb[j];                                                   \
                        for (int i = 0; i < M; ++i) old[i] = ek[i * S + j];                  \
                        OSTL_COLUMN(T, 0, M, HC, HW, HO, old, upd, p, a, ck, wn, on, gk[j])  \
                        for (int i = 0; i < M; ++i) ek[i * S + j] = upd[i];                  \
                    }                                                                        \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }

/* the trace stored in 16 bits (type ST: PREFIX##_load / _store convert OSTL_VL values,
 * PREFIX##_load1 / _store1 one), the rest float: the columns in vectors, the rest one by one */
#define OSTL_DEFINE_BODY16(NAME, ST, PREFIX)                                                    \
    OSTL_INLINE void NAME##_body(const int M, const int HC, const int HW, const int HO,         \
                                 long n0, long n1, long N, long B, long G, long m,              \
                                 ST *restrict e, const float *restrict A,                       \
                                 const float *restrict coef, const float *restrict pre,         \
                                 const float *restrict w, const float *restrict wo,             \
                                 float *restrict g) {                                           \
        const long C = G * m, S = N * B * C;                                                    \
        const ostl_vf vzero = {0};                                                              \
        for (long n = n0; n < n1; ++n) {                                                        \
            float *restrict gn = (HW || HO) ? g + n * C : NULL;                                 \
            if (HW || HO)                                                                       \
                for (long c = 0; c < C; ++c) gn[c] = 0;                                         \
            for (long b = 0; b < B; ++b) {                                                      \
                OSTL_FACTORS(float, M, HW, HO)                                                  \
                const float *restrict pb = pre + b * m;                                         \
                for (long k = 0; k < G; ++k) {                                                  \
                    OSTL_COEFS(float, M, HC)                                                    \
                    ST *restrict ek = e + (n * B + b) * C + k * m;                              \
                    float *restrict gk = (HW || HO) ? gn + k * m : NULL;                        \
                    long j = 0;                                                                 \
                    for (; j + OSTL_VL <= m; j += OSTL_VL) {                                    \
                        ostl_vf old[OSTL_MAX_M], upd[OSTL_MAX_M];                               \
                        const ostl_vf p = ostl_vf_load(pb + j);                                 \
                        ostl_vf gv = (HW || HO) ? ostl_vf_load(gk + j) : vzero;                 \
                        for (int i = 0; i < M; ++i) old[i] = PREFIX##_load(ek + i * S + j);     \
                        OSTL_COLUMN(ostl_vf, vzero, M, HC, HW, HO, old, upd, p, a, ck, wn, on,  \
                                    gv)                                                         \
                        for (int i = 0; i < M; ++i) PREFIX##_store(ek + i * S + j, upd[i]);     \
                        if (HW || HO) ostl_vf_store(gk + j, gv);                                \
                    }                                                                           \
                    for (; j < m; ++j) {                                                        \
                        float old[OSTL_MAX_M], upd[OSTL_MAX_M];                                 \
                        const float p = pb[j];                                                  \
                        for (int i = 0; i < M; ++i) old[i] = PREFIX##_load1(ek + i * S + j);    \
                        OSTL_COLUMN(float, 0, M, HC, HW, HO, old, upd, p, a, ck, wn, on, gk[j]) \
                        for (int i = 0; i < M; ++i) PREFIX##_store1(ek + i * S + j, upd[i]);    \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }

/* the entry point NAME (trace of type ST, factors and g of type T) over NAME##_body */
#define OSTL_DEFINE_ENTRY(NAME, ST, T)                                                       \
    static void NAME##_rows(long M, long n0, long n1, long N, long B, long G, long m, ST *e, \
                            const T *A, const T *coef, const T *pre, const T *w,             \
                            const T *wo, T *g) {                                             \
        switch (M * 8 + (coef != NULL) * 4 + (w != NULL) * 2 + (wo != NULL)) {               \
            OSTL_CASES(NAME##_body)                                                          \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* 0 on success, -1 if M is outside 1..OSTL_MAX_M (nothing is touched then) */           \
    int NAME(int threads, long M, long N, long B, long G, long m, ST *e, const T *A,         \
             const T *coef, const T *pre, const T *w, const T *wo, T *g) {                   \
        if (M < 1 || M > OSTL_MAX_M) return -1;                                              \
        if (threads <= 1 || N < 2) {                                                         \
            NAME##_rows(M, 0, N, N, B, G, m, e, A, coef, pre, w, wo, g);                     \
            return 0;                                                                        \
        }                                                                                    \
        OSTL_SAVE_CSR                                                                        \
        _Pragma("omp parallel num_threads(threads)") {                                       \
            OSTL_ENTER_CSR                                                                   \
            _Pragma("omp for schedule(static)") for (long n = 0; n < N; ++n)                 \
                NAME##_rows(M, n, n + 1, N, B, G, m, e, A, coef, pre, w, wo, g);             \
            OSTL_LEAVE_CSR                                                                   \
        }                                                                                    \
        return 0;                                                                            \
    }

OSTL_DEFINE_BODY(ostl_trace_step_f32, float)
OSTL_DEFINE_ENTRY(ostl_trace_step_f32, float, float)
OSTL_DEFINE_BODY(ostl_trace_step_f64, double)
OSTL_DEFINE_ENTRY(ostl_trace_step_f64, double, double)
OSTL_DEFINE_BODY16(ostl_trace_step_bf16, ostl_bf16, ostl_bf16)
OSTL_DEFINE_ENTRY(ostl_trace_step_bf16, ostl_bf16, float)
#if defined(OSTL_F16_CONVERSION)
OSTL_DEFINE_BODY16(ostl_trace_step_f16, ostl_f16, ostl_f16)
OSTL_DEFINE_ENTRY(ostl_trace_step_f16, ostl_f16, float)
#endif
