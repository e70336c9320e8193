import Foundation
import TestSupport
import XCTest

/// The decode step allocates (almost) nothing: `unimoe bench lm` runs with libMallocCount preloaded
/// (it counts every heap allocation of the process), once with 8 and once with 40 decode steps;
/// the difference over the 32 extra steps is what one step allocates. The kernels hand the pool
/// jobs as values (`ParallelJob`), experts write into the trunk's buffers and the router picks
/// experts in place, so what is left is per step, not per layer-kernel: the forward API's
/// result tensors and the experts' row views (before this, a step of the 2-layer fixture made
/// ~30 allocations and one of the 12-layer 1B bench model ~280).
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
        let short = try allocations(decodeSteps: 8), long = try allocations(decodeSteps: 40)
        let perStep = Double(long - short) / 32
        // The fixture has two MoE layers of top-2: 2 × 2 expert row views + the bench loop's
        // forward call (its result array and logits tensor, the step array) ≈ 10.
        XCTAssertLessThanOrEqual(perStep, 12, "allocations per decode step: \(perStep)")
        XCTAssertGreaterThan(short, 1000, "the counter must see the process's allocations")
    }
}
