import Tensor
import TestSupport
import XCTest

/// `Sgemm.product`, OpenBLAS single-threaded with C cut into runs over our pool: every transpose,
/// cut by columns and by rows, with alpha, beta and leading dimensions wider than the operands.
final class SgemmTests: XCTestCase {
    /// Against a float64 product, and the same bits for one, two and three threads (the cut depends
    /// on the shape alone: OpenBLAS's AVX2 kernels sum an element by the width of the call it is in).
    func testSplitProductsMatchFloat64AndEachOther() {
        var rng = SplitMix(31)
        // (m, n, k): wide C (cut by columns; the second into 8 runs, more than threads), tall narrow
        // C (cut by rows), and one too small to cut.
        for (m, n, k) in [(37, 300, 70), (40, 1100, 20), (260, 20, 33), (5, 9, 3)] {
            for (transA, transB) in [(false, false), (false, true), (true, false), (true, true)] {
                let lda = (transA ? m : k) + 3, ldb = (transB ? k : n) + 2, ldc = n + 5
                let a = (0..<((transA ? k : m) * lda)).map { _ in rng.next() }
                let b = (0..<((transB ? n : k) * ldb)).map { _ in rng.next() }
                let c0 = (0..<(m * ldc)).map { _ in rng.next() }
                let alpha: Float = 0.75, beta: Float = 0.5
                var results: [[Float]] = []
                withThreadCounts { _ in
                    var c = c0
                    a.withUnsafeBufferPointer { ap in
                        b.withUnsafeBufferPointer { bp in
                            c.withUnsafeMutableBufferPointer {
                                Sgemm.product(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                                              a: ap.baseAddress!, lda: lda, b: bp.baseAddress!, ldb: ldb, beta: beta,
                                              c: $0.baseAddress!, ldc: ldc)
                            }
                        }
                    }
                    results.append(c)
                }
                let label = "\(m)×\(n)×\(k) transA \(transA) transB \(transB)"
                for c in results.dropFirst() { XCTAssertEqual(c, results[0], "\(label): thread counts disagree") }
                let c = results[0]
                for i in 0..<m {
                    for j in 0..<ldc {
                        guard j < n else { XCTAssertEqual(c[i * ldc + j], c0[i * ldc + j], "\(label): padding written"); continue }
                        var s = 0.0
                        for t in 0..<k {
                            let av = transA ? a[t * lda + i] : a[i * lda + t]
                            let bv = transB ? b[j * ldb + t] : b[t * ldb + j]
                            s += Double(av) * Double(bv)
                        }
                        let want = Double(alpha) * s + Double(beta) * Double(c0[i * ldc + j])
                        XCTAssertEqual(Double(c[i * ldc + j]), want, accuracy: 1e-5 * (1 + abs(want)), "\(label) [\(i), \(j)]")
                    }
                }
            }
        }
    }
}
