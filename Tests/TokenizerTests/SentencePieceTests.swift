import Foundation
import XCTest
@testable import Tokenizer
import TestSupport

/// tokenizer.json from a SentencePiece tokenizer.model (scripts/fixtures/sp_tokenizer.py): the same
/// file transformers' LlamaTokenizer conversion writes, the same ids on every corpus line, and typed
/// errors for models that are not well-formed protobuf.
final class SentencePieceTests: XCTestCase {
    let dir = Fixtures.path("tokenizer/sentencepiece")

    func converted() throws -> Data {
        let model = try SentencePieceModel(path: dir + "/tokenizer.model")
        let cfg = try Data(contentsOf: URL(fileURLWithPath: dir + "/tokenizer_config.json"))
        let options = try SentencePieceConverter.Options(config: cfg, file: "tokenizer_config.json")
        return Data((try SentencePieceConverter.tokenizerJSON(model, options: options, file: "tokenizer.model").serialized()).utf8)
    }

    func testModelProtoReads() throws {
        let m = try SentencePieceModel(path: dir + "/tokenizer.model")
        XCTAssertEqual(m.modelType, .bpe)
        XCTAssertTrue(m.byteFallback)
        XCTAssertEqual(m.pieces.count, 700)
        XCTAssertEqual(m.pieces[0].text, "<unk>"); XCTAssertEqual(m.pieces[0].type, .unknown)
        XCTAssertEqual(m.pieces[1].type, .control)
        XCTAssertEqual(m.pieces.first { $0.text == "<audio>" }?.type, .userDefined)
        XCTAssertEqual(m.pieces.first { $0.text == "<0x41>" }?.type, .byte)
        XCTAssertEqual([m.unkId, m.bosId, m.eosId, m.padId], [0, 1, 2, -1])
    }

    /// The converted file equals transformers' own, member for member (order aside).
    func testSameFileAsTransformers() throws {
        let ours = try XCTUnwrap(try JSONSerialization.jsonObject(with: try converted()) as? NSDictionary)
        let theirs = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/expected_tokenizer.json"))) as? NSDictionary)
        for key in ["added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder"] {
            XCTAssertEqual(ours[key] as? NSObject, theirs[key] as? NSObject, key)
        }
        let om = try XCTUnwrap(ours["model"] as? NSDictionary), tm = try XCTUnwrap(theirs["model"] as? NSDictionary)
        XCTAssertEqual(om["vocab"] as? NSDictionary, tm["vocab"] as? NSDictionary)
        XCTAssertEqual(om["merges"] as? NSArray, tm["merges"] as? NSArray)
        XCTAssertEqual((om["merges"] as? NSArray)?.count ?? 0 > 100, true, "the fixture must have merges to order")
        XCTAssertEqual(om, tm)
    }

    func testSameIdsAsTransformers() throws {
        let tok = try Tokenizer(json: try converted(), config: try Data(contentsOf: URL(fileURLWithPath: dir + "/tokenizer_config.json")))
        let corpus = try XCTUnwrap(try Fixtures.json("tokenizer/corpus.json") as? [String])
        let expected = try XCTUnwrap(try Fixtures.json("tokenizer/sentencepiece/expected.json") as? [String: [[Int]]])
        let ids = try XCTUnwrap(expected["ids"]), plain = try XCTUnwrap(expected["ids_plain"])
        XCTAssertEqual(ids.count, corpus.count)
        var mismatches = 0
        for (i, line) in corpus.enumerated() {
            if tok.encode(line) != ids[i] || tok.encode(line, addSpecialTokens: false) != plain[i] {
                mismatches += 1
                if mismatches <= 3 { XCTFail("line \(i) \(line.debugDescription): \(tok.encode(line)) vs \(ids[i])") }
            }
        }
        XCTAssertEqual(mismatches, 0)
    }

    func testDirectoryConversionOnlyWhenMissing() throws {
        let tmp = NSTemporaryDirectory() + "/sp-\(UUID().uuidString)"
        try FileManager.default.copyItem(atPath: dir, toPath: tmp)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let text = try XCTUnwrap(try SentencePieceConverter.tokenizerJSON(directory: tmp))
        try SentencePieceConverter.write(text, into: tmp)
        XCTAssertEqual(try Tokenizer(directory: tmp).encode("Hello world"), try Tokenizer(json: try converted()).encode("Hello world"))
        XCTAssertNil(try SentencePieceConverter.tokenizerJSON(directory: tmp), "an existing tokenizer.json is kept")
    }

    // MARK: malformed models

