// Hot loops that need instructions Swift's SIMD types cannot express at the package's CPU level
// (the int8 multiply-adds `vpmaddubsw` and `vpdpbusd`, 512-bit vectors), written once in C with
// intrinsics. AVX-512 paths are chosen at run time (`__builtin_cpu_supports`), so one build serves
// AVX2-only CPUs too; the q8_0 kernels also have a portable fallback. Tensor wraps each one
// (Q8.quantize, MatVecQ8, GemmNT, GemmRowLanes); only the tests call them directly, to hold paths to each other.
// Also the one piece that must run before main: OpenBLAS held at one thread (OpenBLASThreads.c).
#ifndef UNIMOE_CKERNELS_H
#define UNIMOE_CKERNELS_H

#include <stdint.h>

/// q8_0 quantisation of `blocks` blocks of 32 floats, bit-exact with ggml's
/// `quantize_row_q8_0_ref`: d = max|x| / 127 (stored as f16 bits, round to nearest even),
/// q = roundf(x · (1/d)) with 1/d from the f32 d (0 for an all-zero block).
void unimoe_q8_quantize(const float *x, long blocks, int8_t *quants, uint16_t *scales);

/// y[r·ldy + o] = Σ_b d_w[o, b] · d_x[r, b] · Σ_j q_w[o, 32b + j] · q_x[r, 32b + j]
/// for output rows o in [o0, o1) and activation rows r < rows (any count), where the weight has
/// `blocks` blocks per row (row o at wq + 32·blocks·o) and so does each quantised activation row.
/// The inner sums are exact int32; the block products accumulate in f32 (as ggml's
/// `ggml_vec_dot_q8_0_q8_0`).
/// On CPUs with AVX-512 VNNI two blocks go through one `vpdpbusd` per 512-bit vector, with the
/// same bits as the AVX2 path (exact int32 lane sums, the same lanes accumulating the same blocks):
/// in interleaved `unimoe bench lm` decodes of the q8_0 bench model 68–82 tokens/s against 59–70.
void unimoe_q8_dot(const int8_t *wq, const uint16_t *wd, long blocks, long o0, long o1,
                   const int8_t *xq, const uint16_t *xd, long rows, float *y, long ldy);

/// `unimoe_q8_dot` with the VNNI path allowed (`vnni` 1) or not (0), so tests can hold the two
/// paths to the same bits.
void unimoe_q8_dot_using(const int8_t *wq, const uint16_t *wd, long blocks, long o0, long o1,
                         const int8_t *xq, const uint16_t *xd, long rows, float *y, long ldy, int vnni);

/// Whether this CPU takes the VNNI path (`unimoe_gemm_nt_available`'s AVX-512 and VNNI, checked once).
int unimoe_q8_vnni(void);

/// Prefetches, into the outer caches, one 64-byte line in each of `rows` weight rows `stride`
/// bytes apart: the line the portable Swift mat-vec tile (CPUs without AVX-512; the others run
/// `unimoe_gemm_nt`) will read next in the rows of its next tile (Swift has no prefetch of its
/// own). Streaming mat-vec kernels reach DRAM speed only with lines in flight ahead of the loads.
///
/// Out of line on purpose (Prefetch.c). Against the same prefetches inlined, interleaved
/// `unimoe bench lm` runs on 2 threads decode 5-9% faster: f32 0.90-0.95 of the bandwidth ceiling
/// instead of 0.85-0.88, bf16 0.76 instead of 0.72 (same bits; only the timing of the loads
/// changes). The call, which spills the tile's accumulators, apparently keeps out-of-order execution
/// from running far ahead with demand misses of the current tile, so the miss buffers go to the
/// next tile's prefetches; a longer prefetch distance with the loop left tight gained less.
void unimoe_prefetch_rows(const void *line, long stride, long rows);

/// Sets OpenBLAS to one thread and joins its server threads; also run once at load, before main
/// (OpenBLASThreads.c). Idempotent. Our products split over our own pool (`Sgemm`), so OpenBLAS's
/// threads only ever spin: at load its pthread build starts one per core, each spinning in
/// `sched_yield` for ~0.1 s before it sleeps. Measured in `unimoe media frames` (8 frames from a
/// 60 s 720p clip, 2 cores): that spin took ~0.1 s of the other core while both decoders started,
/// and `OPENBLAS_NUM_THREADS=1` made the command ~6% faster. Only `openblas_set_num_threads` may
/// start the threads again (OpenBLAS restarts them lazily), so Tensor calls this instead of
/// setting one thread itself.
void unimoe_openblas_single_thread(void);

