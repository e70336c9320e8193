import Foundation
import Tensor
import Checkpoint

/// A whole Uni-MoE model directory's encoders and connectors in one process (`unimoe embed`,
/// `unimoe run`): for each placeholder kind, the embeddings the language model reads there. The
/// pipeline instead loads `VisionEncoder`/`AudioEncoder` in encode processes and
/// `ImageConnector`/`AudioConnector` in connect processes; this type only composes them.
public final class MultimodalModel: @unchecked Sendable {
    /// The input kinds; images and videos share the vision tower and projector.
    public enum Modality: String, CaseIterable, Sendable {
        case image, video, audio
    }

    public let directory: String
    public let config: MultimodalConfig
    public let vision: VisionEncoder?
    public let imageConnector: ImageConnector?
    public let audio: AudioEncoder?
    public let audioConnector: AudioConnector?

    /// The trunk width every embedding row has.
    public var hiddenSize: Int { config.hiddenSize }

    /// Loads the encoders and connectors for `modalities` (default: every one the config names).
    public init(directory: String, modalities: Set<Modality>? = nil) throws {
        self.directory = directory
        let mm = try MultimodalConfig.load(directory: directory)
        config = mm
        let wanted = modalities ?? Set(Modality.allCases.filter { $0 == .audio ? mm.audioTower != nil : mm.visionTower != nil })
        if wanted.contains(.image) || wanted.contains(.video) {
            vision = try VisionEncoder.load(modelDirectory: directory)
            imageConnector = try ImageConnector.load(modelDirectory: directory)
        } else {
            vision = nil
            imageConnector = nil
        }
        if wanted.contains(.audio) {
            audio = try AudioEncoder.load(modelDirectory: directory)
            audioConnector = try AudioConnector.load(modelDirectory: directory)
        } else {
            audio = nil
            audioConnector = nil
        }
    }

    func visionParts() throws -> (VisionEncoder, ImageConnector) {
        guard let vision, let imageConnector else {
            throw MultimodalError.notConfigured(modality: "image/video", path: (directory as NSString).appendingPathComponent("config.json"))
        }
        return (vision, imageConnector)
    }

    func audioParts() throws -> (AudioEncoder, AudioConnector) {
        guard let audio, let audioConnector else {
            throw MultimodalError.notConfigured(modality: "audio", path: (directory as NSString).appendingPathComponent("config.json"))
        }
        return (audio, audioConnector)
    }

    /// Preprocessed images `[n, 3, S, S]` → `[n·tokens, hidden]` (each image's rows in turn).
    public func embed(pixels: Tensor) throws -> Tensor {
        let (v, c) = try visionParts()
        return try c.connect(features: try v.encode(pixels: pixels))
    }

    /// Preprocessed video frames `[frames, 3, S, S]` (one batch through the tower) → the frame mean
    /// of their projected embeddings, `[tokens, hidden]`.
    public func embed(videoPixels: Tensor) throws -> Tensor {
        let (v, c) = try visionParts()
        return try c.connectVideo(features: try v.encode(pixels: videoPixels))
    }

    /// Log-mel windows `[n, mel, frames]` → `[min(n, max_audio_chunks)·Q, hidden]`.
    public func embed(mel: Tensor) throws -> Tensor {
        let (a, c) = try audioParts()
        return try c.connect(encoderStates: try a.encode(mel: mel))
    }
}
