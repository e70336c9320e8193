import Foundation
import XCTest
import TestSupport

/// `unimoe run --routing-stats`: per kind of input row and MoE layer, how many (row, choice) slots
/// each expert got, as one JSON line on stderr; the answer itself is unchanged.
final class RoutingStatsTests: XCTestCase {
    func testRoutingStatsCountEveryRowByKindAndLeaveTheAnswerAlone() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let args = ["run", "--model", root + "/models/tiny-unimoe", "--image", root + "/samples/picture.png",
                    "--max-new-tokens", "3", "--json", "What is in the picture?"]
        let plain = try Binaries.unimoe(args)
        let counted = try Binaries.unimoe(args + ["--routing-stats"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertEqual(counted.status, 0, counted.stderr)
        XCTAssertEqual(plain.stdout, counted.stdout, "the answer must not change")
        guard let line = counted.stderr.split(separator: "\n").last(where: { $0.hasPrefix("{\"routing\"") }),
              let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let routing = obj["routing"] as? [String: [String: [Int]]] else {
            return XCTFail("no routing line in: \(counted.stderr)")
        }
        XCTAssertEqual(Set(routing.keys), ["image", "text"])
        // The demo model: MoE on layers 0 and 2, top-2, a 64×64 image in patches of 8 = 64 rows.
        for layer in ["0", "2"] {
            XCTAssertEqual(routing["image"]?[layer]?.reduce(0, +), 64 * 2, "layer \(layer)")
            XCTAssertEqual(routing["image"]?[layer]?.count, 4)
            XCTAssertGreaterThan(routing["text"]?[layer]?.reduce(0, +) ?? 0, 0)
        }
        XCTAssertEqual(routing["text"]?["0"]?.reduce(0, +), routing["text"]?["2"]?.reduce(0, +))
    }
}
