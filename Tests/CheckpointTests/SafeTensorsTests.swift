import XCTest
import Checkpoint

final class SafeTensorsTests: XCTestCase {
    func testMissingFileIsTypedError() {
        XCTAssertThrowsError(try SafeTensorsFile(path: "/nonexistent/x.safetensors")) { e in
            guard case CheckpointError.io = e else { return XCTFail("\(e)") }
        }
    }
}
