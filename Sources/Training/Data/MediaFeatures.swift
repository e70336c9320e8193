import Foundation
import Media
import Models
import Tensor

/// The frozen encoders' outputs of training media, computed once per file and kept (the paper
/// freezes the encoders, so every epoch would compute the same thing): image features
/// `[P, mm_hidden]`, video frame features `[F, P, mm_hidden]`, audio encoder states `[windows, S, D]`.
public final class MediaFeatures {
    public let modelDirectory: String
    private var vision: VisionEncoder?
    private var audio: AudioEncoder?
    private var cache: [String: Tensor] = [:]
    public var limits: MediaLimits = .default
    /// When the towers train: keep their inputs (preprocessed pixels, log-mel windows), not their outputs.
    public var towerInputs = false

    public init(modelDirectory: String) { self.modelDirectory = modelDirectory }

    private func visionEncoder() throws -> VisionEncoder {
        if let v = vision { return v }
        let v = try VisionEncoder.load(modelDirectory: modelDirectory)
        vision = v
        return v
    }

    private func audioEncoder() throws -> AudioEncoder {
        if let a = audio { return a }
        let a = try AudioEncoder.load(modelDirectory: modelDirectory)
        audio = a
        return a
    }

    public func image(_ path: String) throws -> Tensor {
        try cached("image:" + path) {
            let v = try visionEncoder()
            let img = try MediaDecoder.image(.file(path), limits: limits)
            let pixels = try v.preprocessor.batch([img])
            if towerInputs { return pixels }
            let f = try v.encode(pixels: pixels)
            return try f.reshaped([f.shape[1], f.shape[2]])
        }
    }

    public func video(_ path: String) throws -> Tensor {
        try cached("video:" + path) {
            let v = try visionEncoder()
            let frames = try MediaDecoder.videoFrames(.file(path), count: v.videoFrames, limits: limits)
            let pixels = try v.preprocessor.batch(frames.map(\.image))
            return towerInputs ? pixels : try v.encode(pixels: pixels)
        }
    }

    public func audio(_ path: String) throws -> Tensor {
        try cached("audio:" + path) {
            let a = try audioEncoder()
            let samples = try MediaDecoder.audio(.file(path), limits: limits)
            let mel = try a.melWindows(samples: samples, maxWindows: min(limits.maxAudioWindows, a.maxChunks))
            return towerInputs ? mel : try a.encode(mel: mel)
        }
    }

    private func cached(_ key: String, _ make: () throws -> Tensor) throws -> Tensor {
        if let t = cache[key] { return t }
        let t = try make().converted(to: .f32)
        cache[key] = t
        return t
    }

    /// A sample's ids, labels and media features, or a typed error naming the sample's file and line.
    public func example(_ s: RawSample, encoder: SampleEncoder) throws -> TrainingExample {
        let (ids, labels) = try encoder.encode(s)
        func load(_ path: String, _ f: (String) throws -> Tensor) throws -> Tensor {
            do { return try f(path) } catch let e as TrainingError { throw e } catch {
                throw TrainingError.badMedia(file: s.file, line: s.line, path: path, reason: "\(error)")
            }
        }
        return TrainingExample(ids: ids, labels: labels,
                               images: try s.images.map { try load($0, image) },
                               videos: try s.videos.map { try load($0, video) },
                               audios: try s.audios.map { try load($0, audio) })
    }
}
