import XCTest
import Foundation
import Checkpoint

/// Hostile and broken safetensors files, built byte by byte: every one must give a typed error whose
/// message names the problem, never a crash or a read outside the file.
final class MalformedSafeTensorsTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-malformed-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// The 8-byte little-endian length (the real one unless overridden), the header bytes, the data.
    func bytes(header: [UInt8], data: [UInt8] = [], length: UInt64? = nil) -> [UInt8] {
        withUnsafeBytes(of: (length ?? UInt64(header.count)).littleEndian) { Array($0) } + header + data
    }

    func bytes(header: String, data: [UInt8] = [], length: UInt64? = nil) -> [UInt8] {
        bytes(header: Array(header.utf8), data: data, length: length)
    }

    @discardableResult
    func write(_ b: [UInt8], _ name: String = "x.safetensors") throws -> String {
        let p = (dir as NSString).appendingPathComponent(name)
        try Data(b).write(to: URL(fileURLWithPath: p))
        return p
    }

    /// Opening must throw `.malformed` for this file, with a message containing every phrase.
    func assertMalformed(_ b: [UInt8], _ phrases: String..., file: StaticString = #filePath, line: UInt = #line) throws {
        let p = try write(b)
        XCTAssertThrowsError(try SafeTensorsFile(path: p), file: file, line: line) { e in
            guard case CheckpointError.malformed(let path, _) = e else { return XCTFail("not .malformed: \(e)", file: file, line: line) }
            XCTAssertEqual(path, p, file: file, line: line)
            let message = "\(e)"
            XCTAssertFalse(message.contains("\n"), file: file, line: line)
            for ph in phrases { XCTAssertTrue(message.contains(ph), "'\(message)' should mention '\(ph)'", file: file, line: line) }
        }
    }

    let f32x4 = #""w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}"#
    let sixteen = [UInt8](repeating: 0, count: 16)

    func testValidBaselineOpens() throws {
        let f = try SafeTensorsFile(path: try write(bytes(header: "{\(f32x4)}", data: sixteen)))
        XCTAssertEqual(f.names, ["w"])
        XCTAssertEqual(try f.tensor("w").toArray(), [0, 0, 0, 0])
    }

    func testEmptyFile() throws { try assertMalformed([], "0 bytes", "8-byte header length") }

    func testShorterThanLength() throws { try assertMalformed([1, 0, 0, 0, 0], "5 bytes") }

    func testHeaderLengthBeyondFile() throws {
        try assertMalformed(bytes(header: "{}", length: 100), "header length 100", "past the end of the 10-byte file")
    }

    func testHeaderLengthHuge() throws {
        try assertMalformed(bytes(header: "{}", length: 1 << 63), "header length 9223372036854775808", "past the end")
        try assertMalformed(bytes(header: "{}", length: UInt64.max), "header length 18446744073709551615", "past the end")
    }

    func testHeaderLengthOverLimit() throws {
        // A sparse 120 MB file whose header claims 110 MB: within the file, over the format's limit.
        let p = (dir as NSString).appendingPathComponent("x.safetensors")
        try Data(bytes(header: "{}", length: 110_000_000)).write(to: URL(fileURLWithPath: p))
        XCTAssertEqual(truncate(p, 120_000_000), 0)
        XCTAssertThrowsError(try SafeTensorsFile(path: p)) { e in
            XCTAssertTrue("\(e)".contains("exceeds the 100000000-byte limit"), "\(e)")
        }
    }

    func testBadUTF8() throws {
        try assertMalformed(bytes(header: Array("{\"w".utf8) + [0xFF] + Array("\": 1}".utf8)), "not valid UTF-8")
        try assertMalformed(bytes(header: [0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D]), "not valid UTF-8")
    }

    func testBadJSON() throws {
        try assertMalformed(bytes(header: "{\"w\": {\"dtype\": \"F32\""), "not valid JSON")
        try assertMalformed(bytes(header: "{\"w\": {} } trailing"), "not valid JSON", "after the JSON value")
        try assertMalformed(bytes(header: "{'w': 1}"), "not valid JSON")
        try assertMalformed(bytes(header: "{\"w\": 01}"), "not valid JSON", "leading zero")
        try assertMalformed(bytes(header: "{\"w\": \"\\ud800\"}"), "not valid JSON", "surrogate")
        try assertMalformed(bytes(header: "{\"w\": \"a\u{01}b\"}"), "not valid JSON", "control character")
        try assertMalformed(bytes(header: ""), "not valid JSON")
    }

    func testNestingBomb() throws {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        try assertMalformed(bytes(header: "{\"w\": \(deep)}"), "not valid JSON", "nesting deeper")
    }

    func testHeaderNotAnObject() throws {
        try assertMalformed(bytes(header: "[1, 2]"), "header is not a JSON object")
        try assertMalformed(bytes(header: "\"w\""), "header is not a JSON object")
        try assertMalformed(bytes(header: "{\"w\": [1]}"), "entry 'w' is not an object")
    }

    func testMissingFields() throws {
        try assertMalformed(bytes(header: #"{"w": {"shape": [4], "data_offsets": [0, 16]}}"#, data: sixteen), "'w' has no dtype")
        try assertMalformed(bytes(header: #"{"w": {"dtype": "F32", "data_offsets": [0, 16]}}"#, data: sixteen), "'w' has no shape")
        try assertMalformed(bytes(header: #"{"w": {"dtype": "F32", "shape": [4]}}"#, data: sixteen), "'w' has no [begin, end] data_offsets")
        try assertMalformed(bytes(header: #"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0]}}"#, data: sixteen), "data_offsets")
        try assertMalformed(bytes(header: #"{"w": {"dtype": 7, "shape": [4], "data_offsets": [0, 16]}}"#, data: sixteen), "dtype that is not a string")
    }

    func testUnknownDType() throws {
        try assertMalformed(bytes(header: #"{"w": {"dtype": "Q7", "shape": [4], "data_offsets": [0, 16]}}"#, data: sixteen),
                            "'w'", "unknown dtype 'Q7'")
    }

    func testBadShapeEntries() throws {
        for bad in ["-1", "2.5", "true", "\"4\"", "null", "99999999999999999999"] {
            try assertMalformed(bytes(header: "{\"w\": {\"dtype\": \"F32\", \"shape\": [\(bad)], \"data_offsets\": [0, 16]}}", data: sixteen),
                                "'w'", "not a non-negative integer")
        }
    }

    func testOffsetsOutsideData() throws {
        try assertMalformed(bytes(header: #"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 32]}}"#, data: sixteen),
                            "'w' data_offsets [0, 32] lie outside the 16-byte data section")
        try assertMalformed(bytes(header: #"{"w": {"dtype": "F32", "shape": [0], "data_offsets": [20, 20]}}"#, data: sixteen),
                            "lie outside")
        try assertMalformed(bytes(header: #"{"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}}"#, data: sixteen), "lie outside")
        try assertMalformed(bytes(header: #"{"w": {"dtype": "F32", "shape": [0], "data_offsets": [-4, 0]}}"#, data: sixteen), "lie outside")
        try assertMalformed(bytes(header: #"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 18446744073709551616]}}"#, data: sixteen),
                            "are not integers")
        try assertMalformed(bytes(header: #"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0.0, 16]}}"#, data: sixteen),
                            "are not integers")
    }

    func testOverlappingTensors() throws {
        try assertMalformed(bytes(header: """
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
            """, data: sixteen), "tensors 'a' and 'b' overlap")
        // An empty tensor sorted between two overlapping ones must not hide the overlap.
        try assertMalformed(bytes(header: """
            {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
             "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
             "f": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
            """, data: sixteen), "tensors 'a' and 'f' overlap")
        // One tensor inside a larger one, starting at the same byte.
        try assertMalformed(bytes(header: """
            {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
             "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
            """, data: sixteen), "overlap")
    }

    func testByteLengthMismatch() throws {
        try assertMalformed(bytes(header: #"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}"#, data: sixteen),
                            "'w' holds 16 bytes but shape [3] of F32 needs 12")
        try assertMalformed(bytes(header: #"{"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 16]}}"#, data: sixteen),
                            "needs 8")
    }

    func testDuplicateNames() throws {
        try assertMalformed(bytes(header: """
            {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
            """, data: sixteen), "names tensor 'w' more than once")
        try assertMalformed(bytes(header: #"{"w": {"dtype": "F32", "dtype": "F16", "shape": [4], "data_offsets": [0, 16]}}"#, data: sixteen),
                            "entry 'w' has key 'dtype' more than once")
        // Same name spelled with an escape.
        try assertMalformed(bytes(header: """
            {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "\\u0077": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
            """, data: sixteen), "names tensor 'w' more than once")
    }

    func testShapeOverflow() throws {
        try assertMalformed(bytes(header: #"{"w": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 16]}}"#, data: sixteen),
                            "'w' shape [4611686018427387904, 4] overflows")
        try assertMalformed(bytes(header: #"{"w": {"dtype": "F64", "shape": [2305843009213693952], "data_offsets": [0, 16]}}"#, data: sixteen),
                            "overflows")
    }

    func testMetadataNotStrings() throws {
        try assertMalformed(bytes(header: #"{"__metadata__": {"format": 1}}"#), "__metadata__ value 'format' is not a string")
        try assertMalformed(bytes(header: #"{"__metadata__": [1]}"#), "__metadata__ is not an object")
    }

    func testDirectoryInsteadOfFile() throws {
        let p = (dir as NSString).appendingPathComponent("d.safetensors")
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        XCTAssertThrowsError(try SafeTensorsFile(path: p)) { e in
            guard case CheckpointError.io(let path, let reason) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(path, p)
            XCTAssertTrue(reason.contains("is a directory"), reason)
        }
        XCTAssertThrowsError(try SafeTensorsFile(path: "/dev/null")) { e in
            XCTAssertTrue("\(e)".contains("not a regular file"), "\(e)")
        }
    }

    func testMissingFile() {
        XCTAssertThrowsError(try SafeTensorsFile(path: dir + "/none.safetensors")) { e in
            guard case CheckpointError.io(_, let reason) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(reason.contains("No such file"), reason)
        }
    }

    // MARK: Sharded index

    func shard(_ names: [String]) -> [UInt8] {
        let entries = names.enumerated().map { i, n in "\"\(n)\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [\(4 * i), \(4 * i + 4)]}" }
        return bytes(header: "{" + entries.joined(separator: ", ") + "}", data: [UInt8](repeating: 0, count: 4 * names.count))
    }

    func assertBadIndex(_ index: String, _ phrases: String..., file: StaticString = #filePath, line: UInt = #line) throws {
        try write(Array(index.utf8), "model.safetensors.index.json")
        XCTAssertThrowsError(try Checkpoint(directory: dir), file: file, line: line) { e in
            guard case CheckpointError.malformed(let path, _) = e else { return XCTFail("not .malformed: \(e)", file: file, line: line) }
            XCTAssertTrue(path.hasSuffix("model.safetensors.index.json"), file: file, line: line)
            for ph in phrases { XCTAssertTrue("\(e)".contains(ph), "'\(e)' should mention '\(ph)'", file: file, line: line) }
        }
    }

    func testIndexNamesMissingShard() throws {
        try write(shard(["a"]), "s1.safetensors")
        try assertBadIndex(#"{"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}"#, "'b'", "shard 's2.safetensors'", "does not exist")
    }

    func testIndexTensorNotInShard() throws {
        try write(shard(["a"]), "s1.safetensors")
        try write(shard(["b"]), "s2.safetensors")
        try assertBadIndex(#"{"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}}"#, "'b' is listed in s1.safetensors but that shard does not hold it")
    }

    func testShardHoldsUnlistedTensor() throws {
        try write(shard(["a", "extra"]), "s1.safetensors")
        try assertBadIndex(#"{"weight_map": {"a": "s1.safetensors"}}"#, "shard s1.safetensors holds 'extra'")
    }

    func testIndexPathTraversal() throws {
        try write(shard(["a"]), "../outside.safetensors")
        defer { try? FileManager.default.removeItem(atPath: dir + "/../outside.safetensors") }
        for target in ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors", ".hidden", "", "..\\\\x"] {
            try assertBadIndex("{\"weight_map\": {\"a\": \"\(target)\"}}", "'a'", "not a file name inside the directory")
        }
        try assertBadIndex(#"{"weight_map": {"a": 3}}"#, "not a file name inside the directory")
    }

    func testIndexMalformed() throws {
        try write(shard(["a"]), "s1.safetensors")
        try assertBadIndex(#"{"weight_map": {"a": "s1.safetensors", "a": "s1.safetensors"}}"#, "'a' appears more than once")
        try assertBadIndex(#"{"metadata": {}}"#, "no weight_map")
        try assertBadIndex(#"{"weight_map": ["#, "not valid JSON")
    }
}
