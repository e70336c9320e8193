import XCTest
import Foundation
import Tensor
import Checkpoint
import TestSupport
@testable import Models

/// The embedded default model (models/tiny-unimoe) loads per the directory contract and gives the
/// embeddings transformers computed for the committed sample image and audio; broken directories
/// fail with errors naming what is wrong.
final class DemoModelTests: XCTestCase {
    static let modelDir = URL(fileURLWithPath: Fixtures.root).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("models/tiny-unimoe").path

    func reference() throws -> SafeTensorsFile { try Fixtures.tensors("encoders/demo/reference.safetensors") }

    func testImageEmbeddingsFromPreprocessedPixels() throws {
        let m = try MultimodalModel(directory: Self.modelDir, modalities: [.image])
        XCTAssertNil(m.audio)
        let r = try reference()
        let feats = try m.vision!.encode(pixels: try r.tensor("pixel_values"))
        assertClose(feats, try r.tensor("image_features"), "CLIP hidden_states[-2] patches")
        let e = try m.embed(pixels: try r.tensor("pixel_values"))
        XCTAssertEqual(e.shape, [64, 64])     // 64×64 pixels in patches of 8: 64 rows
        assertClose(e, try r.tensor("image_embeddings"), "image embeddings")
        XCTAssertEqual(m.vision!.preprocessing.cropSize, 64)
        XCTAssertTrue(m.vision!.preprocessing.padToSquare)
    }

    func testVideoIsFrameMeanOfOneBatch() throws {
        let m = try MultimodalModel(directory: Self.modelDir, modalities: [.video])
        let px = try reference().tensor("pixel_values")
        // Three frames: the sample, its negation, the sample again → mean of the three embeddings.
        let frames = Tensor(zeros: [3, 3, 64, 64])
        let n = px.count
        for i in 0..<n {
            frames.floats[i] = px.floats[i]; frames.floats[n + i] = -px.floats[i]; frames.floats[2 * n + i] = px.floats[i]
        }
        let video = try m.embed(videoPixels: frames)
        let a = try m.embed(pixels: px).toArray(), b = try m.embed(pixels: frames.rows(1..<2)).toArray()
        let mean = zip(a, b).map { (2 * $0 + $1) / 3 }
        XCTAssertEqual(video.shape, [64, 64])
        XCTAssertLessThanOrEqual(relativeError(video.toArray(), mean), 1e-5)
    }

    func testAudioEmbeddingsFromLogMel() throws {
        let m = try MultimodalModel(directory: Self.modelDir, modalities: [.audio])
        XCTAssertNil(m.vision)
        let r = try reference()
        let states = try m.audio!.encode(mel: try r.tensor("input_features"))
        assertClose(states, try r.tensor("encoder_output"), "Whisper encoder output")
        let e = try m.embed(mel: try r.tensor("input_features"))
        XCTAssertEqual(e.shape, [32, 64])     // two windows of 16 query tokens
        assertClose(e, try r.tensor("audio_embeddings"), "audio embeddings")
    }

    func testTwoWindowsConcatenateAndChunkLimitHolds() throws {
        let m = try MultimodalModel(directory: Self.modelDir, modalities: [.audio])
        let mel = try reference().tensor("input_features").rows(0..<1)     // [1, 80, 200]: one 2 s window
        let two = Tensor(zeros: [2, 80, 200])
        for i in 0..<mel.count { two.floats[i] = mel.floats[i]; two.floats[mel.count + i] = mel.floats[i] * 0.5 }
        let both = try m.embed(mel: two)
        XCTAssertEqual(both.shape, [32, 64])
        let first = try m.embed(mel: mel).toArray()
        let second = try m.embed(mel: two.rows(1..<2)).toArray()
        XCTAssertLessThanOrEqual(relativeError(both.toArray(), first + second), 1e-5)
    }

    // MARK: broken directories