    /// Protobuf encoding helpers for hand-built models.
    func varint(_ v: UInt64) -> [UInt8] {
        var v = v, out: [UInt8] = []
        repeat { var b = UInt8(v & 0x7f); v >>= 7; if v != 0 { b |= 0x80 }; out.append(b) } while v != 0
        return out
    }
    func field(_ n: Int, _ payload: [UInt8]) -> [UInt8] { varint(UInt64(n << 3 | 2)) + varint(UInt64(payload.count)) + payload }
    func piece(_ s: String, type: Int = 1) -> [UInt8] { field(1, field(1, Array(s.utf8)) + varint(3 << 3) + varint(UInt64(type))) }
    func trainer(modelType: Int) -> [UInt8] { field(2, varint(3 << 3) + varint(UInt64(modelType))) }
    /// A valid tiny BPE model.
    var tiny: [UInt8] { piece("<unk>", type: 2) + piece("<s>", type: 3) + piece("</s>", type: 3) + piece("a") + piece("b") + piece("ab") + piece("\u{2581}") + piece("\u{2581}ab") + trainer(modelType: 2) }

    func assertMalformed(_ bytes: [UInt8], _ phrase: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SentencePieceConverter.tokenizerJSON(SentencePieceModel(data: Data(bytes), file: "t.model"), file: "t.model"),
                             file: file, line: line) { e in
            guard case TokenizerError.malformed(let f, let reason) = e else { return XCTFail("\(e)", file: file, line: line) }
            XCTAssertEqual(f, "t.model", file: file, line: line)
            XCTAssertTrue(reason.contains(phrase), "'\(reason)' should mention '\(phrase)'", file: file, line: line)
        }
    }

    func testHandBuiltModelConverts() throws {
        let json = try SentencePieceConverter.tokenizerJSON(SentencePieceModel(data: Data(tiny), file: "t.model"), file: "t.model")
        XCTAssertEqual(json["model"]?["merges"], .array([.array([.string("a"), .string("b")]), .array([.string("\u{2581}"), .string("ab")])]))
        let tok = try Tokenizer(json: Data(json.serialized().utf8))
        XCTAssertEqual(tok.encode("ab", addSpecialTokens: false), [7])
        XCTAssertEqual(tok.encode("ab"), [1, 7])
    }

    func testMalformedModelsAreRefused() throws {
        assertMalformed([], "no pieces")
        assertMalformed(Array("this is not a protobuf at all".utf8), "not a valid SentencePiece model")
        assertMalformed(Array(tiny.dropLast(1)), "runs past")
        assertMalformed(tiny + [0x08] + [UInt8](repeating: 0xff, count: 11), "varint")
        assertMalformed(tiny + [0x0b], "wire type 3")                       // a group
        assertMalformed(tiny + [0x00], "field number 0")
        assertMalformed(field(1, field(1, [0xff, 0xfe])) + tiny, "not valid UTF-8")
        assertMalformed(tiny + piece("ab"), "are both 'ab'")
        assertMalformed(tiny + piece("c", type: 9), "type 9")
        assertMalformed(field(1, varint(2 << 3 | 5) + [0, 0]) + tiny, "ends inside a 32-bit field")
        assertMalformed(piece("x") + field(1, field(1, Array("".utf8))) + tiny, "no piece text")
        assertMalformed(tiny + trainer(modelType: 1), "unigram")
        assertMalformed(tiny + field(2, varint(41 << 3) + varint(99)), "bos_id is 99")
        // A model whose special tokens are named differently from the config's.
        XCTAssertThrowsError(try SentencePieceConverter.tokenizerJSON(
            SentencePieceModel(data: Data(piece("[UNK]", type: 2) + piece("<s>", type: 3) + piece("</s>", type: 3) + piece("a") + trainer(modelType: 2)), file: "t.model"), file: "t.model")) { e in
            XCTAssertTrue("\(e)".contains("unk_token '<unk>'"), "\(e)")
        }
        XCTAssertThrowsError(try SentencePieceConverter.Options(config: Data(#"{"add_bos_token": "yes"}"#.utf8), file: "c.json")) { e in
            XCTAssertTrue("\(e)".contains("'add_bos_token' must be true or false"), "\(e)")
        }
        XCTAssertThrowsError(try SentencePieceConverter.Options(config: Data(#"{"tokenizer_class": "T5Tokenizer"}"#.utf8), file: "c.json")) { e in
            XCTAssertTrue("\(e)".contains("tokenizer_class 'T5Tokenizer'"), "\(e)")
        }
    }
}