/// 1 while OpenBLAS's thread server is up (its threads exist), else 0 (also without OpenBLAS): for tests.
int unimoe_openblas_threads_running(void);

/// Weight storage types `unimoe_gemm_nt` reads.
enum { UNIMOE_GEMM_F32 = 0, UNIMOE_GEMM_BF16 = 1, UNIMOE_GEMM_F16 = 2 };

/// Whether this CPU runs `unimoe_gemm_nt` (AVX-512 F/BW/DQ/VL, checked once at run time).
int unimoe_gemm_nt_available(void);

/// y[r·ldy + o] = Σ_i x[r·ldx + i] · w[o·k + i] for activation rows r < rows and output rows o in
/// [o0, o1), the weight `[out, k]` row-major in `dtype` (16-bit types widened in registers), without
/// packing either operand (GemmNT.c says why). Each output's summation order is fixed by k alone:
/// the same bits for any row count, tile split or [o0, o1) share. Returns 0, touching nothing, when
/// the CPU lacks AVX-512 (the caller then uses sgemm), 1 when done.
/// While the first tile of activation rows passes over four weight rows, each line of the next
/// four rows is prefetched: the weights stream from memory, once per call, in decode (`MatVec`:
/// f32 decode of the bench model 22.9–26.6 tokens/s against 20.5–24.6 for the Swift tiles before)
/// and in prefill (bf16 prefill 281–327 tokens/s against 255–292 without the prefetch).
/// For bf16 weights x must come pair-split (`unimoe_split_pairs32`), rows ldx ≥ k rounded up to 32
/// apart: each weight line is widened as its even and odd elements.
int unimoe_gemm_nt(const float *x, long rows, long ldx, const void *w, int dtype, long k, long o0, long o1,
                   float *y, long ldy);

/// One activation row of k floats in the layout `unimoe_gemm_nt` reads for bf16 weights: each
/// block of 32 as its 16 even elements, then its 16 odd ones, the last block zero-padded
/// (out holds k rounded up to 32).
void unimoe_split_pairs32(const float *x, long k, float *out);

/// The most activation rows `unimoe_gemm_row_lanes` takes on this CPU: 64 with AVX-512 or with
/// AVX2 and FMA, 0 without either.
long unimoe_gemm_row_lanes_max_rows(void);

/// Floats the transposed activation of `unimoe_gemm_row_lanes` takes: k · L · ⌈rows / L⌉, with L
/// the lanes of this CPU's path (16 with AVX-512, else 8).
long unimoe_gemm_row_lanes_packed_count(long rows, long k);

/// x `[rows, k]` (rows ldx apart) transposed into `xt` `[k, L·⌈rows / L⌉]`, rows past `rows`
/// zero (any alignment; the kernel loads it unaligned, which costs nothing on 64-byte boundaries).
void unimoe_gemm_row_lanes_pack(const float *x, long rows, long ldx, long k, float *xt);

/// y[r·ldy + o] = Σ_i x[r, i] · w[o·k + i] for weights `[out, k]` stored as `dtype` (f32; bf16 and
/// f16 on the AVX2 path only, widened exactly block by block), output rows o in [o0, o1)
/// and up to `unimoe_gemm_row_lanes_max_rows()` activation rows, from the activation
/// `unimoe_gemm_row_lanes_pack` laid out: the rows in the vector lanes, each weight broadcast, so
/// the weight is read once and nothing of it is packed (GemmRowLanes.c says why). Each output is
/// summed in k order by FMAs, alone in its lane: the same bits for any row count, tile split,
/// [o0, o1) share or CPU path. Returns 0, touching nothing, for more rows than this CPU's path
/// takes, a dtype it does not read or when rows · ldy passes 2³¹; 1 when done.
int unimoe_gemm_row_lanes(const float *xt, long rows, const void *weights, int dtype, long k, long o0, long o1,
                          float *y, long ldy);

#endif
