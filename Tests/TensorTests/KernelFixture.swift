import Checkpoint
import Foundation
import Tensor
import TestSupport
import XCTest

/// One kernel family's reference data: `Tests/Fixtures/kernels/NAME.{safetensors,json}`.
struct KernelFixture {
    let file: SafeTensorsFile
    let cases: [[String: Any]]

    init(_ name: String) throws {
        file = try Fixtures.tensors("kernels/\(name).safetensors")
        let json = try XCTUnwrap(try Fixtures.json("kernels/\(name).json") as? [String: Any])
        cases = try XCTUnwrap(json["cases"] as? [[String: Any]])
        XCTAssertFalse(cases.isEmpty, "no cases in kernels/\(name).json")
    }

    func tensor(_ name: String) throws -> Tensor { try file.tensor(name) }
    func floats(_ name: String) throws -> [Float] { try file.tensor(name).toArray() }
}

extension Dictionary where Key == String, Value == Any {
    func int(_ k: String) throws -> Int { try XCTUnwrap(self[k] as? Int, "case field \(k)") }
    func bool(_ k: String) throws -> Bool { try XCTUnwrap(self[k] as? Bool, "case field \(k)") }
    func double(_ k: String) throws -> Double { try XCTUnwrap((self[k] as? NSNumber)?.doubleValue, "case field \(k)") }
    func string(_ k: String) throws -> String { try XCTUnwrap(self[k] as? String, "case field \(k)") }
}

/// The kernels' acceptance tolerance for f32 results.
let kernelTolerance: Float = 1e-5

/// Runs `body` once per thread count, so both the serial and the pooled paths are checked.
func withThreadCounts(_ counts: [Int] = [1, 2, 3], _ body: (Int) throws -> Void) rethrows {
    let before = Linear.threads
    defer { Linear.setThreads(before) }
    for n in counts {
        Linear.setThreads(n)
        try body(n)
    }
}

/// Runs a product kernel that may decline (returns false) on `x` into `outputs` floats
/// set to NaN first; nil when it declined, after checking that it wrote nothing.
func productOrNil(_ x: [Float], outputs: Int,
                  _ kernel: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Bool) -> [Float]? {
    var y = [Float](repeating: .nan, count: outputs)
    let ran = x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { kernel(xp.baseAddress!, $0.baseAddress!) } }
    if !ran { XCTAssertTrue(y.allSatisfy(\.isNaN), "a declined product wrote output"); return nil }
    return y
}

/// `Linear.forward` of x `[rows, in]` against w `[out, in]`, as an array.
func linearProduct(_ x: [Float], rows: Int, _ w: Tensor) -> [Float] {
    productOrNil(x, outputs: rows * w.shape[0]) { xp, yp in Linear.forward(xp, rows: rows, weight: w, into: yp); return true }!
}

/// Runs `body` with decode's mat-vec in the AVX-512 kernel (where the CPU has it) and in the
/// portable tiles, then restores the setting.
func withEachMatVecPath(_ body: (_ avx512: Bool) throws -> Void) rethrows {
    let before = Linear.matVecUsesAVX512
    defer { Linear.matVecUsesAVX512 = before }
    for avx512 in [true, false] {
        Linear.matVecUsesAVX512 = avx512
        try body(avx512)
    }
}

/// Every `y[r, o]` of an x `[rows, k]` · wᵀ `[n, k]` product within `relative` of Σ|x·w| of the
/// float64 product.
func assertMatchesFloat64(_ y: [Float], x: [Float], w: [Float], rows: Int, k: Int, n: Int, relative: Double,
                          _ label: String, file: StaticString = #filePath, line: UInt = #line) {
    for r in 0..<rows {
        for o in 0..<n {
            var exact = 0.0, magnitude = 0.0
            for i in 0..<k {
                let p = Double(x[r * k + i]) * Double(w[o * k + i])
                exact += p; magnitude += abs(p)
            }
            let got = Double(y[r * n + o])
            XCTAssertLessThanOrEqual(abs(got - exact), relative * magnitude + 1e-30, "\(label) [\(r), \(o)]: \(got) vs \(exact)",
                                     file: file, line: line)
        }
    }
}
