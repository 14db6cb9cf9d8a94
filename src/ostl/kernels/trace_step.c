/* One step of an eligibility trace and its contraction, in one pass (see ostl.kernels).
 *
 * All arrays are contiguous, row-major and of one dtype; C = G * m:
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
 * Every trace element is read and written once. The body is specialised at compile time for
 * each M in 1..OSTL_MAX_M and each combination of coef / w / wo present, so the inner loop over
 * j has no branches and the M-loops are unrolled; `omp simd` vectorises it (the M rows of a
 * trace never overlap). Threads split the neurons (each owns its rows of g: no atomics), and
 * the caller's floating-point control word (denormals flushed or not) is copied to every
 * worker thread for the call and restored afterwards.
 */
#include <stddef.h>
#if defined(__SSE__)
#include <xmmintrin.h>
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

#define OSTL_DEFINE_KERNEL(NAME, T)                                                          \
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
                T a[OSTL_MAX_M][OSTL_MAX_M], wn[OSTL_MAX_M], on[OSTL_MAX_M];                 \
                for (int i = 0; i < M; ++i) {                                                \
                    for (int l = 0; l < M; ++l) a[i][l] = A[((i * M + l) * B + b) * N + n]; \
                    wn[i] = HW ? w[(i * B + b) * N + n] : 0;                                 \
                    on[i] = HO ? wo[(i * B + b) * N + n] : 0;                                \
                }                                                                            \
                const T *restrict pb = pre + b * m;                                          \
                for (long k = 0; k < G; ++k) {                                               \
                    T ck[OSTL_MAX_M];                                                        \
                    for (int i = 0; i < M; ++i)                                              \
                        ck[i] = HC ? coef[((i * B + b) * G + k) * N + n] : 1;                \
                    T *restrict ek = e + (n * B + b) * C + k * m; /* variable i: ek + i*S */ \
                    T *restrict gk = (HW || HO) ? gn + k * m : NULL;                         \
                    _Pragma("omp simd") for (long j = 0; j < m; ++j) {                       \
                        T old[OSTL_MAX_M], upd[OSTL_MAX_M];                                  \
                        const T p = pb[j];                                                   \
                        for (int i = 0; i < M; ++i) old[i] = ek[i * S + j];                  \
                        for (int i = 0; i < M; ++i) {                                        \
                            T v = HC ? ck[i] * p : p;                                        \
                            for (int l = 0; l < M; ++l) v += a[i][l] * old[l];               \
                            upd[i] = v;                                                      \
                        }                                                                    \
                        for (int i = 0; i < M; ++i) ek[i * S + j] = upd[i];                  \
                        if (HW || HO) {                                                      \
                            T s = 0;                                                         \
                            for (int i = 0; i < M; ++i) {                                    \
                                if (HW) s += wn[i] * upd[i];                                 \
                                if (HO) s += on[i] * old[i];                                 \
                            }                                                                \
                            gk[j] += s;                                                      \
                        }                                                                    \
                    }                                                                        \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    static void NAME##_rows(long M, long n0, long n1, long N, long B, long G, long m, T *e,  \
                            const T *A, const T *coef, const T *pre, const T *w,             \
                            const T *wo, T *g) {                                             \
        switch (M * 8 + (coef != NULL) * 4 + (w != NULL) * 2 + (wo != NULL)) {              \
            OSTL_CASES(NAME##_body)                                                          \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* 0 on success, -1 if M is outside 1..OSTL_MAX_M (nothing is touched then) */           \
    int NAME(int threads, long M, long N, long B, long G, long m, T *e, const T *A,          \
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

OSTL_DEFINE_KERNEL(ostl_trace_step_f32, float)
OSTL_DEFINE_KERNEL(ostl_trace_step_f64, double)
