import XCTest
import Foundation
import Tokenizer
import TestSupport

/// Loading rules, special ids, streaming edge cases and typed errors for malformed files.
final class BehaviourTests: XCTestCase {
    func llama() throws -> Tokenizer { try Tokenizer(directory: Fixtures.path("tokenizer/llama")) }

    func testSpecialIdsAndVocabulary() throws {
        let t = try llama()
        XCTAssertEqual(t.bosTokenId, 1)
        XCTAssertEqual(t.eosTokenId, 2)
        XCTAssertEqual(t.vocabularySize, 1000)
        XCTAssertEqual(t.tokenId("<unk>"), 0)
        XCTAssertEqual(t.tokenId("<0x0A>"), 13)
        XCTAssertNil(t.tokenId("definitely not a token"))
        let q = try Tokenizer(directory: Fixtures.path("tokenizer/qwen"))
        XCTAssertNil(q.bosTokenId)
        XCTAssertEqual(q.eosTokenId, q.tokenId("<|im_end|>"))
        let l3 = try Tokenizer(directory: Fixtures.path("tokenizer/llama3"))
        XCTAssertEqual(l3.bosTokenId, l3.tokenId("<|begin_of_text|>"))
    }

    func testWithoutConfigBOSComesFromTemplate() throws {
        let json = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("tokenizer/llama/tokenizer.json")))
        let t = try Tokenizer(json: json)
        XCTAssertEqual(t.bosTokenId, 1)
        XCTAssertEqual(t.eosTokenId, 2)
        XCTAssertEqual(t.encode("hello"), try llama().encode("hello"))
    }

    func testCanonicallyEquivalentSpellingsStayDistinct() throws {
        let t = try llama()
        XCTAssertNotEqual(t.encode("caf\u{E9}"), t.encode("cafe\u{301}"))
        XCTAssertEqual(t.decode(t.encode("cafe\u{301}")).unicodeScalars.map(\.value), "cafe\u{301}".unicodeScalars.map(\.value))
    }

    func testStreamingHoldsBackPartialCharacters() throws {
        let t = try llama()
        // "你" is not in this small vocabulary: three <0xNN> byte tokens.
        let ids = t.encode("你", addSpecialTokens: false)
        XCTAssertEqual(ids.count, 4)  // ▁ then three bytes
        var s = StreamingDetokenizer(tokenizer: t)
        var pieces: [String] = []
        for id in ids { pieces.append(s.append(id)) }
        pieces.append(s.finish())
        XCTAssertEqual(pieces, ["", "", "", "你", ""])
        // An unfinished character comes out only at finish, as decode shows it.
        var s2 = StreamingDetokenizer(tokenizer: t)
        XCTAssertEqual(s2.append(ids[0]) + s2.append(ids[1]) + s2.append(ids[2]), "")
        XCTAssertEqual(s2.finish(), t.decode(Array(ids.prefix(3))))
    }

    func testStreamingByteLevel() throws {
        let t = try Tokenizer(directory: Fixtures.path("tokenizer/qwen"))
        let text = "emoji 👨‍👩‍👧‍👦 and 你好 done"
        var s = StreamingDetokenizer(tokenizer: t)
        var out = ""
        for id in t.encode(text) {
            let piece = s.append(id)
            XCTAssertFalse(piece.contains("\u{FFFD}"))
            out += piece
        }
        out += s.finish()
        XCTAssertEqual(Array(out.utf8), Array(text.utf8))
    }

    // MARK: malformed files

    func load(_ text: String) throws -> Tokenizer { try Tokenizer(json: Data(text.utf8)) }

    let good = #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}"#

    func testMinimalFileWorks() throws {
        let t = try load(good)
        XCTAssertEqual(t.encode("abab"), [2, 2])
        XCTAssertEqual(t.decode([2, 0]), "ab a")  // no decoder: tokens joined by spaces
    }

    func testBadJSON() {
        XCTAssertThrowsError(try load(#"{"model": {"#)) { e in
            guard case TokenizerError.badJSON = e else { return XCTFail("\(e)") }
        }
        XCTAssertThrowsError(try load("not json")) { e in
            guard case TokenizerError.badJSON = e else { return XCTFail("\(e)") }
        }
    }

    func testUnknownModelType() {
        XCTAssertThrowsError(try load(#"{"model": {"type": "Unigram", "vocab": []}}"#)) { e in
            XCTAssertEqual(e as? TokenizerError, .unsupported(file: "tokenizer.json", stage: "model", type: "Unigram"))
        }
    }

    func testMissingVocab() {
        XCTAssertThrowsError(try load(#"{"model": {"type": "BPE", "merges": []}}"#)) { e in
            guard case TokenizerError.malformed(_, let reason) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(reason.contains("vocab"), reason)
        }
        XCTAssertThrowsError(try load(#"{"normalizer": null}"#)) { e in
            guard case TokenizerError.malformed = e else { return XCTFail("\(e)") }
        }
    }

    func testMergeWithUnknownToken() {
        let text = #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b", "ab c"]}}"#
        XCTAssertThrowsError(try load(text)) { e in
            XCTAssertEqual(e as? TokenizerError, .mergeOutOfVocabulary(file: "tokenizer.json", merge: "ab c", token: "c"))
        }
        let noResult = #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}}"#
        XCTAssertThrowsError(try load(noResult)) { e in
            XCTAssertEqual(e as? TokenizerError, .mergeOutOfVocabulary(file: "tokenizer.json", merge: "a b", token: "ab"))
        }
    }

    func testUnknownStageTypesAndBadRegex() {
        let stages = [
            (#""normalizer": {"type": "Precompiled"}"#, "normalizer"),
            (#""pre_tokenizer": {"type": "Frobnicate"}"#, "pre-tokenizer"),
            (#""decoder": {"type": "CTC"}"#, "decoder"),
            (#""post_processor": {"type": "Nope"}"#, "post-processor"),
        ]
        for (member, stage) in stages {
            let text = #"{"model": {"vocab": {"a": 0}, "merges": []}, "# + member + "}"
            XCTAssertThrowsError(try load(text)) { e in
                guard case TokenizerError.unsupported(_, let s, _) = e else { return XCTFail("\(e)") }
                XCTAssertEqual(s, stage)
            }
        }
        let badRegex = #"{"model": {"vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"}}"#
        XCTAssertThrowsError(try load(badRegex)) { e in
            guard case TokenizerError.badRegex = e else { return XCTFail("\(e)") }
        }
    }

    func testMissingDirectory() {
        XCTAssertThrowsError(try Tokenizer(directory: "/nonexistent/tok")) { e in
            guard case TokenizerError.io(let path, _) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(path.hasSuffix("tokenizer.json"))
        }
    }

    func testErrorDescriptionsAreOneLine() {
        let e = TokenizerError.mergeOutOfVocabulary(file: "t.json", merge: "a \n", token: "\n")
        XCTAssertFalse(e.description.contains("\n"))
    }
}
