/// Row gathers and selection helpers.
public enum Gather {
    /// Copies rows `ids` of an embedding table `[vocab, dim]` (any dtype) into f32 `out[ids.count, dim]`.
    public static func embedding(_ table: Tensor, ids: [Int], into out: UnsafeMutablePointer<Float>) throws {
        guard table.rank == 2 else { throw TensorError.shapeMismatch("embedding table must be 2-D, got \(table.shape)") }
        let vocab = table.shape[0], dim = table.shape[1]
        for (r, id) in ids.enumerated() {
            guard id >= 0 && id < vocab else { throw TensorError.shapeMismatch("token id \(id) outside vocabulary of \(vocab)") }
            table.widenRows(id, 1, into: out + r * dim)
        }
    }

    /// Indices of the k largest values, largest first; ties go to the lower index. NaN is never
    /// chosen over a number. One pass keeping a sorted list of the best k, so O(n) for the usual
    /// small k (routers: k = 2 of 8; samplers: k ≈ 50 of a vocabulary).
    public static func topK(_ x: UnsafePointer<Float>, count: Int, k: Int) -> [Int] {
        let k = min(max(k, 0), count)
        return [Int](unsafeUninitializedCapacity: k) { buf, n in
            n = topK(x, count: count, k: k, into: buf.baseAddress!)
        }
    }

    /// The same indices written to `out` (room for `k`), best first; returns how many (min(k, count)).
    /// Allocates nothing: the router calls it for every row of every decode step.
    @discardableResult
    public static func topK(_ x: UnsafePointer<Float>, count: Int, k: Int, into out: UnsafeMutablePointer<Int>) -> Int {
        let k = min(max(k, 0), count)
        if k == 0 { return 0 }
        // `better(i, j)`: i ranks before j.
        @inline(__always) func better(_ i: Int, _ j: Int) -> Bool {
            let a = x[i], b = x[j]
            if a.isNaN { return false }
            if b.isNaN { return true }
            return a > b || (a == b && i < j)
        }
        var n = 0
        for i in 0..<count {
            if n == k {
                guard better(i, out[n - 1]) else { continue }
                n -= 1
            }
            var pos = n
            while pos > 0 && better(i, out[pos - 1]) { out[pos] = out[pos - 1]; pos -= 1 }
            out[pos] = i
            n += 1
        }
        return n
    }
}
