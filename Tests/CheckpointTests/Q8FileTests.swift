import Foundation
import Tensor
import XCTest
@testable import Checkpoint

/// q8_0 tensors on disk: I8 `NAME` + F16 `NAME.q8_scales`, written and read back, and every broken
/// pairing a typed `.malformed` error that names the tensor and the problem.
extension MalformedSafeTensorsTests {
    /// Header entry text.
    func entry(_ name: String, _ dtype: String, _ shape: [Int], _ begin: Int, _ end: Int) -> String {
        "\"\(name)\": {\"dtype\": \"\(dtype)\", \"shape\": [\(shape.map(String.init).joined(separator: ", "))], \"data_offsets\": [\(begin), \(end)]}"
    }

    func testQ8RoundTripThroughWriter() throws {
        let w = try Tensor(shape: [3, 64], values: (0..<192).map { Float($0 % 17) - 8 }).converted(to: .q8_0)
        let p = (dir as NSString).appendingPathComponent("q.safetensors")
        try SafeTensorsWriter.write(path: p, tensors: [("w", w), ("b", try Tensor(shape: [2], values: [1, 2]))])
        let f = try SafeTensorsFile(path: p)
        XCTAssertEqual(f.names, ["b", "w"], "the scales are folded into their tensor")
        let r = try f.tensor("w")
        XCTAssertEqual(r.dtype, .q8_0)
        XCTAssertEqual(r.shape, [3, 64])
        XCTAssertEqual(r.toArray(), w.toArray())
        XCTAssertEqual(f.entries["w"]?.scales?.count, 3 * 2 * 2)
    }

    func testQ8MissingScalesIsTypedOnRead() throws {
        let p = try write(bytes(header: "{\(entry("w", "I8", [2, 32], 0, 64))}", data: [UInt8](repeating: 1, count: 64)))
        let f = try SafeTensorsFile(path: p)
        XCTAssertThrowsError(try f.tensor("w")) { e in
            guard case CheckpointError.malformed = e else { return XCTFail("not .malformed: \(e)") }
            XCTAssertTrue("\(e)".contains("w.q8_scales"), "\(e)")
        }
    }

    func testQ8WrongScaleShape() throws {
        let h = "{\(entry("w", "I8", [2, 64], 0, 128)), \(entry("w.q8_scales", "F16", [2, 1], 128, 132))}"
        try assertMalformed(bytes(header: h, data: [UInt8](repeating: 0, count: 132)), "w.q8_scales", "[2, 1]", "expected [2, 2]")
    }

    func testQ8ColumnsNotDivisibleBy32() throws {
        let h = "{\(entry("w", "I8", [2, 48], 0, 96)), \(entry("w.q8_scales", "F16", [2, 1], 96, 100))}"
        try assertMalformed(bytes(header: h, data: [UInt8](repeating: 0, count: 100)), "'w'", "48 columns", "32")
    }

    func testQ8ScalesNotF16() throws {
        let h = "{\(entry("w", "I8", [1, 32], 0, 32)), \(entry("w.q8_scales", "F32", [1, 1], 32, 36))}"
        try assertMalformed(bytes(header: h, data: [UInt8](repeating: 0, count: 36)), "w.q8_scales", "F32", "expected F16")
    }

    func testQ8ScalesWithoutQuants() throws {
        let h = "{\(entry("w.q8_scales", "F16", [1, 1], 0, 2))}"
        try assertMalformed(bytes(header: h, data: [0, 0]), "w.q8_scales", "no I8 quants 'w'")
        let f32Base = "{\(entry("w", "F32", [1, 32], 0, 128)), \(entry("w.q8_scales", "F16", [1, 1], 128, 130))}"
        try assertMalformed(bytes(header: f32Base, data: [UInt8](repeating: 0, count: 130)), "no I8 quants 'w'")
    }

    func testQ8QuantsNotAMatrix() throws {
        let h = "{\(entry("w", "I8", [64], 0, 64)), \(entry("w.q8_scales", "F16", [2], 64, 68))}"
        try assertMalformed(bytes(header: h, data: [UInt8](repeating: 0, count: 68)), "'w'", "matrices")
    }

    func testQ8ScalesAtAnyOffset() throws {
        // A 1-byte U8 tensor first puts the scales at an odd data offset (copied when misaligned).
        var data = [UInt8](repeating: 0, count: 1 + 32 + 2)
        data[1] = 2                                           // q[0] = 2
        data[33] = 0x00; data[34] = 0x3C                      // f16 1.0 at an odd offset
        let h = "{\(entry("pad", "U8", [1], 0, 1)), \(entry("w", "I8", [1, 32], 1, 33)), \(entry("w.q8_scales", "F16", [1, 1], 33, 35))}"
        let f = try SafeTensorsFile(path: try write(bytes(header: h, data: data)))
        XCTAssertEqual(try f.tensor("w").toArray()[0], 2)
    }
}
