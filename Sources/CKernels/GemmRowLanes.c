// y = x · wᵀ for f32 weights and 13–64 activation rows, the rows in the vector lanes (see
// include/CKernels.h).
//
// Why a second form beside GemmNT.c: there each output is a dot product, so a tile re-reads its
// activation rows from L2 for every 4 weight rows (6 rows × 16 floats per 24 FMAs), which caps it
// near 60–80 GFLOP/s per core once x outgrows L1; sgemm packs the whole weight matrix on every call.
// Here the activation is transposed once per call (k × 16·V floats, V = ⌈rows / 16⌉), every weight
// is broadcast from where it lies in its row, and one tile covers all the rows: NR weight rows ×
// V lane vectors of accumulators (24 in registers), so each weight is read from memory exactly once
// and x^T streams from L2 at 64·V bytes per 12–24 FMAs.
//
// Each output is one lane summed in k order: the same bits for any row count up to 64, tile split
// or [o0, o1) share.
#include "CKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("clang loop unroll(full)")
#define NR_MAX 24
#define V_MAX 4

/// Weight rows per tile for V lane vectors: 24 accumulators, so the x vectors and a broadcast fit
/// beside them in the 32 registers.
#define NR_FOR(V) ((V) == 1 ? 24 : (V) == 2 ? 12 : (V) == 3 ? 8 : 6)

/// One k step: the V vectors of x^T at `xk` times the broadcast weight of each row at `i`.
AVX512 INLINE void step(const int V, const int NR, const float *xk, const float *const w[], long i,
                        __m512 acc[NR_MAX][V_MAX]) {
    __m512 xv[V_MAX];
    UNROLL for (int v = 0; v < V; v++) xv[v] = _mm512_loadu_ps(xk + 16 * v);
    UNROLL for (int j = 0; j < NR; j++) {
        const __m512 b = _mm512_set1_ps(w[j][i]);
        UNROLL for (int v = 0; v < V; v++) acc[j][v] = _mm512_fmadd_ps(b, xv[v], acc[j][v]);
    }
}

/// One tile: weight rows w[0..<NR] (past the `nr` real ones they repeat the last, unstored) against
/// all rows, into y's columns 0..<nr (row r at y + r·ldy).
AVX512 INLINE void tile(const int V, const int NR, int nr, const float *xt, const float *const w[], long k,
                        long rows, float *y, long ldy) {
    __m512 acc[NR_MAX][V_MAX];
    UNROLL for (int j = 0; j < NR; j++) UNROLL for (int v = 0; v < V; v++) acc[j][v] = _mm512_setzero_ps();
    const long width = 16 * V;
    long i = 0;
    for (; i + 16 <= k; i += 16) {
        // The line each weight row reads 16 steps from now (the hardware prefetchers do not follow
        // this many streams).
        UNROLL for (int j = 0; j < NR; j++) _mm_prefetch((const char *)(w[j] + i + 256), _MM_HINT_T0);
        for (int u = 0; u < 16; u++) step(V, NR, xt + (i + u) * width, w, i + u, acc);
    }
    for (; i < k; i++) step(V, NR, xt + i * width, w, i, acc);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    UNROLL for (int v = 0; v < V; v++) {
        const long left = rows - 16 * v;
        const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
        const __m512i at = _mm512_mullo_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(16 * v)),
                                              _mm512_set1_epi32((int)ldy));
        UNROLL for (int j = 0; j < NR; j++)
            if (j < nr) _mm512_mask_i32scatter_ps(y + j, m, at, acc[j][v], 4);
    }
}

#define TILE_FOR(V)                                                                                    \
    AVX512 __attribute__((noinline)) static void tile_##V(int nr, const float *xt, const float *const w[], \
                                                          long k, long rows, float *y, long ldy) {      \
        tile(V, NR_FOR(V), nr, xt, w, k, rows, y, ldy);                                                \
    }
TILE_FOR(1)
TILE_FOR(2)
TILE_FOR(3)
TILE_FOR(4)

long unimoe_gemm_row_lanes_packed_count(long rows, long k) { return k * 16 * ((rows + 15) / 16); }

void unimoe_gemm_row_lanes_pack(const float *x, long rows, long ldx, long k, float *xt) {
    const long width = 16 * ((rows + 15) / 16);
    for (long i = 0; i < k; i++) {
        float *col = xt + i * width;
        for (long r = 0; r < rows; r++) col[r] = x[r * ldx + i];
        for (long r = rows; r < width; r++) col[r] = 0;
    }
}

int unimoe_gemm_row_lanes(const float *xt, long rows, const float *w, long k, long o0, long o1, float *y,
                          long ldy) {
    if (!unimoe_gemm_nt_available() || rows > 16 * V_MAX || rows * ldy > 0x7FFFFFFF) return 0;
    if (rows <= 0 || o1 <= o0) return 1;
    const int V = (int)((rows + 15) / 16), NR = NR_FOR(V);
    for (long o = o0; o < o1; o += NR) {
        const int nr = (int)(o1 - o < NR ? o1 - o : NR);
        const float *wr[NR_MAX];
        for (int j = 0; j < NR; j++) wr[j] = w + (o + (j < nr ? j : nr - 1)) * k;
        switch (V) {
        case 1: tile_1(nr, xt, wr, k, rows, y + o, ldy); break;
        case 2: tile_2(nr, xt, wr, k, rows, y + o, ldy); break;
        case 3: tile_3(nr, xt, wr, k, rows, y + o, ldy); break;
        default: tile_4(nr, xt, wr, k, rows, y + o, ldy); break;
        }
    }
    return 1;
}

#else

long unimoe_gemm_row_lanes_packed_count(long rows, long k) { return k * 16 * ((rows + 15) / 16); }
void unimoe_gemm_row_lanes_pack(const float *x, long rows, long ldx, long k, float *xt) {
    (void)x; (void)rows; (void)ldx; (void)k; (void)xt;
}
int unimoe_gemm_row_lanes(const float *xt, long rows, const float *w, long k, long o0, long o1, float *y,
                          long ldy) {
    (void)xt; (void)rows; (void)w; (void)k; (void)o0; (void)o1; (void)y; (void)ldy;
    return 0;
}

#endif
