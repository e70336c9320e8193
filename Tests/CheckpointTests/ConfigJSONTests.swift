import XCTest
import Foundation
import Checkpoint

/// config.json goes through the strict JSON parser: duplicate keys, bad UTF-8 and large integers.
final class ConfigJSONTests: XCTestCase {
    let base = #"{"model_type": "llama", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 2048"#

    func reason(_ text: [UInt8]) -> String? {
        do { _ = try ModelConfig.decode(Data(text), path: "c.json"); return nil } catch {
            guard case CheckpointError.config(let path, let reason) = error, path == "c.json" else { return "untyped \(error)" }
            return reason
        }
    }

    func testStrictParsing() throws {
        XCTAssertNil(reason(Array((base + "}").utf8)))
        XCTAssertEqual(reason(Array((base + #", "hidden_size": 64}"#).utf8)), "key 'hidden_size' appears more than once")
        XCTAssertEqual(reason(Array((base + #", "rope_parameters": {"rope_theta": 1, "rope_theta": 2}}"#).utf8)),
                       "key 'rope_theta' of 'rope_parameters' appears more than once")
        XCTAssertTrue(reason(Array((base + #", "x": ""#).utf8) + [0xC3, 0x28] + Array("\"}".utf8))?.contains("not valid UTF-8") == true)
        let c = try ModelConfig.decode(Data((base + #", "exporter_offset": 9007199254740993}"#).utf8))
        XCTAssertEqual(c.raw["exporter_offset"]?.intValue, 9_007_199_254_740_993)
    }

    func testMultimodalConfigFileIsParsedStrictly() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("json-mm-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(#"{"hidden_size": 32, "mm_vision_tower": "a", "mm_vision_tower": "b"}"#.utf8).write(to: dir.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try MultimodalConfig.load(directory: dir.path)) { e in
            XCTAssertTrue("\(e)".contains("'mm_vision_tower' appears more than once"), "\(e)")
        }
    }
}
