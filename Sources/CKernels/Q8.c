// q8_0 kernels (see include/CKernels.h). The AVX2 path is the one this project is measured on; the
// portable path serves other CPUs and is the readable statement of what both compute.
#include "CKernels.h"
#include "CPUCheck.h"
#include <math.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

static inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }
static inline uint16_t float_to_half(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

void unimoe_q8_quantize(const float *x, long blocks, int8_t *quants, uint16_t *scales) {
    const __m256 signBit = _mm256_set1_ps(-0.0f);
    // roundf(v) == trunc(v + copysign(0.5 - 2^-25, v)) for every float (ties go away from zero).
    const __m256 almostHalf = _mm256_set1_ps(0.49999997f);
    const __m256 lim = _mm256_set1_ps(127.0f);
    for (long b = 0; b < blocks; b++) {
        const float *xb = x + 32 * b;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(signBit, v0), _mm256_andnot_ps(signBit, v1)),
                                 _mm256_max_ps(_mm256_andnot_ps(signBit, v2), _mm256_andnot_ps(signBit, v3)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float d = _mm_cvtss_f32(m4) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        scales[b] = float_to_half(d);
        const __m256 mul = _mm256_set1_ps(id);
        __m256 r[4] = {v0, v1, v2, v3};
        __m256i i[4];
        for (int k = 0; k < 4; k++) {
            __m256 v = _mm256_mul_ps(r[k], mul);
            v = _mm256_add_ps(v, _mm256_or_ps(_mm256_and_ps(v, signBit), almostHalf));
            v = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            v = _mm256_max_ps(_mm256_min_ps(v, lim), _mm256_sub_ps(_mm256_setzero_ps(), lim));
            i[k] = _mm256_cvttps_epi32(v);
        }
        // int32 → int16 → int8 packs work per 128-bit lane; the permute restores element order.
        __m256i s01 = _mm256_packs_epi32(i[0], i[1]), s23 = _mm256_packs_epi32(i[2], i[3]);
        __m256i s = _mm256_packs_epi16(s01, s23);
        s = _mm256_permutevar8x32_epi32(s, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(quants + 32 * b), s);
    }
}

/// Eight lanes of int32 pair sums of x·y over 32 int8 lanes, as floats. `vpmaddubsw` multiplies
/// unsigned by signed bytes, so |x| meets y carrying x's sign; |x| ≤ 128 and |y| ≤ 127 keep each
/// pair sum inside int16.
static inline __m256 dot32(__m256i x, __m256i absX, __m256i y) {
    const __m256i pairs = _mm256_maddubs_epi16(absX, _mm256_sign_epi8(y, x));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/// Bytes ahead of its loads that the weight stream is prefetched (consecutive rows are contiguous,
/// so it is one stream). On the kernel bench's 4096-wide rows 512–2048 measured alike; in the 1B
/// model's decode (rows of 1024 and 2816 bytes, so 1 KB was about one row ahead) 8 KB decodes at
/// 0.77 of the bandwidth ceiling against 0.67 for 1 KB (five interleaved pairs, AVX-512 Xeon;
/// 4 KB 0.74, 16 KB 0.74). Into L2 (`T1`), not L1: q8_0 decodes of the bench model 72.7–84.2
/// tokens/s against 63.9–81.9 for `T0` (four interleaved pairs, each won); a C read loop here with
/// one stream per thread prefetched 4 KB ahead reads 15.0 GB/s on one thread with T1, 13.0 with T0.
/// (4 KB and 8 KB ahead with T1 decode alike.) On a Zen 3 EPYC (AVX2, 2 threads) 16 KB read alike
/// in the kernel bench (2816×1024, 1024×1024, 1024×2816: 22.0–33.9 GB/s against 22.0–32.2).
enum { PREFETCH = 8192 };

/// The end of a row's dot: blocks from `b8` on one at a time into the even accumulator (the tail
/// past the last whole group of 8), then the two accumulators added and summed. Shared by `dotRow`
/// and `dotRow512`, which is what keeps their bits equal.
static inline __attribute__((always_inline))
void finishRow(const int G, const int8_t *w, const uint16_t *dw, long blocks, long b8, const int8_t *x,
               const uint16_t *dx, long k, __m256 acc[][2], float *y, long ldy) {
    for (long b = b8; b < blocks; b++) {
        const __m256i wv = _mm256_loadu_si256((const __m256i *)(w + 32 * b));
        const __m256i absW = _mm256_sign_epi8(wv, wv);
        const float dwb = half_to_float(dw[b]);
        for (int r = 0; r < G; r++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(x + r * k + 32 * b));
            const __m256 sv = _mm256_set1_ps(dwb * half_to_float(dx[r * blocks + b]));
            acc[r][0] = _mm256_fmadd_ps(sv, dot32(wv, absW, xv), acc[r][0]);
        }
    }
    for (int r = 0; r < G; r++) y[r * ldy] = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
}

/// One weight row against G activation rows. Scales are formed 8 blocks at a time (two
/// `vcvtph2ps` and a multiply for 8 blocks), so the per-block work is the int8 dot, its conversion
/// and one FMA with a broadcast scale. Two accumulators per row (even and odd blocks) hide the FMA
/// latency.
static inline __attribute__((always_inline))
void dotRow(const int G, const int8_t *w, const uint16_t *dw, long blocks, const int8_t *x,
            const uint16_t *dx, long k, float *y, long ldy) {
    __m256 acc[4][2];
    for (int r = 0; r < G; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    long b8 = 0;
    for (; b8 + 8 <= blocks; b8 += 8) {
        const __m256 dwv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dw + b8)));
        float s[4][8] __attribute__((aligned(32)));
        for (int r = 0; r < G; r++)
            _mm256_store_ps(s[r], _mm256_mul_ps(dwv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dx + r * blocks + b8)))));
        for (int j = 0; j < 8; j++) {
            const long b = b8 + j;
            if ((j & 1) == 0) _mm_prefetch((const char *)(w + 32 * b + PREFETCH), _MM_HINT_T1);
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(w + 32 * b));
            const __m256i absW = _mm256_sign_epi8(wv, wv);
            for (int r = 0; r < G; r++) {
                const __m256i xv = _mm256_loadu_si256((const __m256i *)(x + r * k + 32 * b));
                acc[r][j & 1] = _mm256_fmadd_ps(_mm256_broadcast_ss(&s[r][j]), dot32(wv, absW, xv), acc[r][j & 1]);
            }
        }
    }
    finishRow(G, w, dw, blocks, b8, x, dx, k, acc, y, ldy);
}

