import XCTest
import Tensor

final class DTypeTests: XCTestCase {
    func testBF16RoundTripIsExactForRepresentableValues() {
        for v: Float in [0, 1, -2, 0.5, 3.140625, -0x1p100, 65280] {
            XCTAssertEqual(Convert.bf16ToF32(Convert.f32ToBF16(v)), v)
        }
    }

    func testF32ToBF16RoundsToNearestEven() {
        // 1 + 2^-8 lies halfway between bf16 1.0 and 1.0078125: ties go to even (1.0).
        XCTAssertEqual(Convert.bf16ToF32(Convert.f32ToBF16(1 + 1.0 / 256)), 1.0)
        // 1 + 3·2^-8 is halfway between 1.0078125 and 1.015625: even is 1.015625.
        XCTAssertEqual(Convert.bf16ToF32(Convert.f32ToBF16(1 + 3.0 / 256)), 1.015625)
        XCTAssertTrue(Convert.bf16ToF32(Convert.f32ToBF16(.nan)).isNaN)
    }
}
