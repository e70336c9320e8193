import CKernels
import Foundation
import Tensor
import TestSupport
import XCTest

final class OpenBLASCoreTests: XCTestCase {
    /// After selection OpenBLAS runs kernels at least as capable as the CPU flags allow (unless the
    /// user forced a core type), and a GEMM through the re-selected kernels still matches a plain
    /// f32 triple loop (done in f64) on odd sizes that exercise the kernels' edge paths.
    func testSelectedKernelsMatchCPUAndComputeCorrectly() throws {
        let chosen = OpenBLASCore.ensureSelected()
        XCTAssertEqual(chosen, OpenBLASCore.current)
        if ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
           let best = OpenBLASCore.bestForThisCPU(), let want = OpenBLASCore.rank(best),
           let have = OpenBLASCore.rank(chosen) {
            XCTAssertGreaterThanOrEqual(have, want, "OpenBLAS uses \(chosen), the CPU supports \(best)")
        }
        let m = 37, n = 53, k = 129
        let a = (0..<(m * k)).map { Float(($0 * 7919) % 1000) / 1000 - 0.5 }
        let b = (0..<(n * k)).map { Float(($0 * 104_729) % 997) / 997 - 0.5 }
        var want = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for t in 0..<k { s += Double(a[i * k + t]) * Double(b[j * k + t]) }
                want[i * n + j] = Float(s)
            }
        }
        var got = [Float](repeating: .nan, count: m * n)
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                got.withUnsafeMutableBufferPointer {
                    Linear.gemm(m: m, n: n, k: k, a: ap.baseAddress!, lda: k, b: bp.baseAddress!, ldb: k,
                                transposeB: true, c: $0.baseAddress!, ldc: n)
                }
            }
        }
        XCTAssertLessThanOrEqual(relativeError(got, want), 1e-5)
    }

    /// OpenBLAS's server threads are gone from load on (they would only spin beside our pool), stay
    /// gone through products and core selection, and go again after a bench's own-threads reference.
    func testOpenBLASKeepsNoThreadsOfItsOwn() {
        XCTAssertEqual(unimoe_openblas_threads_running(), 0, "OpenBLAS's threads run from load on")
        OpenBLASCore.ensureSelected()
        let n = 256
        let a = [Float](repeating: 0.5, count: n * n)
        var c = [Float](repeating: 0, count: n * n)
        func multiply() {
            a.withUnsafeBufferPointer { ap in
                c.withUnsafeMutableBufferPointer {
                    Linear.gemm(m: n, n: n, k: n, a: ap.baseAddress!, lda: n, b: ap.baseAddress!, ldb: n,
                                transposeB: true, c: $0.baseAddress!, ldc: n)
                }
            }
        }
        multiply()
        XCTAssertEqual(unimoe_openblas_threads_running(), 0, "a product started OpenBLAS's threads")
        OpenBLASCore.withOwnThreads(2) {
            XCTAssertEqual(unimoe_openblas_threads_running(), 1, "the bench reference has no threads of OpenBLAS's own")
        }
        XCTAssertEqual(unimoe_openblas_threads_running(), 0, "OpenBLAS's threads outlive the bench reference")
        XCTAssertEqual(c[0], 64)
    }
}
