import Foundation
import XCTest
import TestSupport

/// `unimoe convert` and `unimoe logits` as the convert tests run them, in a scratch directory.
struct ConvertRunner {
    let scratch: String

    /// Runs `unimoe convert ARGS --out <fresh dir>`; returns the output directory and the printed
    /// summary, failing the test on a non-zero exit.
    func convert(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> (out: String, summary: [String: Any]) {
        let out = (scratch as NSString).appendingPathComponent("out-\(UUID().uuidString)")
        let r = try Binaries.unimoe(["convert"] + args + ["--out", out])
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: r.stdoutData) as? [String: Any], file: file, line: line)
        return (out, obj)
    }

    /// `unimoe logits --model DIR --ids …` as `[len(ids) · vocab]` floats.
    func logits(_ model: String, ids: [Int], file: StaticString = #filePath, line: UInt = #line) throws -> [Float] {
        let out = (scratch as NSString).appendingPathComponent("logits-\(UUID().uuidString).f32")
        let r = try Binaries.unimoe(["logits", "--model", model, "--ids", ids.map(String.init).joined(separator: ","), "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        let data = try Data(contentsOf: URL(fileURLWithPath: out))
        return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// Runs convert with `args` expecting exit 1, one line on stderr holding every phrase, nothing written.
    func assertFails(_ args: [String], _ phrases: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let out = (scratch as NSString).appendingPathComponent("failed-\(UUID().uuidString)")
        let r = try Binaries.unimoe(["convert"] + args + ["--out", out])
        XCTAssertEqual(r.status, 1, r.stderr, file: file, line: line)
        let msg = r.stderr.trimmingCharacters(in: .newlines)
        XCTAssertFalse(msg.contains("\n"), "not one line: \(msg)", file: file, line: line)
        XCTAssertTrue(msg.hasPrefix("unimoe convert: "), msg, file: file, line: line)
        for p in phrases { XCTAssertTrue(msg.contains(p), "'\(msg)' should mention '\(p)'", file: file, line: line) }
        XCTAssertTrue(r.stdout.isEmpty, file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/model.safetensors"), file: file, line: line)
    }
}
