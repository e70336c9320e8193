import Foundation
import TestSupport
import XCTest

/// The decode step allocates (almost) nothing: `unimoe bench lm` runs with libMallocCount preloaded
/// (it counts every heap allocation of the process), once with 8 and once with 72 decode steps;
/// the difference over the 64 extra steps is what one step allocates (start-up varies by ±20
/// allocations between runs, so ±0.3 a step). The kernels hand the pool
/// jobs as values (`ParallelJob`), experts write into the trunk's buffers, the router picks
/// experts in place and the experts' row views are reused, so what is left is per step, not per
/// layer or kernel: the forward API's result (its array and logits tensor) and the bench loop's
/// step array, ~6 (before, a step of this 2-layer fixture made ~30 allocations and one of the
/// 12-layer 1B bench model ~280; that one now makes ~8).
final class AllocationTests: XCTestCase {
    func allocations(decodeSteps: Int) throws -> Int {
        let lib = Binaries.path("libMallocCount.so")
        // `swift build` builds every product, this library too; its absence is a build failure.
        XCTAssertTrue(FileManager.default.fileExists(atPath: lib), "\(lib) is not built")
        let r = try Binaries.unimoe(["bench", "lm", "--model", Fixtures.path("lm/mixtral"), "--prompt-tokens", "8",
                                     "--decode-tokens", "\(decodeSteps)", "--threads", "2", "--repeats", "1"],
                                    environment: ["LD_PRELOAD": lib], timeout: 120)
        XCTAssertEqual(r.status, 0, r.stderr)
        let line = try XCTUnwrap(r.stderr.split(separator: "\n").last { $0.hasPrefix("malloc-count: ") }, r.stderr)
        return try XCTUnwrap(Int(line.dropFirst("malloc-count: ".count)))
    }

    func testDecodeStepAllocatesAtMostTheForwardResults() throws {
        let short = try allocations(decodeSteps: 8), long = try allocations(decodeSteps: 72)
        let perStep = Double(long - short) / 64
        // ~6 now; one more allocation per kernel call (≥ 12 a step) or per expert batch (4) fails.
        XCTAssertLessThanOrEqual(perStep, 8, "allocations per decode step: \(perStep)")
        XCTAssertGreaterThan(short, 1000, "the counter must see the process's allocations")
    }
}