/// Output rows o0..<o1 against a group of `g` (1–4) activation rows with `DOT` (dotRow or
/// dotRow512), the group size a constant in each call so the row's accumulators stay in registers.
#define EACH_OUTPUT(DOT)                                                                             \
    for (long o = o0; o < o1; o++) {                                                                 \
        const int8_t *w = wq + o * k;                                                                \
        const uint16_t *dw = wd + o * blocks;                                                        \
        switch (g) {                                                                                 \
        case 1: DOT(1, w, dw, blocks, x, dx, k, yr + o, ldy); break;                                 \
        case 2: DOT(2, w, dw, blocks, x, dx, k, yr + o, ldy); break;                                 \
        case 3: DOT(3, w, dw, blocks, x, dx, k, yr + o, ldy); break;                                 \
        default: DOT(4, w, dw, blocks, x, dx, k, yr + o, ldy); break;                                \
        }                                                                                            \
    }

#define AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

/// `dotRow` with AVX-512 VNNI, two blocks per 512-bit vector: `vpdpbusd` forms each lane's sum of
/// four products in one instruction (instead of `vpmaddubsw` + `vpmaddwd`), and the activation
/// takes the weight's sign through a mask (AVX-512 has no `vpsignb`). Same bits as `dotRow`: the
/// int32 lane sums are exact either way, lanes 0–7 accumulate the even blocks and 8–15 the odd
/// ones (dotRow's two accumulators), and the tail and the final sum are dotRow's own code (`finishRow`).
AVX512VNNI static inline __attribute__((always_inline))
void dotRow512(const int G, const int8_t *w, const uint16_t *dw, long blocks, const int8_t *x,
               const uint16_t *dx, long k, float *y, long ldy) {
    __m512 acc[4];
    for (int r = 0; r < G; r++) acc[r] = _mm512_setzero_ps();
    // Scale lanes for the pair (2p, 2p + 1) of 8 blocks: 8 × the even block's, 8 × the odd one's.
    const __m512i pairIndex[4] = {
        _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
        _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3),
        _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5),
        _mm512_setr_epi32(6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7)};
    long b8 = 0;
    for (; b8 + 8 <= blocks; b8 += 8) {
        const __m256 dwv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dw + b8)));
        __m512 s[4];
        for (int r = 0; r < G; r++)
            s[r] = _mm512_castps256_ps512(
                _mm256_mul_ps(dwv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dx + r * blocks + b8)))));
        for (int p = 0; p < 4; p++) {
            const long b = b8 + 2 * p;
            _mm_prefetch((const char *)(w + 32 * b + PREFETCH), _MM_HINT_T1);
            const __m512i wv = _mm512_loadu_si512((const void *)(w + 32 * b));
            const __m512i absW = _mm512_abs_epi8(wv);
            const __mmask64 negative = _mm512_movepi8_mask(wv);
            for (int r = 0; r < G; r++) {
                const __m512i xv = _mm512_loadu_si512((const void *)(x + r * k + 32 * b));
                const __m512i signedX = _mm512_mask_sub_epi8(xv, negative, _mm512_setzero_si512(), xv);
                const __m512 dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), absW, signedX));
                acc[r] = _mm512_fmadd_ps(_mm512_permutexvar_ps(pairIndex[p], s[r]), dot, acc[r]);
            }
        }
    }
    __m256 acc2[4][2];
    for (int r = 0; r < G; r++) {
        acc2[r][0] = _mm512_castps512_ps256(acc[r]);
        acc2[r][1] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[r]), 1));
    }
    finishRow(G, w, dw, blocks, b8, x, dx, k, acc2, y, ldy);
}

