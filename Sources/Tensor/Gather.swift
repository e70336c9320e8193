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
        if k == 0 { return [] }
        var best: [Int] = []
        best.reserveCapacity(k + 1)
        // `better(i, j)`: i ranks before j.
        @inline(__always) func better(_ i: Int, _ j: Int) -> Bool {
            let a = x[i], b = x[j]
            if a.isNaN { return false }
            if b.isNaN { return true }
            return a > b || (a == b && i < j)
        }
        for i in 0..<count {
            if best.count == k {
                guard let last = best.last, better(i, last) else { continue }
                best.removeLast()
            }
            var pos = best.count
            while pos > 0 && better(i, best[pos - 1]) { pos -= 1 }
            best.insert(i, at: pos)
        }
        return best
    }
}
