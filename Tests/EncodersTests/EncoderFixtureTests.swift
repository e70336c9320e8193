import XCTest
import Tensor
import Checkpoint
import TestSupport
@testable import Models

/// Each encoder and connector against transformers on the tiny random checkpoints of
/// scripts/fixtures/encoders.py (relative error ≤ 1e-4 in f32).
final class EncoderFixtureTests: XCTestCase {
    func io(_ name: String) throws -> SafeTensorsFile { try Fixtures.tensors("encoders/\(name).safetensors") }

    func testCLIPEveryHiddenStateAndPooled() throws {
        let tower = try VisionTower(directory: Fixtures.path("encoders/clip"))
        let f = try io("clip_io")
        let pixels = try f.tensor("pixel_values")
        for i in 0...tower.config.layers {
            let ours = try tower.forward(pixels: pixels, selectLayer: i, keepCLS: true)
            assertClose(ours, try f.tensor("hidden_states.\(i)"), "hidden_states[\(i)]")
        }
        assertClose(try tower.pooled(pixels: pixels), try f.tensor("pooler_output"), "pooler_output")
    }

    func testCLIPPenultimatePatchesThroughMLP2xProjector() throws {
        let tower = try VisionTower(directory: Fixtures.path("encoders/clip"))
        let f = try io("clip_io")
        let feats = try tower.forward(pixels: try f.tensor("pixel_values"), selectLayer: -2, keepCLS: false)
        XCTAssertEqual(feats.shape, [2, 16, 32])
        let ckpt = try Checkpoint(file: Fixtures.path("encoders/clip_io.safetensors"))
        let p = try Projector(type: "mlp2x_gelu", loader: PrefixLoader(ckpt, prefix: "model."), prefix: "mm_projector",
                              inputWidth: 32, inputKey: "mm_hidden_size", outputWidth: 48)
        assertClose(try p.forward(feats), try f.tensor("projected"), "projected")
    }

    func testBatchedImagesEqualOneByOne() throws {
        let tower = try VisionTower(directory: Fixtures.path("encoders/clip"))
        let pixels = try io("clip_io").tensor("pixel_values")
        let both = try tower.forward(pixels: pixels, selectLayer: -2)
        let second = try tower.forward(pixels: pixels.rows(1..<2), selectLayer: -2)
        XCTAssertLessThanOrEqual(relativeError(Array(both.toArray()[(16 * 32)...]), second.toArray()), 1e-5)
    }

    func testWhisperEncoderDecoderConnector() throws {
        let dir = Fixtures.path("encoders/whisper")
        let enc = try WhisperEncoder(directory: dir)
        let f = try io("whisper_io")
        let states = try enc.forward(mel: try f.tensor("mel"))
        assertClose(states, try f.tensor("encoder_output"), "encoder_output")

        let ckpt = try Checkpoint(directory: dir)
        let dec = try WhisperDecoder(config: enc.config, loader: PrefixLoader(ckpt, prefix: "decoder."), encoderWidth: 32)
        let q = try f.tensor("query_tokens").reshaped([8, 32])
        let out = try dec.forward(queries: q, encoderStates: try f.tensor("encoder_output"))
        assertClose(out, try f.tensor("decoder_output"), "decoder_output")

        let pck = try Checkpoint(file: Fixtures.path("encoders/whisper_io.safetensors"))
        let proj = try Projector(type: "linear", loader: PrefixLoader(pck, prefix: ""), prefix: "projector",
                                 inputWidth: 32, inputKey: "mm_audio_hidden_size", outputWidth: 40)
        assertClose(try proj.forward(out), try f.tensor("connected"), "connected")
    }

    func testWhisperEncoderRejectsWrongFrameCount() throws {
        let enc = try WhisperEncoder(directory: Fixtures.path("encoders/whisper"))
        XCTAssertThrowsError(try enc.forward(mel: Tensor(zeros: [80, 30]))) { e in
            XCTAssertTrue("\(e)".contains("32"), "\(e)")
        }
    }

    func testQFormer() throws {
        let q = try QFormer(directory: Fixtures.path("encoders/qformer"))
        let f = try io("qformer_io")
        let out = try q.forward(queries: try f.tensor("query_embeds").reshaped([6, 32]),
                                encoderStates: try f.tensor("encoder_hidden_states"))
        assertClose(out, try f.tensor("last_hidden_state"), "qformer last_hidden_state")
    }

    func testProjectorTypes() {
        XCTAssertEqual(Projector.depth("linear"), 1)
        XCTAssertEqual(Projector.depth("mlp2x_gelu"), 2)
        XCTAssertEqual(Projector.depth("mlp3x_gelu"), 3)
        XCTAssertNil(Projector.depth("identity"))
        XCTAssertNil(Projector.depth("mlpx_gelu"))
    }
}

/// Relative-error assertion shared by the encoder tests.
func assertClose(_ a: Tensor, _ b: Tensor, _ what: String, tol: Float = 1e-4, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "\(what): \(a.shape) vs \(b.shape)", file: file, line: line)
    guard a.count == b.count else { return }
    let e = relativeError(a.toArray(), b.toArray())
    XCTAssertLessThanOrEqual(e, tol, "\(what): relative error \(e)", file: file, line: line)
}
