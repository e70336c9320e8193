import XCTest
import Checkpoint
import Foundation
import TestSupport
@testable import Training

/// A stage-3 model saved with `--save-adapters` answers like the same run saved merged (the
/// checkpoint loader merges `adapter.safetensors` on load), and a broken adapter config is an error
/// naming `adapter_config.json`.
final class AdapterTests: XCTestCase {
    static let ids = "1,5,9,20"

    func train(_ s: Scratch, data: String, out: String, adapters: Bool) throws {
        var args = ["train", "--stage", "3", "--model", TrainFixture.model, "--data", data, "--media-dir", s.media,
                    "--out", out, "--steps", "8", "--batch", "2", "--lr", "1e-2", "--seed", "5", "--threads", "1"]
        if adapters { args.append("--save-adapters") }
        let r = try Binaries.unimoe(args, timeout: 60)
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    func logits(_ model: String, _ s: Scratch) throws -> (ProcessResult, [Float]) {
        let file = s.path("logits-" + UUID().uuidString)
        let r = try Binaries.unimoe(["logits", "--model", model, "--ids", Self.ids, "--out", file, "--threads", "1"], timeout: 60)
        guard r.status == 0, let d = FileManager.default.contents(atPath: file) else { return (r, []) }
        return (r, d.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) })
    }

    func testAdapterDirectoryMatchesMergedModel() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.fourSamples)
        let merged = s.path("merged"), adapted = s.path("adapted")
        try train(s, data: data, out: merged, adapters: false)
        try train(s, data: data, out: adapted, adapters: true)
        let fm = FileManager.default
        XCTAssertTrue(fm.fileExists(atPath: adapted + "/adapter.safetensors"))
        XCTAssertTrue(fm.fileExists(atPath: adapted + "/adapter_config.json"))

        let (rm, lm) = try logits(merged, s)
        let (ra, la) = try logits(adapted, s)
        XCTAssertEqual(rm.status, 0, rm.stderr)
        XCTAssertEqual(ra.status, 0, ra.stderr)
        XCTAssertEqual(lm.count, 4 * 1000)
        XCTAssertEqual(la.count, lm.count)
        guard la.count == lm.count, !lm.isEmpty else { return }
        XCTAssertLessThan(relativeError(la, lm), 1e-5)

        // Without its adapters the directory is the base trunk with trained routers: other logits,
        // so the match above really comes from merging the adapters.
        let bare = s.path("bare")
        try fm.copyItem(atPath: adapted, toPath: bare)
        try fm.removeItem(atPath: bare + "/adapter.safetensors")
        try fm.removeItem(atPath: bare + "/adapter_config.json")
        let (rb, lb) = try logits(bare, s)
        XCTAssertEqual(rb.status, 0, rb.stderr)
        XCTAssertEqual(lb.count, lm.count)
        if lb.count == lm.count { XCTAssertGreaterThan(relativeError(lb, lm), 1e-3) }
    }

    func testBrokenAdapterConfigIsAnError() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.textLine + "\n" + TrainFixture.imageLine)
        let adapted = s.path("adapted")
        try train(s, data: data, out: adapted, adapters: true)
        let cfg = adapted + "/adapter_config.json"
        for bad in [#"{"r": 8, "lora_alpha": "#, #"{"lora_alpha": 16}"#, #"{"r": 4, "lora_alpha": 16}"#] {
            try bad.write(toFile: cfg, atomically: true, encoding: .utf8)
            let (r, l) = try logits(adapted, s)
            XCTAssertEqual(r.status, 1, "\(bad): \(r.stderr)")
            XCTAssertTrue(l.isEmpty)
            let lines = r.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.hasPrefix("unimoe logits: "), r.stderr)
            // r = 4 does not fit rank-8 tensors: the error names the adapter weights instead.
            let named = bad.contains("\"r\": 4") ? "adapter.safetensors" : "adapter_config.json"
            XCTAssertTrue(r.stderr.contains(named), "\(bad): \(r.stderr)")
        }
        // The training loader refuses it too, with the checkpoint module's typed error naming the file.
        try #"{"r": 8, "lora_alpha": "#.write(toFile: cfg, atomically: true, encoding: .utf8)
        do {
            _ = try TrainableModel.loadParameters(directory: adapted)
            XCTFail("a broken adapter_config.json was accepted")
        } catch let CheckpointError.config(path, _) {
            XCTAssertEqual(path, cfg)
        }
        // And a missing config next to adapter weights is named as well.
        try FileManager.default.removeItem(atPath: cfg)
        let (r, _) = try logits(adapted, s)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("adapter_config.json"), r.stderr)
    }
}
