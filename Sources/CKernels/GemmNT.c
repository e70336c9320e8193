// Packing-free y = x · wᵀ for a few dozen activation rows (see include/CKernels.h).
//
// Why not sgemm: an expert in prefill sees ~32 rows, and OpenBLAS packs the whole weight matrix
// (11 MB for 1024 × 2816) into its panel layout on every call, which costs about as much time as
// the multiply-adds. Here both operands are read where they lie: a weight row and an activation
// row are both contiguous along k, so each output is a dot product; a 4-weight-row × up-to-6-row
// tile keeps 24 16-lane accumulators in registers and reads each weight line once from memory (the
// tile's other row groups find it in L1).
//
// Every output is summed in the same order wherever it falls in a tile: lane-wise along k (the
// k tail through a masked, zero-filled load), then one fixed reduction tree. So results do not
// depend on the row count, the tile split or how the output rows are shared among threads.
//
// The weights stream from memory once per call, so the first row tile over four weight rows
// prefetches the same lines of the next four. With that this is decode's mat-vec too (`MatVec`).
#include "CKernels.h"
#include "CPUCheck.h"

void unimoe_split_pairs32(const float *x, long k, float *out) {
    for (long b = 0; b < k; b += 32)
        for (int j = 0; j < 16; j++) {
            out[b + j] = b + 2 * j < k ? x[b + 2 * j] : 0;
            out[b + 16 + j] = b + 2 * j + 1 < k ? x[b + 2 * j + 1] : 0;
        }
}

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))
#define NR 4   // weight rows (outputs) per tile
#define MR 6   // activation rows per tile, at most

