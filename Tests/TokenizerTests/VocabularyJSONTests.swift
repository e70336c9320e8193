import XCTest
import Foundation
import Tokenizer

/// tokenizer.json through the shared JSON parser: vocabulary keys stay byte-exact, duplicate keys
/// behave as in the `tokenizers` library (accepted, the last wins), malformed text is `badJSON`.
final class VocabularyJSONTests: XCTestCase {
    func testCanonicallyEqualTokensStayDistinct() throws {
        // "é" precomposed (id 0) and "e" + combining acute (id 1) are equal Swift Strings.
        let text = #"{"model": {"type": "BPE", "vocab": {"\u00e9": 0, "e\u0301": 1, "e": 2, "\u0301": 3}, "merges": [["e", "\u0301"]]}}"#
        let t = try Tokenizer(json: Data(text.utf8))
        XCTAssertEqual(Array(t.decode([0]).utf8), Array("\u{e9}".utf8))
        XCTAssertEqual(Array(t.decode([1]).utf8), Array("e\u{301}".utf8))
        XCTAssertEqual(t.encode("e\u{301}"), [1])
        XCTAssertEqual(t.encode("\u{e9}"), [0])
    }

    func testDuplicateKeysLastWins() throws {
        let text = #"{"model": {"type": "Unigram"}, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}"#
        XCTAssertEqual(try Tokenizer(json: Data(text.utf8)).encode("ab"), [2])
    }

    func testMalformedTextNamesTheByte() {
        for (text, offset) in [(#"{"model": [1, 2,]}"#, 16), ("{\"model\": \"\\ud800\"}", 11), (#"{"model": 01}"#, 10)] {
            XCTAssertThrowsError(try Tokenizer(json: Data(text.utf8))) { e in
                guard case TokenizerError.badJSON(let file, let o, _) = e else { return XCTFail("\(e)") }
                XCTAssertEqual(file, "tokenizer.json")
                XCTAssertEqual(o, offset, text)
            }
        }
    }
}

final class MergeStringTests: XCTestCase {
    /// "e \u{301}" is two tokens: the combining acute must not fuse with the separating space.
    func testMergeWhoseSecondTokenStartsWithACombiningMark() throws {
        let json = """
        {"model": {"type": "BPE", "vocab": {"e": 0, "\\u0301": 1, "e\\u0301": 2}, "merges": ["e \\u0301"]}}
        """
        let tok = try Tokenizer(json: Data(json.utf8))
        XCTAssertEqual(tok.encode("e\u{301}", addSpecialTokens: false), [2])
    }
}
