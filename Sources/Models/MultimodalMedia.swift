import Foundation
import Tensor
import Media

extension VisionEncoder {
    /// The CLIP preprocessing this tower expects (size, crop, mean/std, pad-to-square).
    public var preprocessor: ClipPreprocessor {
        ClipPreprocessor(size: preprocessing.shortestEdge, cropSize: preprocessing.cropSize, mean: preprocessing.mean,
                         std: preprocessing.std, padToSquare: preprocessing.padToSquare)
    }
}

extension AudioEncoder {
    /// The Whisper log-mel front end matching this encoder's `num_mel_bins`.
    public var featureExtractor: WhisperFeatureExtractor {
        WhisperFeatureExtractor(melBins: melBins, chunkSeconds: chunkSeconds)
    }

    /// 16 kHz mono samples → log-mel windows `[n, mel, frames]` (`chunk_length` seconds each, 30 by
    /// default, at most `max_audio_chunks`).
    public func melWindows(samples: [Float], maxWindows: Int) throws -> Tensor {
        let fe = featureExtractor
        let windows = fe.windows(samples, maxWindows: min(maxChunks, maxWindows))
        guard !windows.isEmpty else { throw MultimodalError.badInput("the audio holds no samples") }
        guard fe.framesPerWindow == melFrames else {
            throw MultimodalError.dimensionMismatch("a \(chunkSeconds) s window (chunk_length) has \(fe.framesPerWindow) mel frames but the audio tower takes \(melFrames) (2 × max_source_positions)")
        }
        let plane = melBins * melFrames
        let out = Tensor(zeros: [windows.count, melBins, melFrames])
        for (i, w) in windows.enumerated() {
            let mel = try fe.logMel(w)
            out.floats.advanced(by: i * plane).update(from: mel.floats, count: plane)
        }
        return out
    }
}

extension MultimodalModel {
    /// An image file or upload → decode → CLIP preprocessing → tower → projector: `[tokens, hidden]`.
    public func embed(image source: MediaSource, limits: MediaLimits = .default) throws -> Tensor {
        let (v, _) = try visionParts()
        let image = try MediaDecoder.image(source, limits: limits)
        guard image.width * image.height <= limits.maxPixels else {
            throw MultimodalError.imageTooLarge(path: source.name, width: image.width, height: image.height,
                                                limit: "\(limits.maxPixels) pixels")
        }
        return try embed(pixels: try v.preprocessor.batch([image]))
    }

    /// A video → `video_frames` frames sampled uniformly → one batch through the tower → projector →
    /// mean over frames: `[tokens, hidden]`.
    public func embed(video source: MediaSource, limits: MediaLimits = .default) throws -> Tensor {
        let (v, _) = try visionParts()
        let frames = try MediaDecoder.videoFrames(source, count: v.videoFrames, limits: limits)
        for f in frames where f.image.width * f.image.height > limits.maxPixels {
            throw MultimodalError.imageTooLarge(path: source.name, width: f.image.width, height: f.image.height,
                                                limit: "\(limits.maxPixels) pixels")
        }
        return try embed(videoPixels: try v.preprocessor.batch(frames.map(\.image)))
    }

    /// Audio (or a video's soundtrack) → 16 kHz mono → 30 s log-mel windows → Whisper encoder →
    /// speech connector: `query_tokens_size` rows per window, windows in order.
    public func embed(audio source: MediaSource, limits: MediaLimits = .default) throws -> Tensor {
        let (a, _) = try audioParts()
        let samples = try MediaDecoder.audio(source, limits: limits)
        return try embed(mel: try a.melWindows(samples: samples, maxWindows: limits.maxAudioWindows))
    }

    /// Dispatches on the placeholder kind.
    public func embed(_ modality: Modality, _ source: MediaSource, limits: MediaLimits = .default) throws -> Tensor {
        switch modality {
        case .image: return try embed(image: source, limits: limits)
        case .video: return try embed(video: source, limits: limits)
        case .audio: return try embed(audio: source, limits: limits)
        }
    }
}
