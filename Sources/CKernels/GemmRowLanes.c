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
// or [o0, o1) share, and on either path below.
//
// Without AVX-512 (AVX2 + FMA: 16 registers of 8 lanes) a tile holds at most 12 accumulators
// (32 rows × 3 weight rows), so all of k per tile would re-read x^T for every 3 weight rows. That
// path walks k in blocks (x^T slices of ≤ 64 KB) over blocks of 36 outputs, keeping their partial
// sums in a small buffer between k blocks (stored and reloaded exactly, so the bits are the
// one-lane k-order sums as above); past 32 rows each tile runs once per 32-row chunk. It also takes
// bf16 / f16 weights (where AVX-512's `GemmNT` would): each block's weight segments are widened
// into an L1/L2-sized f32 buffer first (exactly), then the same tiles run on it.
#include "CKernels.h"
#include "CPUCheck.h"

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

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define NR2_MAX 7
#define V2_MAX 4
/// Outputs per block, whose partial sums stay in a stack buffer across the k blocks (with NR2_MAX
/// slack rows past them for a last tile's repeated rows).
#define OB2 36

/// Weight rows per AVX2 tile for V 8-lane vectors (of the first 32-row chunk): the accumulators,
/// one broadcast per weight row and the x vector in flight fill the 16 registers (7 + 7 + 1,
/// 10 + 5 + 1, 9 + 3 + 1, 12 + 3 + 1).
#define NR2_FOR(V) ((V) == 1 ? 7 : (V) == 2 ? 5 : 3)

/// One AVX2 tile over `steps` of k (one k block: xt and each w[j] start at its first element): NR
/// weight rows × V vectors of rows, partial sums loaded from and stored back to `acc` (row j of
/// the tile at acc + j·W).
AVX2 INLINE void tile2(const int V, const int NR, const float *xt, long W, const float *const w[], long steps,
                       float *acc) {
    __m256 a[NR2_MAX][V2_MAX];
    UNROLL for (int j = 0; j < NR; j++) UNROLL for (int v = 0; v < V; v++) a[j][v] = _mm256_loadu_ps(acc + j * W + 8 * v);
    for (long i = 0; i < steps; i++) {
        // Each weight row's line 512 bytes on, once per line (k blocks are multiples of 16 long).
        if ((i & 15) == 0) UNROLL for (int j = 0; j < NR; j++) _mm_prefetch((const char *)(w[j] + i + 128), _MM_HINT_T0);
        // Broadcasts first, then one x vector at a time: 16 registers without spills (x vectors
        // held across the weight rows spilled under clang).
        __m256 b[NR2_MAX];
        UNROLL for (int j = 0; j < NR; j++) b[j] = _mm256_broadcast_ss(w[j] + i);
        UNROLL for (int v = 0; v < V; v++) {
            const __m256 xv = _mm256_loadu_ps(xt + i * W + 8 * v);
            UNROLL for (int j = 0; j < NR; j++) a[j][v] = _mm256_fmadd_ps(b[j], xv, a[j][v]);
        }
    }
    UNROLL for (int j = 0; j < NR; j++) UNROLL for (int v = 0; v < V; v++) _mm256_storeu_ps(acc + j * W + 8 * v, a[j][v]);
}

#define TILE2_FOR(V, NR)                                                                               \
    AVX2 __attribute__((noinline)) static void tile2_##V##_##NR(const float *xt, long W, const float *const w[], \
                                                                long steps, float *acc) {              \
        tile2(V, NR, xt, W, w, steps, acc);                                                            \
    }
TILE2_FOR(1, 7)
TILE2_FOR(2, 5)
TILE2_FOR(3, 3)
TILE2_FOR(4, 3)
TILE2_FOR(1, 3)
TILE2_FOR(2, 3)

/// The tile for a chunk of V vectors when the first chunk has `vecs` (NR follows the first chunk).
AVX2 static void tile2_for(long vecs, int V, const float *xt, long W, const float *const w[], long steps,
                           float *acc) {
    if (vecs < 4) {
        switch (V) {
        case 1: tile2_1_7(xt, W, w, steps, acc); return;
        case 2: tile2_2_5(xt, W, w, steps, acc); return;
        default: tile2_3_3(xt, W, w, steps, acc); return;
        }
    }
    switch (V) {
    case 1: tile2_1_3(xt, W, w, steps, acc); return;
    case 2: tile2_2_3(xt, W, w, steps, acc); return;
    case 3: tile2_3_3(xt, W, w, steps, acc); return;
    default: tile2_4_3(xt, W, w, steps, acc); return;
    }
}

/// The most k steps of a 16-bit block, so its widened weights (OB2 rows) stay within 64 KB.
#define KB16 448

/// Weights [i0, i1) of `count` 16-bit rows (row r at w16 + r·k) widened exactly into f32 rows
/// `stride` apart.
AVX2 static void widen_block(const uint16_t *w16, int dtype, long k, long count, long i0, long i1, float *out,
                             long stride) {
    for (long r = 0; r < count; r++) {
        const uint16_t *src = w16 + r * k;
        float *dst = out + r * stride;
        long i = i0;
        for (; i + 8 <= i1; i += 8) {
            const __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
            const __m256 f = dtype == UNIMOE_GEMM_BF16
                                 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                                 : _mm256_cvtph_ps(h);
            _mm256_storeu_ps(dst + i - i0, f);
        }
        for (; i < i1; i++) {
            float f;
            if (dtype == UNIMOE_GEMM_BF16) {
                const uint32_t bits = (uint32_t)src[i] << 16;
                __builtin_memcpy(&f, &bits, 4);
            } else {
                f = _cvtsh_ss(src[i]);
            }
            dst[i - i0] = f;
        }
    }
}

