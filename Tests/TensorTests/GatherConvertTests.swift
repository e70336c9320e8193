import Tensor
import TestSupport
import XCTest

final class GatherConvertTests: XCTestCase {
    func testEmbeddingAndTopKMatchTorch() throws {
        let fx = try KernelFixture("gather")
        for c in fx.cases {
            let name = try c.string("name")
            if try c.string("kind") == "embedding" {
                let ids = try XCTUnwrap(c["ids"] as? [Int])
                let table = try fx.tensor("\(name)/table")
                var y = [Float](repeating: .nan, count: ids.count * table.shape[1])
                try y.withUnsafeMutableBufferPointer { try Gather.embedding(table, ids: ids, into: $0.baseAddress!) }
                XCTAssertEqual(y, try fx.floats("\(name)/y"), name)  // widening is exact
                XCTAssertThrowsError(try y.withUnsafeMutableBufferPointer { try Gather.embedding(table, ids: [table.shape[0]], into: $0.baseAddress!) })
            } else {
                let x = try fx.floats("\(name)/x"), k = try c.int("k")
                let want = try XCTUnwrap(c["indices"] as? [Int])
                let got = x.withUnsafeBufferPointer { Gather.topK($0.baseAddress!, count: $0.count, k: k) }
                XCTAssertEqual(got, want, name)
            }
        }
        let ties: [Float] = [1, 3, 3, .nan, 2, 3]
        XCTAssertEqual(ties.withUnsafeBufferPointer { Gather.topK($0.baseAddress!, count: 6, k: 4) }, [1, 2, 5, 4])
        XCTAssertEqual(ties.withUnsafeBufferPointer { Gather.topK($0.baseAddress!, count: 6, k: 0) }, [])
    }

    /// f32→bf16 and f32→f16 bit for bit as torch's `.to()` (round to nearest even, specials,
    /// subnormals, overflow to ∞); widening back exact.
    func testConversionsMatchTorchBitForBit() throws {
        let fx = try KernelFixture("convert")
        let x = try fx.tensor("x")
        for (dtype, key) in [(DType.bf16, "bf16"), (.f16, "f16")] {
            let ours = x.converted(to: dtype), theirs = try fx.tensor(key)
            XCTAssertEqual(theirs.dtype, dtype)
            let a = ours.raw.assumingMemoryBound(to: UInt16.self), b = theirs.raw.assumingMemoryBound(to: UInt16.self)
            var mismatches = 0
            for i in 0..<x.count where a[i] != b[i] {
                let bothNaN = ours.toArray()[i].isNaN && theirs.toArray()[i].isNaN
                if !bothNaN { mismatches += 1 }
            }
            XCTAssertEqual(mismatches, 0, "\(key): \(mismatches) of \(x.count) differ")
            let wide = theirs.toArray(), ref = try fx.floats("\(key)_wide")
            for i in 0..<wide.count {
                XCTAssertTrue(wide[i] == ref[i] && wide[i].sign == ref[i].sign || (wide[i].isNaN && ref[i].isNaN), "\(key) widen \(i)")
            }
        }
    }
}
