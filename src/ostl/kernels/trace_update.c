/* Fused diagonal-trace update and contraction (ostl.kernels; see its docstring).
 *
 * One pass over a neuron-major trace e[n, b, c] (N neurons, B samples, C = G * m columns):
 *
 *     e[n, b, k*m + j] <- a[n, b] * e[n, b, k*m + j] + coef[n, b, k] * pre[b, j]
 *     g[n, k*m + j]     = sum_b w[n, b] * e[n, b, k*m + j]        (only if w and g are given)
 *
 * PyTorch needs three passes for the same work (scale, add the immediate term, a batched
 * matrix product); this reads and writes every trace element once. All arrays are contiguous
 * and row-major. The caller's floating-point control word (denormals flushed or not) is copied
 * to every worker thread for the call and restored afterwards.
 */
#include <stddef.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#define OSTL_DEFINE_KERNEL(NAME, T)                                                        \
    static void NAME##_rows(long n0, long n1, long B, long G, long m, T *restrict e,       \
                            const T *restrict a, const T *restrict coef,                   \
                            const T *restrict pre, const T *restrict w, T *restrict g) {   \
        const long C = G * m;                                                              \
        for (long n = n0; n < n1; ++n) {                                                   \
            T *restrict gn = g ? g + n * C : NULL;                                         \
            if (gn)                                                                        \
                for (long c = 0; c < C; ++c) gn[c] = 0;                                    \
            for (long b = 0; b < B; ++b) {                                                 \
                const long nb = n * B + b;                                                 \
                const T an = a[nb];                                                        \
                const T *restrict pb = pre + b * m;                                        \
                for (long k = 0; k < G; ++k) {                                             \
                    const T ck = coef[nb * G + k];                                         \
                    T *restrict ek = e + nb * C + k * m;                                   \
                    if (gn) {                                                              \
                        const T wn = w[nb];                                                \
                        T *restrict gk = gn + k * m;                                       \
                        for (long j = 0; j < m; ++j) {                                     \
                            const T v = an * ek[j] + ck * pb[j];                           \
                            ek[j] = v;                                                     \
                            gk[j] += wn * v;                                               \
                        }                                                                  \
                    } else {                                                               \
                        for (long j = 0; j < m; ++j) ek[j] = an * ek[j] + ck * pb[j];      \
                    }                                                                      \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
                                                                                           \
    void NAME(int threads, long N, long B, long G, long m, T *e, const T *a, const T *coef, \
              const T *pre, const T *w, T *g) {                                            \
        if (threads <= 1 || N < 2) {                                                       \
            NAME##_rows(0, N, B, G, m, e, a, coef, pre, w, g);                             \
            return;                                                                        \
        }                                                                                  \
        OSTL_SAVE_CSR                                                                      \
        _Pragma("omp parallel num_threads(threads)") {                                     \
            OSTL_ENTER_CSR                                                                 \
            _Pragma("omp for schedule(static)") for (long n = 0; n < N; ++n)               \
                NAME##_rows(n, n + 1, B, G, m, e, a, coef, pre, w, g);                     \
            OSTL_LEAVE_CSR                                                                 \
        }                                                                                  \
    }

#if defined(__SSE__)
#define OSTL_SAVE_CSR const unsigned int csr = _mm_getcsr();
#define OSTL_ENTER_CSR                  \
    const unsigned int own = _mm_getcsr(); \
    _mm_setcsr(csr);
#define OSTL_LEAVE_CSR _mm_setcsr(own);
#else
#define OSTL_SAVE_CSR
#define OSTL_ENTER_CSR
#define OSTL_LEAVE_CSR
#endif

OSTL_DEFINE_KERNEL(ostl_trace_update_f32, float)
OSTL_DEFINE_KERNEL(ostl_trace_update_f64, double)
