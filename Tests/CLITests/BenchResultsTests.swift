import Foundation
import TestSupport
import XCTest

/// scripts/bench-results turns a bench run's figure lines into bench-results.json: every figure
/// with its area, values, unit and ratio; notes skipped; NaN as null; a usage error without OUT.
final class BenchResultsTests: XCTestCase {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path + "/scripts/bench-results"

    func testFigureLinesBecomeJSON() throws {
        let out = NSTemporaryDirectory() + "bench-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let input = """
        == lm
        prefill f32: ours 144 tok/s | reference (transformers) 210 tok/s | ratio 0.69
        progress: 3/4 done
        decode q8_0 (ceiling): ours 96.5 tok/s | reference 205 tok/s | ratio 0.47
        == media
        log-mel: ours 1.23 ms | reference nan ms | ratio nan

        """
        let r = try runProcess("/usr/bin/env", ["python3", script, out], stdin: Data(input.utf8))
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [String: Any])
        let figures = try XCTUnwrap(json["figures"] as? [[String: Any]])
        XCTAssertEqual(figures.count, 3)
        XCTAssertEqual(figures[0]["area"] as? String, "lm")
        XCTAssertEqual(figures[0]["name"] as? String, "prefill f32")
        XCTAssertEqual(figures[0]["ours"] as? Double, 144)
        XCTAssertEqual(figures[0]["reference"] as? Double, 210)
        XCTAssertEqual(figures[0]["reference_label"] as? String, "transformers")
        XCTAssertEqual(figures[0]["unit"] as? String, "tok/s")
        XCTAssertEqual(figures[0]["ratio"] as? Double, 0.69)
        XCTAssertEqual(figures[1]["name"] as? String, "decode q8_0 (ceiling)")
        XCTAssertEqual(figures[2]["area"] as? String, "media")
        XCTAssertTrue(figures[2]["reference"] is NSNull)
        XCTAssertNotNil((json["machine"] as? [String: Any])?["cores"])
        let usage = try runProcess("/usr/bin/env", ["python3", script])
        XCTAssertEqual(usage.status, 64)
    }
}
