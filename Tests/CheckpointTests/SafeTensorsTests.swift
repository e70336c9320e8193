import XCTest
import Foundation
import Checkpoint
import Tensor
import TestSupport

final class SafeTensorsTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-st-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: dir)
    }

    func path(_ name: String) -> String { (dir as NSString).appendingPathComponent(name) }

    func ramp(_ shape: [Int], scale: Float = 0.37) throws -> Tensor {
        let n = shape.reduce(1, *)
        return try Tensor(shape: shape, values: (0..<n).map { Float($0) * scale - 3.1 })
    }

    func testMissingFileIsTypedError() {
        XCTAssertThrowsError(try SafeTensorsFile(path: "/nonexistent/x.safetensors")) { e in
            guard case CheckpointError.io = e else { return XCTFail("\(e)") }
        }
    }

    func testF32IsUsedInPlace() throws {
        let a = try ramp([3, 5]), b = try ramp([7])
        try SafeTensorsWriter.write(path: path("m.safetensors"), tensors: [("a", a), ("b", b)], metadata: ["format": "pt"])
        let f = try SafeTensorsFile(path: path("m.safetensors"))
        XCTAssertEqual(f.metadata, ["format": "pt"])
        XCTAssertEqual(f.names, ["a", "b"])
        for (name, expected) in [("a", a), ("b", b)] {
            let t = try f.tensor(name)
            XCTAssertEqual(t.shape, expected.shape)
            XCTAssertEqual(t.toArray(), expected.toArray())
            // No copy: the tensor's bytes are the file's bytes.
            let map = f.mapping
            let p = UnsafeRawPointer(t.raw)
            let entry = try XCTUnwrap(f.entries[name])
            XCTAssertEqual(p, UnsafeRawPointer(map.baseAddress! + entry.range.lowerBound))
            XCTAssertTrue(p >= UnsafeRawPointer(map.baseAddress!) && p + t.byteCount <= UnsafeRawPointer(map.baseAddress! + map.count))
        }
    }

    /// Large tensors taken through a `Checkpoint` are copied into huge-page memory (2 MiB-aligned
    /// chunks, 64-byte aligned tensors, small ones packed into a chunk's tail); small tensors stay
    /// views into the mapping; the bytes are the file's either way, for f32, bf16 and q8_0.
    func testLargeTensorsAreCopiedIntoHugePages() throws {
        let big = try ramp([300, 1024])                          // 1.2 MB: copied
        let mid = try ramp([256, 260]).converted(to: .bf16)       // 133 KB: below the minimum, a view
        let q = try ramp([2100, 128], scale: 0.001).converted(to: .q8_0)  // 282 KB quants: copied; 16 KB scales: a view
        let odd = try ramp([65, 1024])                           // 266 KB: copied into the tail of big's chunk
        try SafeTensorsWriter.write(path: path("model.safetensors"), tensors: [("big", big), ("mid", mid), ("q", q), ("odd", odd)])
        let file = try SafeTensorsFile(path: path("model.safetensors"))
        let ckpt = try Checkpoint(directory: dir)
        XCTAssertTrue(Checkpoint.copiesWeights, "UNIMOE_WEIGHTS=mapped is set in the test environment")
        let map = file.mapping
        func inFile(_ t: Tensor) -> Bool {
            let p = UnsafeRawPointer(t.raw)
            return p >= UnsafeRawPointer(map.baseAddress!) && p < UnsafeRawPointer(map.baseAddress! + map.count)
        }
        var taken: [String: Tensor] = [:]
        for (name, want) in [("big", big), ("mid", mid), ("q", q), ("odd", odd)] {
            let t = try ckpt.take(name)
            XCTAssertEqual(t.dtype, want.dtype, name)
            XCTAssertEqual(t.shape, want.shape, name)
            XCTAssertEqual(t.toArray(), want.toArray(), name)
            if name != "mid" { XCTAssertEqual(Int(bitPattern: UnsafeRawPointer(t.raw)) % 64, 0, name) }
            taken[name] = t
        }
        // The checkpoint's own mapping is another one than `file`'s: compare by content above, by
        // placement here (copies lie outside every file mapping; views lie at the file's offsets).
        let bigAt = Int(bitPattern: UnsafeRawPointer(taken["big"]!.raw))
        XCTAssertEqual(bigAt % (2 << 20), 0, "a fresh chunk starts on a 2 MiB boundary")
        XCTAssertEqual(Int(bitPattern: UnsafeRawPointer(taken["q"]!.raw)), bigAt + ((big.byteCount + 63) & ~63), "q fills big's chunk")
        let viaFile = try file.tensor("mid")
        XCTAssertFalse(inFile(taken["big"]!))
        XCTAssertTrue(inFile(viaFile))
        XCTAssertEqual(Int(bitPattern: UnsafeRawPointer(taken["mid"]!.raw)) % 4096,
                       Int(bitPattern: UnsafeRawPointer(viaFile.raw)) % 4096, "mid stays a view at its file offset")
        // Taken tensors outlive the checkpoint (their chunk lives as long as they do).
        let kept = taken["odd"]!
        taken = [:]
        XCTAssertEqual(kept.toArray(), odd.toArray())
    }

    func testTensorOutlivesFileObject() throws {
        try SafeTensorsWriter.write(path: path("m.safetensors"), tensors: [("a", try ramp([4, 4]))])
        var t: Tensor?
        do { t = try SafeTensorsFile(path: path("m.safetensors")).tensor("a") }
        XCTAssertEqual(t?.toArray(), try ramp([4, 4]).toArray())
    }

    func testHalfPrecisionRoundTrip() throws {
        let src = try ramp([4, 9], scale: 0.013)
        let bf = src.converted(to: .bf16), h = src.converted(to: .f16)
        try SafeTensorsWriter.write(path: path("h.safetensors"), tensors: [("bf", bf), ("h", h), ("f", src)])
        let f = try SafeTensorsFile(path: path("h.safetensors"))
        let rbf = try f.tensor("bf"), rh = try f.tensor("h")
        XCTAssertEqual(rbf.dtype, .bf16)
        XCTAssertEqual(rh.dtype, .f16)
        XCTAssertEqual(rbf.toArray(), bf.toArray())
        XCTAssertEqual(rh.toArray(), h.toArray())
        XCTAssertLessThan(relativeError(rbf.toArray(), src.toArray()), 1e-2)
        XCTAssertLessThan(relativeError(rh.toArray(), src.toArray()), 1e-3)
        // Known bit patterns: 1.0 is 0x3F80 in bf16 and 0x3C00 in f16; -2.5 is 0xC020 / 0xC100.
        let one = try Tensor(shape: [2], values: [1, -2.5])
        try SafeTensorsWriter.write(path: path("one.safetensors"), tensors: [("b", one.converted(to: .bf16)), ("h", one.converted(to: .f16))])
        let g = try SafeTensorsFile(path: path("one.safetensors"))
        let bits = { (t: Tensor) in (0..<2).map { t.raw.load(fromByteOffset: 2 * $0, as: UInt16.self) } }
        XCTAssertEqual(bits(try g.tensor("b")), [0x3F80, 0xC020])
        XCTAssertEqual(bits(try g.tensor("h")), [0x3C00, 0xC100])
    }

    func testMisalignedDataIsCopied() throws {
        // A header of odd length puts the data at an odd address: readable, but only as a copy.
        var header = Array(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"h":{"dtype":"F16","shape":[1],"data_offsets":[8,10]}}"#.utf8)
        if header.count % 2 == 0 { header.append(0x20) }
        XCTAssertEqual(header.count % 2, 1)
        var bytes = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header
        for v in [Float(1.5), -2] { bytes += withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
        bytes += withUnsafeBytes(of: Float16(0.5).bitPattern.littleEndian) { Array($0) }
        try Data(bytes).write(to: URL(fileURLWithPath: path("odd.safetensors")))
        let f = try SafeTensorsFile(path: path("odd.safetensors"))
        XCTAssertEqual(try f.tensor("w").toArray(), [1.5, -2])
        XCTAssertEqual(try f.tensor("h").toArray(), [0.5])
        XCTAssertEqual(Int(bitPattern: try f.tensor("w").raw) % 4, 0)
    }

    func testEmptyAndScalarTensors() throws {
        let empty = Tensor(zeros: [0, 4]), scalar = try Tensor(shape: [], values: [42])
        try SafeTensorsWriter.write(path: path("e.safetensors"), tensors: [("e", empty), ("s", scalar)])
        let f = try SafeTensorsFile(path: path("e.safetensors"))
        XCTAssertEqual(try f.tensor("e").shape, [0, 4])
        XCTAssertEqual(try f.tensor("s").toArray(), [42])
        XCTAssertEqual(try f.tensor("s").shape, [])
    }

    func testWriterEscapesNamesAndRejectsDuplicates() throws {
        let name = "we\"ird\\name\n\u{1}é"
        try SafeTensorsWriter.write(path: path("n.safetensors"), tensors: [(name, try ramp([2]))])
        XCTAssertEqual(try SafeTensorsFile(path: path("n.safetensors")).names, [name])
        XCTAssertThrowsError(try SafeTensorsWriter.write(path: path("d.safetensors"), tensors: [("a", try ramp([2])), ("a", try ramp([2]))])) { e in
            XCTAssertTrue("\(e)".contains("'a' is given twice"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("d.safetensors")))
        XCTAssertThrowsError(try SafeTensorsWriter.write(path: dir + "/no/such/dir/x.safetensors", tensors: []))
    }

    func testOtherFormatDTypesAreValidatedButRefused() throws {
        // An I64 buffer (e.g. position ids some exporters save): the file opens, taking it is refused.
        var bytes = withUnsafeBytes(of: UInt64(0).littleEndian) { Array($0) }
        let header = #"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},"w":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}}"#
        var h = Array(header.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        bytes = withUnsafeBytes(of: UInt64(h.count).littleEndian) { Array($0) } + h + [UInt8](repeating: 0, count: 20)
        try Data(bytes).write(to: URL(fileURLWithPath: path("model.safetensors")))
        let f = try SafeTensorsFile(path: path("model.safetensors"))
        XCTAssertEqual(f.names, ["ids", "w"])
        XCTAssertEqual(f.unsupported, ["ids": "I64"])
        XCTAssertThrowsError(try f.tensor("ids")) { e in
            XCTAssertEqual(e as? CheckpointError, .unsupportedDType(name: "ids", dtype: "I64"))
            XCTAssertTrue("\(e)".contains("'ids' has dtype I64"))
        }
        let c = try Checkpoint(directory: dir)
        _ = try c.take("w")
        XCTAssertThrowsError(try c.finishLoading()) { e in XCTAssertEqual(e as? CheckpointError, .unusedTensors(["ids"])) }
        c.ignore { $0 == "ids" }
        XCTAssertNoThrow(try c.finishLoading())
    }

    /// A file written by the reference Python `safetensors` library (scripts/fixtures/checkpoint.py).
    func testReadsReferenceFile() throws {
        let f = try Fixtures.tensors("checkpoint/reference.safetensors")
        let expected = try XCTUnwrap(Fixtures.json("checkpoint/reference.json") as? [String: [String: Any]])
        XCTAssertEqual(Set(f.names), Set(expected.keys))
        XCTAssertEqual(f.metadata, ["format": "pt", "note": "reference"])
        for (name, info) in expected {
            let t = try f.tensor(name)
            XCTAssertEqual(t.shape, info["shape"] as? [Int], name)
            XCTAssertEqual(t.dtype.rawValue, info["dtype"] as? String, name)
            let values = try XCTUnwrap(info["values"] as? [Double]).map { Float($0) }
            XCTAssertEqual(t.toArray(), values, name)
        }
    }
}