    /// A copy of the demo model (weights linked, not copied) with config.json edited by `edit`.
    func brokenCopy(_ edit: (inout [String: Any]) -> Void) throws -> String {
        let fm = FileManager.default
        let dir = NSTemporaryDirectory() + "unimoe-enc-\(UUID().uuidString)"
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? fm.removeItem(atPath: dir) }
        for item in try fm.contentsOfDirectory(atPath: Self.modelDir) where item != "config.json" {
            try fm.createSymbolicLink(atPath: dir + "/" + item, withDestinationPath: Self.modelDir + "/" + item)
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.modelDir + "/config.json"))
        var cfg = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        edit(&cfg)
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: dir + "/config.json"))
        return dir
    }

    func testMismatchedVisionWidthNamesBothKeys() throws {
        let dir = try brokenCopy { $0["mm_hidden_size"] = 48 }
        XCTAssertThrowsError(try ImageConnector.load(modelDirectory: dir)) { e in
            guard case MultimodalError.dimensionMismatch(let what) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(what.contains("mm_hidden_size 48") && what.contains("hidden_size 64"), what)
        }
        XCTAssertThrowsError(try VisionEncoder.load(modelDirectory: dir)) { e in
            XCTAssertTrue("\(e)".contains("mm_hidden_size"), "\(e)")
        }
    }

    func testMismatchedAudioWidth() throws {
        let dir = try brokenCopy { $0["mm_audio_hidden_size"] = 40 }
        XCTAssertThrowsError(try AudioConnector.load(modelDirectory: dir)) { e in
            guard case MultimodalError.dimensionMismatch(let what) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(what.contains("query_tokens"), what)
        }
    }

    func testProjectorOutputMustMatchTrunk() throws {
        let dir = try brokenCopy { $0["hidden_size"] = 96 }
        XCTAssertThrowsError(try ImageConnector.load(modelDirectory: dir)) { e in
            guard case MultimodalError.dimensionMismatch(let what) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(what.contains("mm_projector.0.weight") && what.contains("96"), what)
        }
    }

    func testMissingTowerDirectory() throws {
        let dir = try brokenCopy { $0["mm_vision_tower"] = "no_such_tower"; $0["mm_audio_tower"] = "gone" }
        XCTAssertThrowsError(try VisionEncoder.load(modelDirectory: dir)) { e in
            XCTAssertEqual(e as? MultimodalError, .missingTower(modality: "vision", path: dir + "/no_such_tower"))
            XCTAssertTrue("\(e)".contains("no_such_tower"))
        }
        XCTAssertThrowsError(try MultimodalModel(directory: dir, modalities: [.audio])) { e in
            XCTAssertEqual(e as? MultimodalError, .missingTower(modality: "audio", path: dir + "/gone"))
        }
    }

    func testUnconfiguredModality() throws {
        let dir = try brokenCopy { $0.removeValue(forKey: "mm_audio_tower") }
        let m = try MultimodalModel(directory: dir)
        XCTAssertNil(m.audio)
        XCTAssertThrowsError(try m.embed(mel: Tensor(zeros: [1, 80, 200]))) { e in
            guard case MultimodalError.notConfigured(let modality, _) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(modality, "audio")
        }
    }

    func testAudioWindowsFollowChunkLength() throws {
        // The tower's preprocessor_config.json says chunk_length 2: 2 s windows of 200 mel frames.
        let m = try MultimodalModel(directory: Self.modelDir, modalities: [.audio])
        XCTAssertEqual(m.audio!.chunkSeconds, 2)
        let mel = try m.audio!.melWindows(samples: [Float](repeating: 0.1, count: 16000 * 5), maxWindows: 20)
        XCTAssertEqual(mel.shape, [3, 80, 200])
        XCTAssertEqual(try reference().tensor("input_features").shape, [2, 80, 200])   // the 2.5 s sample
    }

    func testBadChunkLengthIsATypedError() throws {
        let dir = try brokenCopy { _ in }
        let tower = dir + "/audio_tower"
        try FileManager.default.removeItem(atPath: tower)
        try FileManager.default.createDirectory(atPath: tower, withIntermediateDirectories: true)
        for f in ["config.json", "model.safetensors"] {
            try FileManager.default.createSymbolicLink(atPath: tower + "/" + f, withDestinationPath: Self.modelDir + "/audio_tower/" + f)
        }
        for bad in ["\"thirty\"", "0", "2.5"] {
            try Data("{\"chunk_length\": \(bad)}".utf8).write(to: URL(fileURLWithPath: tower + "/preprocessor_config.json"))
            XCTAssertThrowsError(try AudioEncoder.load(modelDirectory: dir), bad) { e in
                XCTAssertTrue("\(e)".contains("chunk_length"), "\(e)")
            }
        }
        // A tower whose windows disagree with its positions: chunk_length 30 with 100 positions.
        try Data("{\"chunk_length\": 30}".utf8).write(to: URL(fileURLWithPath: tower + "/preprocessor_config.json"))
        let a = try AudioEncoder.load(modelDirectory: dir)
        XCTAssertThrowsError(try a.melWindows(samples: [Float](repeating: 0, count: 16000), maxWindows: 1)) { e in
            XCTAssertTrue("\(e)".contains("chunk_length") && "\(e)".contains("200"), "\(e)")
        }
    }

    func testWrongPixelSizeIsRejected() throws {
        let m = try MultimodalModel(directory: Self.modelDir, modalities: [.image])
        XCTAssertThrowsError(try m.embed(pixels: Tensor(zeros: [1, 3, 32, 32]))) { e in
            XCTAssertTrue("\(e)".contains("[n, 3, 64, 64]"), "\(e)")
        }
    }
}
