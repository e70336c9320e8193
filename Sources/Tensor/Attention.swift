import Foundation

/// Rotary position embedding exactly as Hugging Face LLaMA applies it: rotate-half layout
/// (pairs are i and i + d/2), inverse frequencies θ^(−2i/d) in f32, angles position · inv_freq.
public struct Rope: Sendable {
    public let headDim: Int
    public let invFreq: [Float]

    public init(headDim: Int, theta: Float) {
        self.headDim = headDim
        let half = headDim / 2
        invFreq = (0..<half).map { i in
            let e = Float(2 * i) / Float(headDim)
            return 1 / powf(theta, e)
        }
    }

    /// Rotates `rows` vectors laid out as `[rows, heads, headDim]`; row r sits at position `positions[r]`.
    public func apply(_ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, positions: UnsafePointer<Int>) {
        let half = headDim / 2
        var cosv = [Float](repeating: 0, count: half), sinv = [Float](repeating: 0, count: half)
        for r in 0..<rows {
            let p = Float(positions[r])
            for i in 0..<half {
                let a = p * invFreq[i]
                cosv[i] = cosf(a); sinv[i] = sinf(a)
            }
            for h in 0..<heads {
                let v = x + (r * heads + h) * headDim
                for i in 0..<half {
                    let a = v[i], b = v[i + half]
                    v[i] = a * cosv[i] - b * sinv[i]
                    v[i + half] = b * cosv[i] + a * sinv[i]
                }
            }
        }
    }

    /// Consecutive positions start, start+1, ….
    public func apply(_ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, startPosition: Int) {
        let pos = (0..<rows).map { startPosition + $0 }
        pos.withUnsafeBufferPointer { apply(x, rows: rows, heads: heads, positions: $0.baseAddress!) }
    }
}

/// Scaled dot-product attention over interleaved head buffers, one GEMM pair per head.
public enum Attention {
    /// out[q, h, :] = softmax(scale · Q_h K_gᵀ + mask) V_g, g = h / (heads / kvHeads).
    /// - q: `[queries, heads, headDim]`; keys/values: `[keyCount, kvHeads, headDim]`;
    ///   out: `[queries, heads, headDim]`; scratch: at least `queries · keyCount` floats.
    /// - causalOffset: query i sees keys j ≤ causalOffset + i; nil for no mask (encoders).
    public static func forward(q: UnsafePointer<Float>, queries: Int, heads: Int, kvHeads: Int, headDim: Int,
                               keys: UnsafePointer<Float>, values: UnsafePointer<Float>, keyCount: Int,
                               causalOffset: Int?, scale: Float,
                               scratch: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
        precondition(kvHeads > 0 && heads % kvHeads == 0, "heads \(heads) not a multiple of kv heads \(kvHeads)")
        let group = heads / kvHeads
        let qStride = heads * headDim, kvStride = kvHeads * headDim
        for h in 0..<heads {
            let g = h / group
            Linear.gemm(m: queries, n: keyCount, k: headDim,
                        a: q + h * headDim, lda: qStride,
                        b: keys + g * headDim, ldb: kvStride, transposeB: true,
                        c: scratch, ldc: keyCount)
            for i in 0..<queries {
                let row = scratch + i * keyCount
                let visible = causalOffset.map { min(keyCount, $0 + i + 1) } ?? keyCount
                for j in 0..<visible { row[j] *= scale }
                for j in visible..<keyCount { row[j] = -Float.infinity }
            }
            Activations.softmax(scratch, rows: queries, cols: keyCount)
            Linear.gemm(m: queries, n: headDim, k: keyCount,
                        a: scratch, lda: keyCount,
                        b: values + g * headDim, ldb: kvStride, transposeB: false,
                        c: out + h * headDim, ldc: qStride)
        }
    }
}

/// Row gathers and selection helpers.
public enum Gather {
    /// Copies rows `ids` of an embedding table `[vocab, dim]` (any dtype) into f32 `out[ids.count, dim]`.
    public static func embedding(_ table: Tensor, ids: [Int], into out: UnsafeMutablePointer<Float>) throws {
        let vocab = table.shape[0], dim = table.shape[1]
        for (r, id) in ids.enumerated() {
            guard id >= 0 && id < vocab else { throw TensorError.shapeMismatch("token id \(id) outside vocabulary of \(vocab)") }
            Convert.toF32(UnsafeRawPointer(table.raw) + id * dim * table.dtype.size, table.dtype, count: dim, into: out + r * dim)
        }
    }

    /// Indices of the k largest values, largest first; ties go to the lower index (as torch.topk on CPU).
    public static func topK(_ x: UnsafePointer<Float>, count: Int, k: Int) -> [Int] {
        var chosen: [Int] = []
        chosen.reserveCapacity(k)
        for _ in 0..<min(k, count) {
            var best = -1
            for i in 0..<count where !chosen.contains(i) {
                if best < 0 || x[i] > x[best] { best = i }
            }
            chosen.append(best)
        }
        return chosen
    }
}