/// Rows of `unimoe_q8_dot` with `dotRow512`, for CPUs with AVX-512 VNNI.
AVX512VNNI __attribute__((noinline)) static void dotRows512(int g, const int8_t *wq, const uint16_t *wd, long blocks,
                                                            long o0, long o1, const int8_t *x, const uint16_t *dx,
                                                            float *yr, long ldy) {
    const long k = 32 * blocks;
    EACH_OUTPUT(dotRow512)
}

static int has_vnni(void) { return unimoe_gemm_nt_available() && __builtin_cpu_supports("avx512vnni"); }

static int vnni_checked = -1;

int unimoe_q8_vnni(void) { return unimoe_check_once(&vnni_checked, has_vnni); }

void unimoe_q8_dot(const int8_t *wq, const uint16_t *wd, long blocks, long o0, long o1,
                   const int8_t *xq, const uint16_t *xd, long rows, float *y, long ldy) {
    unimoe_q8_dot_using(wq, wd, blocks, o0, o1, xq, xd, rows, y, ldy, 1);
}

void unimoe_q8_dot_using(const int8_t *wq, const uint16_t *wd, long blocks, long o0, long o1,
                         const int8_t *xq, const uint16_t *xd, long rows, float *y, long ldy, int vnni) {
    const long k = 32 * blocks;
    if (vnni && unimoe_q8_vnni()) {
        for (long r0 = 0; r0 < rows; r0 += 4) {
            const long g = rows - r0 < 4 ? rows - r0 : 4;
            dotRows512((int)g, wq, wd, blocks, o0, o1, xq + r0 * k, xd + r0 * blocks, y + r0 * ldy, ldy);
        }
        return;
    }
    for (long r0 = 0; r0 < rows; r0 += 4) {
        const long g = rows - r0 < 4 ? rows - r0 : 4;
        const int8_t *x = xq + r0 * k;
        const uint16_t *dx = xd + r0 * blocks;
        float *yr = y + r0 * ldy;
        EACH_OUTPUT(dotRow)
    }
}

#else  // Portable path: the same arithmetic, one element at a time.

static inline float half_to_float(uint16_t h) { _Float16 f; __builtin_memcpy(&f, &h, 2); return (float)f; }
static inline uint16_t float_to_half(float x) { _Float16 f = (_Float16)x; uint16_t h; __builtin_memcpy(&h, &f, 2); return h; }

void unimoe_q8_quantize(const float *x, long blocks, int8_t *quants, uint16_t *scales) {
    for (long b = 0; b < blocks; b++) {
        const float *xb = x + 32 * b;
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        scales[b] = float_to_half(d);
        for (int j = 0; j < 32; j++) {
            const float v = fminf(127.0f, fmaxf(-127.0f, roundf(xb[j] * id)));
            quants[32 * b + j] = (int8_t)v;
        }
    }
}

int unimoe_q8_vnni(void) { return 0; }

void unimoe_q8_dot_using(const int8_t *wq, const uint16_t *wd, long blocks, long o0, long o1,
                         const int8_t *xq, const uint16_t *xd, long rows, float *y, long ldy, int vnni) {
    (void)vnni;
    unimoe_q8_dot(wq, wd, blocks, o0, o1, xq, xd, rows, y, ldy);
}

void unimoe_q8_dot(const int8_t *wq, const uint16_t *wd, long blocks, long o0, long o1,
                   const int8_t *xq, const uint16_t *xd, long rows, float *y, long ldy) {
    const long k = 32 * blocks;
    for (long r = 0; r < rows; r++) {
        for (long o = o0; o < o1; o++) {
            float acc = 0;
            for (long b = 0; b < blocks; b++) {
                int32_t s = 0;
                for (int j = 0; j < 32; j++) s += (int32_t)wq[o * k + 32 * b + j] * (int32_t)xq[r * k + 32 * b + j];
                acc += half_to_float(wd[o * blocks + b]) * half_to_float(xd[r * blocks + b]) * (float)s;
            }
            y[r * ldy + o] = acc;
        }
    }
}
#endif
