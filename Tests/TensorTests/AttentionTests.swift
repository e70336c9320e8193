import Tensor
import TestSupport
import XCTest

final class AttentionTests: XCTestCase {
    /// RoPE against transformers' LlamaRotaryEmbedding + apply_rotary_pos_emb, including a
    /// position offset past 4000 and rope_theta of 1e4, 5e5 and 1e6.
    func testRopeMatchesTransformers() throws {
        let fx = try KernelFixture("rope")
        for c in fx.cases {
            let name = try c.string("name"), hd = try c.int("headDim"), heads = try c.int("heads"), rows = try c.int("rows")
            let rope = Rope(headDim: hd, theta: Float(try c.double("theta")))
            let start = try c.int("start")
            let want = try fx.floats("\(name)/y")
            var y = try fx.floats("\(name)/x")
            y.withUnsafeMutableBufferPointer { rope.apply($0.baseAddress!, rows: rows, heads: heads, startPosition: start) }
            XCTAssertLessThanOrEqual(relativeError(y, want), kernelTolerance, name)
            var z = try fx.floats("\(name)/x")
            let pos = (0..<rows).map { start + $0 }
            z.withUnsafeMutableBufferPointer { zp in pos.withUnsafeBufferPointer {
                rope.apply(zp.baseAddress!, rows: rows, heads: heads, positions: $0.baseAddress!)
            } }
            XCTAssertEqual(z, y, "\(name) explicit positions")
        }
    }

    /// Causal SDPA with GQA ratios 1, 2, 4 replayed as a KV cache: a prefill pass, then one decode
    /// step per remaining position (vector path), then the same tail as one chunk (GEMM path when
    /// long enough) — all against torch's full-sequence causal attention. Plus a non-causal case.
    func testCausalAttentionWithKVCacheMatchesTorch() throws {
        let fx = try KernelFixture("attention")
        try withThreadCounts([1, 2]) { threads in
            for c in fx.cases {
                let name = try c.string("name")
                let heads = try c.int("heads"), kv = try c.int("kvHeads"), d = try c.int("headDim"), seq = try c.int("seq")
                let q = try fx.floats("\(name)/q"), k = try fx.floats("\(name)/k"), v = try fx.floats("\(name)/v")
                let want = try fx.floats("\(name)/y")
                let qs = heads * d
                func run(_ q0: Int, _ n: Int, keys: Int, offset: Int?) -> [Float] {
                    var out = [Float](repeating: .nan, count: n * qs)
                    var scratch = [Float](repeating: 0, count: max(1, n * keys))
                    let scale: Float = name == "full" ? 0.25 : 1 / Float(d).squareRoot()
                    q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
                        scratch.withUnsafeMutableBufferPointer { sp in out.withUnsafeMutableBufferPointer { op in
                            Attention.forward(q: qp.baseAddress! + q0 * qs, queries: n, heads: heads, kvHeads: kv, headDim: d,
                                              keys: kp.baseAddress!, values: vp.baseAddress!, keyCount: keys,
                                              causalOffset: offset, scale: scale, scratch: sp.baseAddress!, out: op.baseAddress!)
                        } }
                    } } }
                    return out
                }
                if try !c.bool("causal") {
                    let n = try c.int("queries")
                    XCTAssertLessThanOrEqual(relativeError(run(0, n, keys: seq, offset: nil), want), kernelTolerance, name)
                    continue
                }
                let prefill = try c.int("prefill")
                var got = run(0, prefill, keys: prefill, offset: 0)
                for p in prefill..<seq { got += run(p, 1, keys: p + 1, offset: p) }
                XCTAssertLessThanOrEqual(relativeError(got, want), kernelTolerance, "\(name) decode steps, threads \(threads)")
                let chunk = run(0, prefill, keys: prefill, offset: 0) + run(prefill, seq - prefill, keys: seq, offset: prefill)
                XCTAssertLessThanOrEqual(relativeError(chunk, want), kernelTolerance, "\(name) chunked, threads \(threads)")
                let whole = run(0, seq, keys: seq, offset: 0)
                XCTAssertLessThanOrEqual(relativeError(whole, want), kernelTolerance, "\(name) one pass, threads \(threads)")
            }
        }
    }
}
