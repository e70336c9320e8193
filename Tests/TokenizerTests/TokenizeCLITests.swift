import XCTest
import Foundation
import TestSupport

/// `unimoe tokenize` / `unimoe detokenize` on the real binary, against the `tokenizers` library's ids.
final class TokenizeCLITests: XCTestCase {
    func run(_ args: [String]) throws -> ProcessResult {
        let r = try Binaries.unimoe(args, timeout: 60)
        XCTAssertFalse(r.timedOut)
        return r
    }

    func object(_ r: ProcessResult) throws -> [String: Any] {
        XCTAssertEqual(r.stdoutLines.count, 1, r.stdout)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    }

    func testTokenizeMatchesLibrary() throws {
        let corpus = try XCTUnwrap(Fixtures.json("tokenizer/corpus.json") as? [String])
        for kind in ["llama", "qwen"] {
            let e = try XCTUnwrap(Fixtures.json("tokenizer/expected_\(kind).json") as? [String: Any])
            let ids = try XCTUnwrap(e["ids"] as? [[Int]]), plain = try XCTUnwrap(e["ids_plain"] as? [[Int]])
            let dir = Fixtures.path("tokenizer/\(kind)")
            for i in [6, 19, 34] {
                let r = try run(["tokenize", "--tokenizer", dir, "--text", corpus[i]])
                XCTAssertEqual(r.status, 0, r.stderr)
                XCTAssertEqual(try object(r)["ids"] as? [Int], ids[i], "\(kind) line \(i)")
                let r2 = try run(["tokenize", "--tokenizer", dir, "--text", corpus[i], "--no-special"])
                XCTAssertEqual(try object(r2)["ids"] as? [Int], plain[i], "\(kind) line \(i) --no-special")
            }
        }
    }

    func testDetokenize() throws {
        let dir = Fixtures.path("tokenizer/llama")
        let r = try run(["tokenize", "--tokenizer", dir, "--text", "Hello world, 你好!"])
        let ids = try XCTUnwrap(try object(r)["ids"] as? [Int])
        let d = try run(["detokenize", "--tokenizer", dir, "--ids", ids.map(String.init).joined(separator: ",")])
        XCTAssertEqual(d.status, 0, d.stderr)
        XCTAssertEqual(try object(d)["text"] as? String, "Hello world, 你好!")
        let k = try run(["detokenize", "--tokenizer", dir, "--ids", ids.map(String.init).joined(separator: ","), "--keep-special"])
        XCTAssertEqual(try object(k)["text"] as? String, "<s> Hello world, 你好!")
    }

    func testMalformedTokenizerIsOneLineExitOne() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tok-bad-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = (dir as NSString).appendingPathComponent("tokenizer.json")
        let cases = [
            ("{\"model\": ", "invalid JSON"),
            (#"{"model": {"type": "WordPiece", "vocab": {}}}"#, "unsupported model type 'WordPiece'"),
            (#"{"model": {"type": "BPE", "merges": []}}"#, "no 'vocab'"),
            (#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a \n"]}}"#, "not in the vocabulary"),
        ]
        for (text, fragment) in cases {
            try Data(text.utf8).write(to: URL(fileURLWithPath: file))
            let r = try run(["tokenize", "--tokenizer", dir, "--text", "x"])
            XCTAssertEqual(r.status, 1, text)
            XCTAssertEqual(r.stdout, "")
            XCTAssertEqual(r.stderr.filter { $0 == "\n" }.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.hasPrefix("unimoe tokenize: ") && r.stderr.contains(fragment), r.stderr)
        }
        let missing = try run(["detokenize", "--tokenizer", "/nonexistent", "--ids", "1"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.contains("/nonexistent/tokenizer.json"), missing.stderr)
    }

    func testUsageErrors() throws {
        XCTAssertEqual(try run(["tokenize", "--text", "x"]).status, 64)
        XCTAssertEqual(try run(["detokenize", "--tokenizer", "x", "--ids", "1,a"]).status, 64)
        XCTAssertEqual(try run(["tokenize", "--tokenizer", "x", "--text", "y", "--bogus"]).status, 64)
    }
}
