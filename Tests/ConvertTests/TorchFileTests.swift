import Foundation
import XCTest
@testable import Checkpoint
import TestSupport

/// The ZIP reader and the safe unpickler on hand-built files: every hostile or broken input is a
/// typed `TorchFileError` naming the opcode, global or entry at fault.
final class TorchFileTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("torchfile-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    static func le(_ v: Int, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    /// A stored ZIP of the entries; `patch` may edit each central record (bytes, entry index) before writing.
    /// With `zip64`, sizes and offsets live in zip64 extra fields and a zip64 end record (as in the
    /// multi-GB shards of real checkpoints).
    static func zip(_ entries: [(String, [UInt8])], zip64: Bool = false, patch: (inout [UInt8], Int) -> Void = { _, _ in }) -> [UInt8] {
        var out: [UInt8] = [], central: [UInt8] = []
        for (i, (name, data)) in entries.enumerated() {
            let offset = out.count
            let n = Array(name.utf8)
            out += le(0x0403_4B50, 4) + le(20, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(0, 4)
            out += le(data.count, 4) + le(data.count, 4) + le(n.count, 2) + le(0, 2) + n + data
            var c = le(0x0201_4B50, 4) + le(20, 2) + le(20, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(0, 4)
            if zip64 {
                c += le(0xFFFF_FFFF, 4) + le(0xFFFF_FFFF, 4) + le(n.count, 2) + le(28, 2) + le(0, 2) + le(0, 2) + le(0, 2)
                c += le(0, 4) + le(0xFFFF_FFFF, 4) + n + le(1, 2) + le(24, 2) + le(data.count, 8) + le(data.count, 8) + le(offset, 8)
            } else {
                c += le(data.count, 4) + le(data.count, 4) + le(n.count, 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 2)
                c += le(0, 4) + le(offset, 4) + n
            }
            patch(&c, i)
            central += c
        }
        let cdOffset = out.count
        out += central
        if zip64 {
            let rec = out.count
            out += le(0x0606_4B50, 4) + le(44, 8) + le(45, 2) + le(45, 2) + le(0, 4) + le(0, 4)
            out += le(entries.count, 8) + le(entries.count, 8) + le(central.count, 8) + le(cdOffset, 8)
            out += le(0x0706_4B50, 4) + le(0, 4) + le(rec, 8) + le(1, 4)
            out += le(0x0605_4B50, 4) + le(0, 2) + le(0, 2) + le(0xFFFF, 2) + le(0xFFFF, 2)
            out += le(0xFFFF_FFFF, 4) + le(0xFFFF_FFFF, 4) + le(0, 2)
            return out
        }
        out += le(0x0605_4B50, 4) + le(0, 2) + le(0, 2) + le(entries.count, 2) + le(entries.count, 2)
        out += le(central.count, 4) + le(cdOffset, 4) + le(0, 2)
        return out
    }

    /// A pickle of `{"w": tensor([1, 2, 3])}` (float32 storage '0'), protocol 2, as torch.save writes it.
    static func statePickle() -> [UInt8] {
        var p: [UInt8] = [0x80, 2, 0x7D, 0x28]
        func str(_ s: String) -> [UInt8] { [0x58] + le(s.utf8.count, 4) + Array(s.utf8) }
        func global(_ m: String, _ n: String) -> [UInt8] { [0x63] + Array("\(m)\n\(n)\n".utf8) }
        p += str("w") + global("torch._utils", "_rebuild_tensor_v2") + [0x28]
        p += [0x28] + str("storage") + global("torch", "FloatStorage") + str("0") + str("cpu") + [0x4B, 3, 0x74, 0x51]
        p += [0x4B, 0, 0x4B, 3, 0x85, 0x4B, 1, 0x85, 0x89]
        p += global("collections", "OrderedDict") + [0x29, 0x52, 0x74, 0x52, 0x75, 0x2E]
        return p
    }

    static let floats: [UInt8] = [Float(1), 2, 3].flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian) { Array($0) } }

    func write(_ bytes: [UInt8]) throws -> String {
        let p = (dir as NSString).appendingPathComponent("f-\(UUID().uuidString).bin")
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    func open(pickle: [UInt8], storage: [UInt8] = floats) throws -> TorchCheckpointFile {
        try TorchCheckpointFile(path: try write(Self.zip([("a/data.pkl", pickle), ("a/byteorder", Array("little".utf8)), ("a/data/0", storage)])))
    }

    func assertError(_ body: @autoclosure () throws -> Any, _ phrases: String..., file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { e in
            XCTAssertTrue(e is TorchFileError, "not a TorchFileError: \(e)", file: file, line: line)
            let m = "\(e)"
            XCTAssertFalse(m.contains("\n"), file: file, line: line)
            for p in phrases { XCTAssertTrue(m.contains(p), "'\(m)' should mention '\(p)'", file: file, line: line) }
        }
    }

    func testHandBuiltStateDictReads() throws {
        let f = try open(pickle: Self.statePickle())
        XCTAssertEqual(f.names, ["w"])
        let ref = try XCTUnwrap(f.ref("w"))
        XCTAssertEqual(ref.shape, [3])
        XCTAssertEqual(try f.tensor(ref, name: "w").toArray(), [1, 2, 3])
    }

    func testZip64ArchiveReads() throws {
        let bytes = Self.zip([("a/data.pkl", Self.statePickle()), ("a/data/0", Self.floats)], zip64: true)
        let f = try TorchCheckpointFile(path: try write(bytes))
        XCTAssertEqual(try f.tensor(XCTUnwrap(f.ref("w")), name: "w").toArray(), [1, 2, 3])
        // A zip64 extra field whose offset points past the data area is still refused.
        let bad = Self.zip([("a/x", [1, 2, 3])], zip64: true) { c, _ in c.replaceSubrange((c.count - 8)..<c.count, with: Self.le(1 << 40, 8)) }
        assertError(try ZipArchive(path: try write(bad)), "local header at 1099511627776", "outside the data area")
        // A huge zip64 size for a stored entry (a zip bomb's declaration) is refused before any read.
        let bomb = Self.zip([("a/x", [1, 2, 3])], zip64: true) { c, _ in
            c.replaceSubrange((c.count - 24)..<(c.count - 8), with: Self.le(1 << 50, 8) + Self.le(1 << 50, 8))
        }
        assertError(try ZipArchive(path: try write(bomb)), "declares 1125899906842624 bytes", "past the end")
    }

    func testNewerProtocolsAndEveryFloatDType() throws {
        for proto in [4, 5] {
            let f = try TorchCheckpointFile(path: Fixtures.path("convert/extra/protocol\(proto).bin"))
            XCTAssertEqual(f.names, ["f32", "f16", "bf16"])
            func values(_ n: String) throws -> [Float] { try f.tensor(XCTUnwrap(f.ref(n)), name: n).toArray() }
            XCTAssertEqual(try values("f32"), [0, 1, 2, 3, 4, 5])
            XCTAssertEqual(try f.tensor(XCTUnwrap(f.ref("f32")), name: "f32").shape, [2, 3])
            XCTAssertEqual(try f.tensor(XCTUnwrap(f.ref("f16")), name: "f16").dtype, .f16)
            XCTAssertEqual(try values("f16"), [0.5, -2])
            XCTAssertEqual(try f.tensor(XCTUnwrap(f.ref("bf16")), name: "bf16").dtype, .bf16)
            XCTAssertEqual(try values("bf16"), [1.5, 3, -0.25])
        }
    }

    func testFixtureSharesStorageAtAnOffset() throws {
        let f = try TorchCheckpointFile(path: Fixtures.path("convert/base/pytorch_model.bin"))
        let embed = try XCTUnwrap(f.ref("model.embed_tokens.weight")), head = try XCTUnwrap(f.ref("lm_head.weight"))
        XCTAssertEqual(embed.storage.key, head.storage.key)
        XCTAssertEqual(embed.offset, 0)
        XCTAssertEqual(head.offset, 64 * 32)
        XCTAssertEqual(try f.tensor(head, name: "lm_head.weight").shape, [64, 32])
    }

    func testUnknownOpcodeIsNamed() {
        var p = Self.statePickle()
        p.insert(0x81, at: 2)   // NEWOBJ
        assertError(try open(pickle: p), "opcode 0x81", "at byte 2", "not supported")
        var q = Self.statePickle()
        q.insert(0x69, at: 2)   // INST
        assertError(try open(pickle: q), "opcode 0x69 'i'")
    }

    func testStackGlobalForbidden() {
        let p: [UInt8] = [0x80, 4, 0x8C, 2] + Array("os".utf8) + [0x8C, 6] + Array("system".utf8) + [0x93, 0x2E]
        assertError(try open(pickle: p), "global 'os.system'", "not allowed")
    }

    func testPickleStructuralErrors() {
        assertError(try open(pickle: [0x80, 2, 0x7D]), "no STOP")
        assertError(try open(pickle: [0x80, 2, 0x73, 0x2E]), "stack underflow")
        assertError(try open(pickle: [0x80, 2, 0x68, 7, 0x2E]), "memo entry 7")
        assertError(try open(pickle: [0x80, 2, 0x58, 0xFF, 0xFF, 0xFF, 0x7F, 0x2E]), "runs past the end")
        assertError(try open(pickle: [0x80, 2, 0x4B, 1, 0x2E]), "not a state dict")
        assertError(try open(pickle: [0x80, 9, 0x2E]), "protocol 9")
        // Calling a storage type (allow-listed as a name only) is refused.
        let call: [UInt8] = [0x80, 2, 0x63] + Array("torch\nFloatStorage\n".utf8) + [0x29, 0x52, 0x2E]
        assertError(try open(pickle: call), "not callable")
    }

    func testHostileNestingIsRefusedOrTornDownWithoutRecursion() {
        // 100 nested 1-tuples: refused by depth.
        let deep: [UInt8] = [0x80, 2, 0x4E] + [UInt8](repeating: 0x85, count: 100) + [0x2E]
        assertError(try open(pickle: deep), "tuples nested deeper than 64")
        // A 300000-long chain of lists linked through the memo (each appended to the previous after
        // the fact), then a list holding itself: freed without recursion, a typed error, no crash.
        let n = 300_000
        var chain: [UInt8] = [0x80, 2]
        for i in 0..<n { chain += [0x5D, 0x72] + Self.le(i, 4) + [0x30] }
        for i in 0..<(n - 1) { chain += [0x6A] + Self.le(i, 4) + [0x6A] + Self.le(i + 1, 4) + [0x61, 0x30] }
        chain += [0x6A] + Self.le(n - 1, 4) + [0x6A] + Self.le(n - 1, 4) + [0x61, 0x30]
        chain += [0x6A] + Self.le(0, 4) + [0x2E]
        assertError(try open(pickle: chain), "holds a list, not a state dict")
    }

    func testStorageChecks() {
        assertError(try open(pickle: Self.statePickle(), storage: Array(Self.floats.prefix(8))), "storage '0'", "12 bytes", "holds 8")
        let noStorage = Self.zip([("a/data.pkl", Self.statePickle())])
        assertError(try TorchCheckpointFile(path: try write(noStorage)), "no zip entry a/data/0")
    }

    func testZipStructuralErrors() throws {
        let good = Self.zip([("a/data.pkl", Self.statePickle()), ("a/data/0", Self.floats)])
        assertError(try ZipArchive(path: try write([])), "too short")
        assertError(try ZipArchive(path: try write(Array(good.dropLast(5)))), "end-of-central-directory")
        // Local header offset beyond the data area.
        let outside = Self.zip([("a/data.pkl", Self.statePickle())]) { c, _ in
            c.replaceSubrange(42..<46, with: Self.le(0x7FFF_0000, 4))
        }
        assertError(try ZipArchive(path: try write(outside)), "outside the data area")
        // Two central records pointing at the same local header.
        let overlap = Self.zip([("a/x", [1, 2, 3]), ("a/y", [4, 5, 6])]) { c, i in
            if i == 1 { c.replaceSubrange(42..<46, with: Self.le(0, 4)) }
        }
        assertError(try ZipArchive(path: try write(overlap)), "different name")
        // An entry whose size runs into the next entry's local header.
        let runs = Self.zip([("a/x", [1, 2, 3]), ("a/y", [4, 5, 6])]) { c, i in
            if i == 0 { c.replaceSubrange(20..<28, with: Self.le(20, 4) + Self.le(20, 4)) }
        }
        assertError(try ZipArchive(path: try write(runs)), "entries 'a/x' and 'a/y' overlap")
        // Compressed sizes that disagree for a stored entry, and a deflate method.
        let sizes = Self.zip([("a/x", [1, 2, 3])]) { c, _ in c.replaceSubrange(20..<24, with: Self.le(2, 4)) }
        assertError(try ZipArchive(path: try write(sizes)), "declares 3 bytes uncompressed but 2 stored")
        let deflate = Self.zip([("a/x", [1, 2, 3])]) { c, _ in c.replaceSubrange(10..<12, with: Self.le(8, 2)) }
        assertError(try ZipArchive(path: try write(deflate)), "'a/x' is compressed (method 8)", "unsupported")
        let dup = Self.zip([("a/x", [1]), ("a/x", [2])])
        assertError(try ZipArchive(path: try write(dup)), "more than once")
        // Too many entries declared.
        var many = good
        many.replaceSubrange((many.count - 14)..<(many.count - 10), with: Self.le(0xFFFF, 2) + Self.le(0xFFFF, 2))
        assertError(try ZipArchive(path: try write(many)), "zip64")
    }
}

/// The name rules of `ReleasedCheckpoint`.
final class ConvertMappingTests: XCTestCase {
    func testNames() {
        typealias R = ReleasedCheckpoint
        XCTAssertEqual(R.map("model.layers.3.mlp.deepspeed_moe.gate.wg.weight"), .name("model.layers.3.mlp.gate.weight"))
        XCTAssertEqual(R.map("model.layers.12.mlp.deepspeed_moe.experts.deepspeed_experts.7.down_proj.weight"),
                       .name("model.layers.12.mlp.experts.7.down_proj.weight"))
        XCTAssertEqual(R.map("model.layers.0.self_attn.o_proj.weight"), .name("model.layers.0.self_attn.o_proj.weight"))
        XCTAssertEqual(R.map("model.layers.0.self_attn.rotary_emb.inv_freq"), .drop)
        XCTAssertEqual(R.map("model.mm_projector.0.bias"), .name("model.mm_projector.0.bias"))
        XCTAssertEqual(R.map("model.layers.07.self_attn.q_proj.weight"), .unmapped)
        XCTAssertEqual(R.map("model.layers.0.mlp.deepspeed_moe.experts.deepspeed_experts.1.gate_proj.bias"), .unmapped)
        XCTAssertEqual(R.map("model.layers.0.mlp.deepspeed_moe.gate.wg.bias"), .unmapped)
        XCTAssertEqual(R.map("model.layers.x.self_attn.q_proj.weight"), .unmapped)
        XCTAssertEqual(R.map("transformer.h.0.attn.weight"), .unmapped)
        XCTAssertEqual(R.strip("base_model.model.model.norm.weight"), "model.norm.weight")
    }
}
