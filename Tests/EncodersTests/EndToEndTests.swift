import XCTest
import Foundation
import Tensor
import Media
import TestSupport
@testable import Models

/// Committed PNG and WAV → Media decode → CLIP / Whisper preprocessing → encoder → connector, against
/// what transformers computed from the same files (scripts/fixtures/demo_model.py), ≤ 1e-4.
final class EndToEndTests: XCTestCase {
    let png = Fixtures.path("encoders/demo/sample.png")
    let wav = Fixtures.path("encoders/demo/sample.wav")

    func model(_ m: Set<MultimodalModel.Modality>) throws -> MultimodalModel {
        try MultimodalModel(directory: DemoModelTests.modelDir, modalities: m)
    }

    func testImageFileToEmbeddings() throws {
        let r = try Fixtures.tensors("encoders/demo/reference.safetensors")
        let m = try model([.image])
        let px = try m.vision!.preprocessor.batch([try MediaDecoder.image(.file(png))])
        assertClose(px, try r.tensor("pixel_values"), "preprocessed pixels", tol: 1e-5)
        let e = try m.embed(image: .file(png))
        XCTAssertEqual(e.shape, [64, 64])
        assertClose(e, try r.tensor("image_embeddings"), "image embeddings")
    }

    func testAudioFileToEmbeddings() throws {
        let r = try Fixtures.tensors("encoders/demo/reference.safetensors")
        let m = try model([.audio])
        let samples = try MediaDecoder.audio(.file(wav))
        assertClose(try Tensor(shape: [samples.count], values: samples), try r.tensor("samples"), "decoded samples", tol: 1e-6)
        let mel = try m.audio!.melWindows(samples: samples, maxWindows: 20)
        assertClose(mel, try r.tensor("input_features"), "log-mel features")
        let e = try m.embed(audio: .file(wav))
        XCTAssertEqual(e.shape, [32, 64])   // 2.5 s: two 2 s windows of 16 query rows
        assertClose(e, try r.tensor("audio_embeddings"), "audio embeddings")
    }

    func testStillImageAsVideoEqualsTheImage() throws {
        let m = try model([.image, .video])
        let v = try m.embed(video: .file(png))
        let i = try m.embed(image: .file(png))
        XCTAssertEqual(v.shape, i.shape)
        XCTAssertLessThanOrEqual(relativeError(v.toArray(), i.toArray()), 1e-5)
    }

    func testImageOverTheLimitIsATypedError() throws {
        let m = try model([.image])
        XCTAssertThrowsError(try m.embed(image: .file(png), limits: MediaLimits(maxPixels: 1000))) { e in
            let s = "\(e)"
            XCTAssertTrue(s.contains("sample.png") && s.contains("limit"), s)
            XCTAssertTrue(e is MediaError || e is MultimodalError, s)
        }
    }

    func testMissingFileNamesIt() throws {
        let m = try model([.audio])
        XCTAssertThrowsError(try m.embed(audio: .file("/nonexistent/clip.wav"))) { e in
            XCTAssertTrue("\(e)".contains("/nonexistent/clip.wav"), "\(e)")
        }
    }
}
