import Foundation
import TestSupport
import XCTest

/// The decode step allocates nothing: `unimoe bench lm` runs with libMallocCount preloaded (it
/// counts every heap allocation of the process), with 8 and with 2056 decode steps, twice each; the
/// difference of the fewest counts over the 2048 extra steps is what one step allocates. Start-up
/// varies between runs (by up to ~400 allocations on a loaded machine, where 512 extra steps once
/// read as 0.44 a step), so the extra steps are many and each length's fewest count is taken. The kernels hand
/// the pool jobs as values (`ParallelJob`), experts write into the trunk's buffers, the router
/// picks experts in place, the experts' row views and the step's span array are reused, and the
/// decode loop keeps its input row, step array and logits (`forward(…, into:)`). Before, a step of
/// this 2-layer fixture made ~30 allocations and one of the 12-layer 1B bench model ~280.
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

    func testDecodeStepAllocatesNothing() throws {
        let short = min(try allocations(decodeSteps: 8), try allocations(decodeSteps: 8))
        let long = min(try allocations(decodeSteps: 2056), try allocations(decodeSteps: 2056))
        let perStep = Double(long - short) / 2048
        // One allocation in every step (or every other) fails.
        XCTAssertLessThanOrEqual(perStep, 0.4, "allocations per decode step: \(perStep)")
        XCTAssertGreaterThan(short, 1000, "the counter must see the process's allocations")
    }
}