/// The AVX2 path: blocks of OB2 outputs; per block, k in blocks whose x^T slice is ≤ 64 KB (on a
/// Zen 3 EPYC, 32 rows: 512-step blocks 77 GFLOP/s, 128-step 67, all of k 63; 64 rows: 64-step
/// 44, 256-step 72), each block's tiles accumulating into `acc`; the block's sums then scattered
/// into y. 16-bit weights: k blocks of at most KB16 steps, each block's rows widened first.
static void row_lanes_avx2(const float *xt, long rows, const void *w, int dtype, long k, long o0, long o1,
                           float *y, long ldy) {
    const long vecs = (rows + 7) / 8, W = 8 * vecs;
    const int NR = NR2_FOR(vecs < 4 ? vecs : 4);
    long kb = 65536 / (W * 4) & ~15L;
    if (kb < 16) kb = 16;
    if (dtype != UNIMOE_GEMM_F32 && kb > KB16) kb = KB16;
    // Tiles past a block's last real output repeat it into the slack rows.
    float acc[(OB2 + NR2_MAX) * 8 * 2 * V2_MAX];
    float wide[dtype == UNIMOE_GEMM_F32 ? 1 : OB2 * KB16];
    for (long ob = o0; ob < o1; ob += OB2) {
        const long n = o1 - ob < OB2 ? o1 - ob : OB2;
        for (long t = 0; t < (n + NR) * W; t++) acc[t] = 0;
        for (long i0 = 0; i0 < k; i0 += kb) {
            const long i1 = i0 + kb < k ? i0 + kb : k;
            if (dtype != UNIMOE_GEMM_F32) widen_block((const uint16_t *)w + ob * k, dtype, k, n, i0, i1, wide, kb);
            for (long j0 = 0; j0 < n; j0 += NR) {
                const long nr = n - j0 < NR ? n - j0 : NR;
                const float *wr[NR2_MAX];
                // Each tile runs over this k block's steps 0..<(i1 - i0), from its first element on.
                for (int j = 0; j < NR; j++) {
                    const long row = j0 + (j < nr ? j : nr - 1);
                    wr[j] = dtype == UNIMOE_GEMM_F32 ? (const float *)w + (ob + row) * k + i0 : wide + row * kb;
                }
                for (long c = 0; c < vecs; c += V2_MAX)
                    tile2_for(vecs, (int)(vecs - c < V2_MAX ? vecs - c : V2_MAX), xt + i0 * W + 8 * c, W, wr,
                              i1 - i0, acc + j0 * W + 8 * c);
            }
        }
        for (long j = 0; j < n; j++)
            for (long r = 0; r < rows; r++) y[r * ldy + ob + j] = acc[j * W + r];
    }
}

static int has_avx2_fma(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

static int avx2_checked = -1;

long unimoe_gemm_row_lanes_max_rows(void) {
    return unimoe_gemm_nt_available() || unimoe_check_once(&avx2_checked, has_avx2_fma) ? 16 * V_MAX : 0;
}

/// Lanes per vector of the path this CPU takes, which x^T's rows are padded to.
static long lane_width(void) { return unimoe_gemm_nt_available() ? 16 : 8; }

long unimoe_gemm_row_lanes_packed_count(long rows, long k) {
    const long L = lane_width();
    return k * L * ((rows + L - 1) / L);
}

void unimoe_gemm_row_lanes_pack(const float *x, long rows, long ldx, long k, float *xt) {
    const long L = lane_width(), width = L * ((rows + L - 1) / L);
    for (long i = 0; i < k; i++) {
        float *col = xt + i * width;
        for (long r = 0; r < rows; r++) col[r] = x[r * ldx + i];
        for (long r = rows; r < width; r++) col[r] = 0;
    }
}

int unimoe_gemm_row_lanes(const float *xt, long rows, const void *weights, int dtype, long k, long o0, long o1,
                          float *y, long ldy) {
    const int avx512 = unimoe_gemm_nt_available();
    if (rows > unimoe_gemm_row_lanes_max_rows() || rows * ldy > 0x7FFFFFFF) return 0;
    if (dtype < UNIMOE_GEMM_F32 || dtype > UNIMOE_GEMM_F16) return 0;
    if (avx512 && dtype != UNIMOE_GEMM_F32) return 0;
    if (rows <= 0 || o1 <= o0) return 1;
    if (!avx512) {
        row_lanes_avx2(xt, rows, weights, dtype, k, o0, o1, y, ldy);
        return 1;
    }
    const float *w = (const float *)weights;
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

long unimoe_gemm_row_lanes_max_rows(void) { return 0; }
long unimoe_gemm_row_lanes_packed_count(long rows, long k) { return k * 16 * ((rows + 15) / 16); }
void unimoe_gemm_row_lanes_pack(const float *x, long rows, long ldx, long k, float *xt) {
    (void)x; (void)rows; (void)ldx; (void)k; (void)xt;
}
int unimoe_gemm_row_lanes(const float *xt, long rows, const void *weights, int dtype, long k, long o0, long o1,
                          float *y, long ldy) {
    (void)xt; (void)rows; (void)weights; (void)dtype; (void)k; (void)o0; (void)o1; (void)y; (void)ldy;
    return 0;
}

#endif
