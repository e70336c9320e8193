import Foundation
import Checkpoint
import Media
import Models
import Tensor
import Wire

/// The decode stage: media bytes (a file or a chunked upload) → the encoder's input tensor:
/// CLIP pixels `[1, 3, S, S]` for an image, `[frames, 3, S, S]` for a video, Whisper log-mel
/// windows `[n, mel, frames]` for audio. Preprocessing settings come from the model directory.
///
/// `@unchecked Sendable`: the lazily read settings and the timings are guarded by `lock`; decoding
/// itself runs outside it, so several uploads decode at once (one thread each).
public final class DecodeStage: @unchecked Sendable {
    public let modelDirectory: String
    private let lock = NSLock()
    private var _timings = StageTimings()
    public var timings: StageTimings { lock.lock(); defer { lock.unlock() }; return _timings }
    private var clip: ClipPreprocessor?
    private var videoFrames = 8
    private var audio: AudioEncoder?

    public init(modelDirectory: String) { self.modelDirectory = modelDirectory }

    public func decode(_ modality: Modality, _ source: MediaSource) throws -> Tensor {
        let t0 = monotonicSeconds()
        defer {
            lock.lock()
            _timings.add("decode_\(modality.rawValue)", seconds: monotonicSeconds() - t0)
            lock.unlock()
        }
        do {
            return try {
                switch modality {
                case .image:
                    let img = try MediaDecoder.image(source)
                    return try clipPreprocessor().batch([img])
                case .video:
                    let pre = try clipPreprocessor()
                    let count = lock.withLock { videoFrames }
                    let frames = try MediaDecoder.videoFrames(source, count: count)
                    return try pre.batch(frames.map(\.image))
                case .audio:
                    let a = try audioEncoder()
                    let samples = try MediaDecoder.audio(source)
                    guard !samples.isEmpty else { throw StageError.media(file: source.name, reason: "the audio track is empty") }
                    return try a.melWindows(samples: samples, maxWindows: MediaLimits.default.maxAudioWindows)
                }
            }()
        } catch let e as StageError {
            throw e
        } catch {
            let text = "\(error)"
            throw StageError.media(file: source.name, reason: text.hasPrefix(source.name) ? String(text.dropFirst(source.name.count).drop { $0 == ":" || $0 == " " }) : text)
        }
    }

    /// Reads the settings for `modality` now, so timings measure decoding rather than loading.
    public func preload(_ modality: Modality) throws {
        switch modality {
        case .image, .video: _ = try clipPreprocessor()
        case .audio: _ = try audioEncoder()
        }
    }

    private func clipPreprocessor() throws -> ClipPreprocessor {
        lock.lock(); defer { lock.unlock() }
        if let clip { return clip }
        // Only the settings are used; the tower's weights stay mapped but untouched.
        let v = try VisionEncoder.load(modelDirectory: modelDirectory)
        clip = v.preprocessor
        videoFrames = v.videoFrames
        return v.preprocessor
    }

    private func audioEncoder() throws -> AudioEncoder {
        lock.lock(); defer { lock.unlock() }
        if let audio { return audio }
        let a = try AudioEncoder.load(modelDirectory: modelDirectory)
        audio = a
        return a
    }
}

/// The encode stage for one family of inputs: the CLIP vision tower (images and video frames) or
/// the Whisper encoder (audio). Encoder input → features.
public final class EncodeStage {
    public let modelDirectory: String
    public private(set) var timings = StageTimings()
    private var vision: VisionEncoder?
    private var audio: AudioEncoder?

    public init(modelDirectory: String) { self.modelDirectory = modelDirectory }

    public func encode(_ modality: Modality, _ input: Tensor) throws -> Tensor {
        try timings.measure("encode_\(modality.rawValue)") {
            switch modality {
            case .image, .video: return try visionEncoder().encode(pixels: input.converted(to: .f32))
            case .audio: return try audioEncoder().encode(mel: input.converted(to: .f32))
            }
        }
    }

    /// Loads the weights for `modality` now (a worker does this at start, so a missing tower fails
    /// the process instead of the first request).
    public func preload(_ modality: Modality) throws {
        switch modality {
        case .image, .video: _ = try visionEncoder()
        case .audio: _ = try audioEncoder()
        }
    }

    private func visionEncoder() throws -> VisionEncoder {
        if let vision { return vision }
        let v = try VisionEncoder.load(modelDirectory: modelDirectory)
        vision = v
        return v
    }

    private func audioEncoder() throws -> AudioEncoder {
        if let audio { return audio }
        let a = try AudioEncoder.load(modelDirectory: modelDirectory)
        audio = a
        return a
    }
}

/// The connect stage: encoder features → the embedding rows stitched in at the placeholder
/// (image: projector; video: projector then the frame mean; audio: Q-Former-style aligner + projector).
public final class ConnectStage {
    public let modelDirectory: String
    public private(set) var timings = StageTimings()
    private var image: ImageConnector?
    private var audio: AudioConnector?

    public init(modelDirectory: String) { self.modelDirectory = modelDirectory }

    public func connect(_ modality: Modality, _ features: Tensor) throws -> Tensor {
        try timings.measure("connect_\(modality.rawValue)") {
            let f = features.converted(to: .f32)
            switch modality {
            case .image: return try imageConnector().connect(features: f)
            case .video: return try imageConnector().connectVideo(features: f)
            case .audio: return try audioConnector().connect(encoderStates: f)
            }
        }
    }

    /// Loads the weights for `modality` now.
    public func preload(_ modality: Modality) throws {
        switch modality {
        case .image, .video: _ = try imageConnector()
        case .audio: _ = try audioConnector()
        }
    }

    private func imageConnector() throws -> ImageConnector {
        if let image { return image }
        let c = try ImageConnector.load(modelDirectory: modelDirectory)
        image = c
        return c
    }

    private func audioConnector() throws -> AudioConnector {
        if let audio { return audio }
        let c = try AudioConnector.load(modelDirectory: modelDirectory)
        audio = c
        return c
    }
}

extension Modality {
    /// Wire code of a modality (the `expert` header field of encode/connect messages).
    public var code: Int32 {
        switch self { case .image: return 0; case .audio: return 1; case .video: return 2 }
    }

    public init?(code: Int32) {
        switch code { case 0: self = .image; case 1: self = .audio; case 2: self = .video; default: return nil }
    }
}
