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
}
