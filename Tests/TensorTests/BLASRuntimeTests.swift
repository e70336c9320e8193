import XCTest
import Tensor

final class BLASRuntimeTests: XCTestCase {
    func testCoreTypeFollowsTheCPUFlags() {
        let avx512 = "processor : 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512vl\n"
        let avx2 = "flags\t\t: fpu sse2 avx avx2 fma\n"
        let old = "flags\t\t: fpu sse2 sse3\n"
        XCTAssertEqual(BLASRuntime.preferredCoreType(cpuinfo: avx512), "SkylakeX")
        XCTAssertEqual(BLASRuntime.preferredCoreType(cpuinfo: avx2), "Haswell")
        XCTAssertNil(BLASRuntime.preferredCoreType(cpuinfo: old))
        XCTAssertNil(BLASRuntime.preferredCoreType(cpuinfo: "garbage"))
    }

    func testOpenBLASReportsACoreName() {
        XCTAssertFalse(BLASRuntime.coreName.isEmpty)
        XCTAssertNotEqual(BLASRuntime.coreName, "unknown")
    }
}