/// 16 weights from element `i` of a row, widened to f32 (bf16 and f16 exactly); lanes outside `m`
/// read nothing and are zero (the k tail; elsewhere `m` is the constant all-lanes mask, which the
/// compiler turns into plain loads).
AVX512 INLINE __m512 load_w(const void *row, int dtype, long i, __mmask16 m) {
    if (dtype == UNIMOE_GEMM_F32) return _mm512_maskz_loadu_ps(m, (const float *)row + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i);
    if (dtype == UNIMOE_GEMM_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/// One step along k: 16 elements (those in `m`) of each weight row into every row's accumulators.
/// With `pf` (bytes) set, first a prefetch of the line at the same place `pf` further on in each
/// weight row (the next tile's rows), once per 64-byte line.
AVX512 INLINE void step(int dtype, int mr, const float *x, long ldx, const void *const w[NR], long kk,
                        __mmask16 m, __m512 acc[MR][NR], long pf) {
    const long size = dtype == UNIMOE_GEMM_F32 ? 4 : 2;
    if (pf && ((kk * size) & 63) == 0)
        for (int j = 0; j < NR; j++) _mm_prefetch((const char *)w[j] + pf + kk * size, _MM_HINT_T1);
    __m512 wv[NR];
    for (int j = 0; j < NR; j++) wv[j] = load_w(w[j], dtype, kk, m);
    for (int i = 0; i < mr; i++) {
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i * ldx + kk);
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
}

/// The four lane sums of a, b, c, d, in that order: 128-bit quarters (q0 + q2) + (q1 + q3), then
/// within the quarter (l0 + l2) + (l1 + l3) — the same tree for each of the four.
AVX512 INLINE __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
    __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    s = _mm512_add_ps(s, _mm512_permute_ps(s, 0x4E));
    s = _mm512_add_ps(s, _mm512_permute_ps(s, 0xB1));
    return _mm512_castps512_ps128(_mm512_maskz_compress_ps(0x1111, s));
}

/// `step` for bf16 weights, 32 elements (those in the low `m` of them) along k: one 512-bit load
/// per weight row gives its even elements (`<< 16`) and odd ones (`& 0xFFFF0000`) as f32 in two
/// shifts, where widening 16 at a time in natural order takes a shuffle and a shift per 16. The
/// activation comes pair-split to match (`unimoe_split_pairs32`). Bench model bf16, interleaved
/// against natural order: prefill 308–399 tokens/s against 257–369 (8 pairs, 6 won); decode about
/// alike (13 pairs, 8 won, means 46.0 against 44.6).
AVX512 INLINE void step_bf16(int mr, const float *x, long ldx, const void *const w[NR], long kk, __mmask32 m,
                             int whole, __m512 acc[MR][NR], long pf) {
    if (pf)
        for (int j = 0; j < NR; j++) _mm_prefetch((const char *)w[j] + pf + kk * 2, _MM_HINT_T1);
    __m512 we[NR], wo[NR];
    const __m512i high = _mm512_set1_epi32((int)0xFFFF0000);
    for (int j = 0; j < NR; j++) {
        const uint16_t *row = (const uint16_t *)w[j] + kk;
        const __m512i v = whole ? _mm512_loadu_si512((const void *)row) : _mm512_maskz_loadu_epi16(m, row);
        we[j] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        wo[j] = _mm512_castsi512_ps(_mm512_and_si512(v, high));
    }
    for (int i = 0; i < mr; i++) {
        const __m512 xe = _mm512_loadu_ps(x + i * ldx + kk), xo = _mm512_loadu_ps(x + i * ldx + kk + 16);
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_fmadd_ps(xo, wo[j], _mm512_fmadd_ps(xe, we[j], acc[i][j]));
    }
}

/// One tile: `mr` activation rows (x, ldx apart) against the weight rows w[0..<4] (rows past the
/// `nr` real ones repeat the last, their sums are not stored), k elements, into y (ldy apart);
/// `pf` as in `step`.
AVX512 INLINE void tile(int dtype, int mr, int nr, const float *x, long ldx, const void *const w[NR],
                        long k, float *y, long ldy, long pf) {
    __m512 acc[MR][NR];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
    long kk = 0;
    if (dtype == UNIMOE_GEMM_BF16) {
        for (; kk + 32 <= k; kk += 32) step_bf16(mr, x, ldx, w, kk, (__mmask32)0xFFFFFFFF, 1, acc, pf);
        if (kk < k) step_bf16(mr, x, ldx, w, kk, (__mmask32)((1u << (k - kk)) - 1), 0, acc, 0);
    } else {
        for (; kk + 16 <= k; kk += 16) step(dtype, mr, x, ldx, w, kk, (__mmask16)0xFFFF, acc, pf);
        if (kk < k) step(dtype, mr, x, ldx, w, kk, (__mmask16)((1u << (k - kk)) - 1), acc, 0);
    }
    const __mmask8 store = (__mmask8)((1u << nr) - 1);
    for (int i = 0; i < mr; i++)
        _mm_mask_storeu_ps(y + i * ldy, store, reduce4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
}

/// Output rows [o0, o1) against every activation row, for one dtype (a constant after inlining, so
/// each dtype and row count gets its own loop with its accumulators in registers).
AVX512 INLINE void sweep(int dtype, const float *x, long rows, long ldx, const void *w, long k, long o0, long o1,
                         float *y, long ldy) {
    const long size = dtype == UNIMOE_GEMM_F32 ? 4 : 2;
    // Row tiles as even as possible (32 rows: 6, 6, 5, 5, 5, 5), so no tile runs nearly empty.
    const long tiles = (rows + MR - 1) / MR;
    for (long o = o0; o < o1; o += NR) {
        const int nr = (int)(o1 - o < NR ? o1 - o : NR);
        const void *wr[NR];
        for (int j = 0; j < NR; j++) wr[j] = (const char *)w + (o + (j < nr ? j : nr - 1)) * k * size;
        long r = 0;
        for (long t = 0; t < tiles; t++) {
            const int mr = (int)(rows / tiles + (t < rows % tiles ? 1 : 0));
            const float *xr = x + r * ldx;
            float *yr = y + r * ldy + o;
            // The first row tile over these weight rows brings in the next four rows' lines.
            const long pf = t == 0 ? NR * k * size : 0;
            switch (mr) {
            case 1: tile(dtype, 1, nr, xr, ldx, wr, k, yr, ldy, pf); break;
            case 2: tile(dtype, 2, nr, xr, ldx, wr, k, yr, ldy, pf); break;
            case 3: tile(dtype, 3, nr, xr, ldx, wr, k, yr, ldy, pf); break;
            case 4: tile(dtype, 4, nr, xr, ldx, wr, k, yr, ldy, pf); break;
            case 5: tile(dtype, 5, nr, xr, ldx, wr, k, yr, ldy, pf); break;
            default: tile(dtype, 6, nr, xr, ldx, wr, k, yr, ldy, pf); break;
            }
            r += mr;
        }
    }
}

#define SWEEP_FOR(NAME, DT)                                                                           \
    AVX512 __attribute__((noinline)) static void NAME(const float *x, long rows, long ldx, const void *w,  \
                                                      long k, long o0, long o1, float *y, long ldy) {    \
        sweep(DT, x, rows, ldx, w, k, o0, o1, y, ldy);                                                   \
    }
SWEEP_FOR(sweep_f32, UNIMOE_GEMM_F32)
SWEEP_FOR(sweep_bf16, UNIMOE_GEMM_BF16)
SWEEP_FOR(sweep_f16, UNIMOE_GEMM_F16)

static int has_avx512(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

static int avx512_checked = -1;

int unimoe_gemm_nt_available(void) { return unimoe_check_once(&avx512_checked, has_avx512); }

int unimoe_gemm_nt(const float *x, long rows, long ldx, const void *w, int dtype, long k, long o0, long o1,
                   float *y, long ldy) {
    if (!unimoe_gemm_nt_available() || dtype < UNIMOE_GEMM_F32 || dtype > UNIMOE_GEMM_F16) return 0;
    if (rows <= 0 || o1 <= o0) return 1;
    switch (dtype) {
    case UNIMOE_GEMM_F32: sweep_f32(x, rows, ldx, w, k, o0, o1, y, ldy); break;
    case UNIMOE_GEMM_BF16: sweep_bf16(x, rows, ldx, w, k, o0, o1, y, ldy); break;
    default: sweep_f16(x, rows, ldx, w, k, o0, o1, y, ldy); break;
    }
    return 1;
}

#else

int unimoe_gemm_nt_available(void) { return 0; }
int unimoe_gemm_nt(const float *x, long rows, long ldx, const void *w, int dtype, long k, long o0, long o1,
                   float *y, long ldy) {
    (void)x; (void)rows; (void)ldx; (void)w; (void)dtype; (void)k; (void)o0; (void)o1; (void)y; (void)ldy;
    return 0;
}

#endif
