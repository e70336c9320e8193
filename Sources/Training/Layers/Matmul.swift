import COpenBLAS
import Foundation
import Tensor

/// Row-major f32 products for the forward and backward passes: `C = alpha · op(A) · op(B) + beta · C`
/// with optional transposes, element offsets and leading dimensions (so heads can be addressed
/// inside interleaved buffers). Every product of training goes through here, to `Sgemm.product`.
/// The operands are `Tensor`s, not pointers, so they are alive for the whole call (a pointer taken
/// from a temporary could outlive it).
enum Matmul {
    static func gemm(m: Int, n: Int, k: Int, a: Tensor, _ aOffset: Int = 0, lda: Int, transA: Bool = false,
                     b: Tensor, _ bOffset: Int = 0, ldb: Int, transB: Bool = false,
                     c: Tensor, _ cOffset: Int = 0, ldc: Int, alpha: Float = 1, beta: Float = 0) {
        if m == 0 || n == 0 { return }
        let cp = c.floats + cOffset
        if k == 0 {
            if beta == 0 { for i in 0..<m { for j in 0..<n { cp[i * ldc + j] = 0 } } }
            return
        }
        let t0 = GemmProfile.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        Sgemm.product(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a.floats + aOffset, lda: lda,
                      b: b.floats + bOffset, ldb: ldb, beta: beta, c: cp, ldc: ldc)
        if GemmProfile.enabled {
            GemmProfile.record(flops: 2 * Double(m) * Double(n) * Double(k),
                               seconds: Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
        }
    }

    /// `y[rows, out] = x[rows, in] · W[out, in]ᵀ` (+ beta · y).
    static func xWt(_ x: Tensor, _ w: Tensor, into y: Tensor, alpha: Float = 1, beta: Float = 0) {
        let out = w.shape[0], inF = w.shape[1]
        gemm(m: x.rowCount, n: out, k: inF, a: x, lda: inF, b: w, ldb: inF, transB: true, c: y, ldc: out, alpha: alpha, beta: beta)
    }

    /// `dx[rows, in] = dy[rows, out] · W[out, in]` (+ beta · dx).
    static func dyW(_ dy: Tensor, _ w: Tensor, into dx: Tensor, alpha: Float = 1, beta: Float = 0) {
        let out = w.shape[0], inF = w.shape[1]
        gemm(m: dy.rowCount, n: inF, k: out, a: dy, lda: out, b: w, ldb: inF, c: dx, ldc: inF, alpha: alpha, beta: beta)
    }

    /// `dW[out, in] += alpha · dy[rows, out]ᵀ · x[rows, in]` (weight gradients accumulate).
    static func accumulateDyTx(_ dy: Tensor, _ x: Tensor, into dw: Tensor, alpha: Float = 1) {
        let out = dw.shape[0], inF = dw.shape[1]
        gemm(m: out, n: inF, k: x.rowCount, a: dy, lda: out, transA: true, b: x, ldb: inF, c: dw, ldc: inF, alpha: alpha, beta: 1)
    }
}

/// GEMM counters for `unimoe bench train` (off otherwise; the trainer calls GEMMs from one thread):
/// FLOPs and seconds per phase (`forward`, `backward`), to report the fraction of the sgemm peak.
public enum GemmProfile {
    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) public static var phase = "forward"
    nonisolated(unsafe) public private(set) static var totals: [String: (flops: Double, seconds: Double)] = [:]

    static func record(flops: Double, seconds: Double) {
        let t = totals[phase] ?? (0, 0)
        totals[phase] = (t.flops + flops, t.seconds + seconds)
    }

    public static func reset() { totals = [:] }
}

/// Small elementwise helpers shared by the layers, on whole tensors or rows of them (Tensor
/// arguments keep the buffers alive for the call).
public enum Vec {
    /// a += b (same element count).
    public static func add(_ a: Tensor, _ b: Tensor) {
        precondition(a.count == b.count, "add: \(a.shape) + \(b.shape)")
        let ap = a.floats, bp = b.floats
        for i in 0..<a.count { ap[i] += bp[i] }
    }

    /// a + b as a new tensor shaped like a.
    public static func sum(_ a: Tensor, _ b: Tensor) -> Tensor {
        let out = a.copy()
        add(out, b)
        return out
    }

    /// Row `ar` of a (width w) += `scale` · row `br` of b.
    public static func addRow(_ a: Tensor, _ ar: Int, _ b: Tensor, _ br: Int, width w: Int, scale: Float = 1) {
        let ap = a.floats + ar * w, bp = b.floats + br * w
        if scale == 1 { for c in 0..<w { ap[c] += bp[c] } } else { for c in 0..<w { ap[c] += scale * bp[c] } }
    }

    /// Row `ar` of a (width w) = row `br` of b.
    public static func copyRow(_ a: Tensor, _ ar: Int, from b: Tensor, _ br: Int, width w: Int) {
        (a.floats + ar * w).update(from: b.floats + br * w, count: w)
    }

    /// Copies all of `src` into `dst` starting at element `at`.
    public static func copy(_ dst: Tensor, at: Int, from src: Tensor) {
        let s = src.converted(to: .f32)
        (dst.floats + at).update(from: s.floats, count: s.count)
    }

    /// `tensors` end to end along the first dimension, as one tensor of `shape`.
    public static func concatenate(_ tensors: [Tensor], shape: [Int]) -> Tensor {
        let out = Tensor(zeros: shape)
        var at = 0
        for t in tensors { copy(out, at: at, from: t); at += t.count }
        return out
    }

    /// Column sums of `x[rows, cols]` added into `into[cols]` (bias gradients).
    public static func accumulateColumnSums(_ x: Tensor, into: Tensor) {
        let cols = x.lastDim, xp = x.floats, ip = into.floats
        for r in 0..<x.rowCount { let row = xp + r * cols; for c in 0..<cols { ip[c] += row[c] } }
    }
}
