import XCTest
import Foundation
import Tokenizer
import TestSupport

/// Vicuna v1 prompt text and placeholder splitting against the reference's
/// `tokenizer_image_audio_video_token`, run in Python with the `tokenizers` library.
final class TemplateTests: XCTestCase {
    func testVicunaTextIsExact() {
        let p = ChatTemplate.vicuna(query: "What is this?", images: 1, audios: 1, videos: 1)
        XCTAssertEqual(p, "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
            + "helpful, detailed, and polite answers to the user's questions. USER: <image>\n<audio>\n<video>\nWhat is this? ASSISTANT:")
        XCTAssertEqual(ChatTemplate.vicuna(query: "q", images: 0, audios: 2, videos: 0).hasSuffix("USER: <audio>\n<audio>\nq ASSISTANT:"), true)
    }

    func testPlaceholderValues() {
        XCTAssertEqual(Placeholder.image.rawValue, -200)
        XCTAssertEqual(Placeholder.audio.rawValue, -300)
        XCTAssertEqual(Placeholder.video.rawValue, -400)
    }

    func checkPlaceholders(_ kind: String) throws {
        let tok = try Tokenizer(directory: Fixtures.path("tokenizer/\(kind)"))
        let obj = try XCTUnwrap(Fixtures.json("tokenizer/expected_\(kind).json") as? [String: Any])
        let cases = try XCTUnwrap(obj["placeholders"] as? [[String: Any]])
        XCTAssertGreaterThan(cases.count, 5)
        for c in cases {
            let prompt = try XCTUnwrap(c["prompt"] as? String)
            if let q = c["query"] as? String, let i = c["images"] as? Int, let a = c["audios"] as? Int, let v = c["videos"] as? Int {
                XCTAssertEqual(ChatTemplate.vicuna(query: q, images: i, audios: a, videos: v), prompt)
            }
            let want = try XCTUnwrap(c["ids"] as? [Int])
            XCTAssertEqual(tok.encodeWithPlaceholders(prompt), want, "\(kind): \(prompt.debugDescription)")
        }
    }

    func testPlaceholdersLegacyLlama() throws { try checkPlaceholders("llama") }
    func testPlaceholdersMetaspaceLlama() throws { try checkPlaceholders("llama_metaspace") }

    func testPlaceholderCountsAndBOSOnce() throws {
        let tok = try Tokenizer(directory: Fixtures.path("tokenizer/llama"))
        let ids = tok.encodeWithPlaceholders(ChatTemplate.vicuna(query: "hi", images: 2, audios: 3, videos: 1))
        XCTAssertEqual(ids.filter { $0 == Placeholder.image.rawValue }.count, 2)
        XCTAssertEqual(ids.filter { $0 == Placeholder.audio.rawValue }.count, 3)
        XCTAssertEqual(ids.filter { $0 == Placeholder.video.rawValue }.count, 1)
        XCTAssertEqual(ids.first, tok.bosTokenId)
        XCTAssertEqual(ids.filter { $0 == tok.bosTokenId }.count, 1)
        // Without placeholders it is a plain encode.
        XCTAssertEqual(tok.encodeWithPlaceholders("plain text"), tok.encode("plain text"))
    }

    func testNoBOSTokenizerKeepsEveryChunk() throws {
        let tok = try Tokenizer(directory: Fixtures.path("tokenizer/qwen"))
        XCTAssertNil(tok.bosTokenId)
        XCTAssertEqual(tok.encodeWithPlaceholders("a<image>b"), tok.encode("a") + [-200] + tok.encode("b"))
    }
}
