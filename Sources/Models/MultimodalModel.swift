import Foundation
import Tensor
import Checkpoint

/// How images must be prepared for the vision tower (from the tower's `preprocessor_config.json`,
/// else CLIP's mean/std at the tower's `image_size`), plus the model's pad-to-square choice.
public struct ImagePreprocessing: Sendable, Equatable {
    public var shortestEdge: Int
    public var cropSize: Int
    public var mean: [Float]
    public var std: [Float]
    public var padToSquare: Bool

    public static let clipMean: [Float] = [0.48145466, 0.4578275, 0.40821073]
    public static let clipStd: [Float] = [0.26862954, 0.26130258, 0.27577711]

    init(towerDirectory: String, imageSize: Int, padToSquare: Bool) throws {
        shortestEdge = imageSize
        cropSize = imageSize
        mean = Self.clipMean
        std = Self.clipStd
        self.padToSquare = padToSquare
        let path = (towerDirectory as NSString).appendingPathComponent("preprocessor_config.json")
        guard FileManager.default.fileExists(atPath: path) else { return }
        let r = try ConfigReader.load(path, modality: "vision")
        func floats(_ key: String) throws -> [Float]? {
            guard let v = r.json[key], !v.isNull else { return nil }
            guard let a = v.arrayValue, a.count == 3, a.allSatisfy({ $0.doubleValue != nil }) else {
                throw MultimodalError.config(path: path, reason: "'\(key)' must be a list of 3 numbers")
            }
            return a.map { Float($0.doubleValue ?? 0) }
        }
        func edge(_ key: String, _ inner: [String]) throws -> Int? {
            guard let v = r.json[key], !v.isNull else { return nil }
            if let i = v.intValue { return i }
            for k in inner { if let i = v[k]?.intValue { return i } }
            throw MultimodalError.config(path: path, reason: "'\(key)' must be an integer or hold one of \(inner)")
        }
        mean = try floats("image_mean") ?? mean
        std = try floats("image_std") ?? std
        shortestEdge = try edge("size", ["shortest_edge", "height"]) ?? shortestEdge
        cropSize = try edge("crop_size", ["height", "shortest_edge"]) ?? cropSize
        guard cropSize == imageSize else {
            throw MultimodalError.dimensionMismatch("\(path): crop_size \(cropSize) differs from the tower's image_size \(imageSize)")
        }
    }
}

/// Resolves and checks a tower subdirectory named in the model config.
func towerDirectory(_ model: String, _ sub: String?, modality: String) throws -> String {
    guard let sub else {
        throw MultimodalError.notConfigured(modality: modality, path: (model as NSString).appendingPathComponent("config.json"))
    }
    let dir = sub.hasPrefix("/") ? sub : (model as NSString).appendingPathComponent(sub)
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue,
          FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent("config.json")) else {
        throw MultimodalError.missingTower(modality: modality, path: dir)
    }
    return dir
}

/// The image/video encoder of a model directory (the `encode` role for images): the CLIP tower,
/// which layer to read and how to preprocess. Loads only the tower, never the trunk.
public final class VisionEncoder: @unchecked Sendable {
    public let tower: VisionTower
    public let selectLayer: Int
    public let keepCLS: Bool
    public let preprocessing: ImagePreprocessing
    /// Frames sampled per video (`video_frames`).
    public let videoFrames: Int

    public static func load(modelDirectory: String) throws -> VisionEncoder {
        let mm = try MultimodalConfig.load(directory: modelDirectory)
        let dir = try towerDirectory(modelDirectory, mm.visionTower, modality: "vision")
        let tower = try VisionTower(directory: dir)
        try checkVisionWidth(mm, towerHidden: tower.config.hiddenSize, modelDirectory: modelDirectory)
        _ = try tower.hiddenStateIndex(selectLayer: mm.visionSelectLayer)
        return VisionEncoder(tower: tower, selectLayer: mm.visionSelectLayer, keepCLS: mm.visionSelectFeature == "cls_patch",
                             preprocessing: try ImagePreprocessing(towerDirectory: dir, imageSize: tower.config.imageSize,
                                                                   padToSquare: mm.padToSquare),
                             videoFrames: mm.videoFrames)
    }

    init(tower: VisionTower, selectLayer: Int, keepCLS: Bool, preprocessing: ImagePreprocessing, videoFrames: Int) {
        self.tower = tower
        self.selectLayer = selectLayer
        self.keepCLS = keepCLS
        self.preprocessing = preprocessing
        self.videoFrames = videoFrames
    }

    /// Preprocessed pixels `[n, 3, S, S]` → features `[n, tokens, mm_hidden_size]` (one batch).
    public func encode(pixels: Tensor) throws -> Tensor {
        try tower.forward(pixels: pixels, selectLayer: selectLayer, keepCLS: keepCLS)
    }
}

func checkVisionWidth(_ mm: MultimodalConfig, towerHidden: Int, modelDirectory: String) throws {
    if let h = mm.mmHiddenSize, h != towerHidden {
        throw MultimodalError.dimensionMismatch("mm_hidden_size \(h) in \(modelDirectory)/config.json differs from the vision tower's hidden_size \(towerHidden) (\(mm.visionTower ?? "vision_tower")/config.json)")
    }
}

/// The image/video connector (the `connect` role for images): the projector only.
public final class ImageConnector: @unchecked Sendable {
    public let projector: Projector

    public static func load(modelDirectory: String) throws -> ImageConnector {
        let mm = try MultimodalConfig.load(directory: modelDirectory)
        let dir = try towerDirectory(modelDirectory, mm.visionTower, modality: "vision")
        let towerCfg = try CLIPVisionConfig(ConfigReader.load((dir as NSString).appendingPathComponent("config.json"), modality: "vision"))
        try checkVisionWidth(mm, towerHidden: towerCfg.hiddenSize, modelDirectory: modelDirectory)
        let l = PrefixLoader(try Checkpoint(directory: modelDirectory), prefix: "model.")
        let p = try Projector(type: mm.projectorType, loader: l, prefix: "mm_projector", inputWidth: mm.mmHiddenSize ?? towerCfg.hiddenSize,
                              inputKey: "mm_hidden_size", outputWidth: mm.hiddenSize)
        try l.finish(under: ["model.mm_projector."])
        return ImageConnector(projector: p)
    }

    init(projector: Projector) { self.projector = projector }

    /// Features `[n, T, D]` → embeddings `[n·T, hidden]` (each image's tokens in turn).
    public func connect(features: Tensor) throws -> Tensor {
        let y = try projector.forward(features)
        return try y.reshaped([y.rowCount, projector.outputWidth])
    }

    /// A video's frame features `[frames, T, D]` → the frame mean of their embeddings `[T, hidden]`.
    public func connectVideo(features: Tensor) throws -> Tensor {
        guard features.rank == 3, features.shape[0] > 0 else {
            throw MultimodalError.badInput("video features must be [frames, tokens, width], got \(features.shape)")
        }
        let y = try projector.forward(features)
        let f = features.shape[0], t = features.shape[1], h = projector.outputWidth
        let out = Tensor(zeros: [t, h])
        for i in 0..<f {
            let src = y.floats + i * t * h
            for j in 0..<(t * h) { out.floats[j] += src[j] }
        }
        let inv = 1 / Float(f)
        for j in 0..<(t * h) { out.floats[j] *= inv }
        return out
    }
}

/// The speech encoder of a model directory (the `encode` role for audio): the Whisper encoder.
public final class AudioEncoder: @unchecked Sendable {
    public let encoder: WhisperEncoder
    public let maxChunks: Int
    /// The window length in seconds: `chunk_length` of the tower's `preprocessor_config.json`
    /// (transformers' `WhisperFeatureExtractor`), else Whisper's 30 s.
    public let chunkSeconds: Int
    public var melBins: Int { encoder.config.melBins }
    public var melFrames: Int { encoder.config.melFrames }

    public static func load(modelDirectory: String) throws -> AudioEncoder {
        let mm = try MultimodalConfig.load(directory: modelDirectory)
        let dir = try towerDirectory(modelDirectory, mm.audioTower, modality: "audio")
        return AudioEncoder(encoder: try WhisperEncoder(directory: dir), maxChunks: mm.maxAudioChunks,
                            chunkSeconds: try Self.chunkSeconds(towerDirectory: dir))
    }

    init(encoder: WhisperEncoder, maxChunks: Int, chunkSeconds: Int = 30) {
        self.encoder = encoder
        self.maxChunks = maxChunks
        self.chunkSeconds = chunkSeconds
    }

    /// `chunk_length` from `preprocessor_config.json` beside the tower (30 when absent).
    static func chunkSeconds(towerDirectory: String) throws -> Int {
        let path = (towerDirectory as NSString).appendingPathComponent("preprocessor_config.json")
        guard FileManager.default.fileExists(atPath: path) else { return 30 }
        let r = try ConfigReader.load(path, modality: "audio")
        guard let v = r.json["chunk_length"], !v.isNull else { return 30 }
        guard let seconds = v.intValue, (1...600).contains(seconds) else {
            throw MultimodalError.config(path: path, reason: "'chunk_length' must be a whole number of seconds in 1...600")
        }
        return seconds
    }

    /// Log-mel windows `[n, mel, frames]` → encoder states `[n, P, D]`; windows past
    /// `max_audio_chunks` are dropped, as the reference does.
    public func encode(mel: Tensor) throws -> Tensor {
        if mel.rank == 3 && mel.shape[0] > maxChunks {
            return try encoder.forward(mel: mel.rows(0..<maxChunks))
        }
        return try encoder.forward(mel: mel)
    }
}

/// The speech connector (the `connect` role for audio): query tokens → Whisper decoder (or
/// BLIP-2 Q-Former) cross-attending to the encoder states → projector, `query_tokens_size` rows
/// per window.
public final class AudioConnector: @unchecked Sendable {
    public enum Aligner: Sendable {
        case whisperDecoder(WhisperDecoder)
        case qformer(QFormer)
    }
    public let aligner: Aligner
    public let queries: Tensor      // [Q, Da] f32
    public let projector: Projector

    public static func load(modelDirectory: String) throws -> AudioConnector {
        let mm = try MultimodalConfig.load(directory: modelDirectory)
        let cfgPath = (modelDirectory as NSString).appendingPathComponent("config.json")
        let dir = try towerDirectory(modelDirectory, mm.audioTower, modality: "audio")
        let whisper = try WhisperConfig.load(directory: dir)
        let ckpt = try Checkpoint(directory: modelDirectory)
        let width = mm.audioHiddenSize ?? whisper.dModel
        let l = PrefixLoader(ckpt, prefix: "model.")
        guard let qShape = ckpt.shape("model.query_tokens") else { throw CheckpointError.missingTensor("model.query_tokens") }
        guard qShape == [1, mm.queryTokensSize, width] else {
            throw MultimodalError.dimensionMismatch("model.query_tokens is \(qShape); config.json needs [1, query_tokens_size \(mm.queryTokensSize), mm_audio_hidden_size \(width)]")
        }
        let queries = try l.take("query_tokens", qShape).converted(to: .f32).reshaped([mm.queryTokensSize, width])
        let aligner: Aligner
        switch mm.audioAlignerType {
        case "qformer":
            guard let qj = mm.audioQFormerConfig else {
                throw MultimodalError.config(path: cfgPath, reason: "mm_audio_aligner_type 'qformer' needs 'mm_audio_qformer_config'")
            }
            let qc = try QFormerConfig(json: qj, path: cfgPath + " (mm_audio_qformer_config)")
            guard qc.hiddenSize == width, qc.encoderHiddenSize == whisper.dModel else {
                throw MultimodalError.dimensionMismatch("Q-Former hidden_size \(qc.hiddenSize) / encoder_hidden_size \(qc.encoderHiddenSize) must equal mm_audio_hidden_size \(width) / the audio tower's d_model \(whisper.dModel)")
            }
            aligner = .qformer(try QFormer(config: qc, loader: l.scoped("mm_audio_aligner.qformer.")))
        default:
            guard whisper.dModel == width else {
                throw MultimodalError.dimensionMismatch("mm_audio_hidden_size \(width) in config.json differs from the speech connector's Whisper decoder width d_model \(whisper.dModel) (\(mm.audioTower ?? "audio_tower")/config.json)")
            }
            aligner = .whisperDecoder(try WhisperDecoder(config: whisper, loader: l.scoped("mm_audio_aligner.decoder.audio_decoder."),
                                                         encoderWidth: whisper.dModel))
        }
        let projector = try Projector(type: mm.audioProjectorType, loader: l, prefix: "mm_audio_aligner.projector", inputWidth: width,
                                      inputKey: "mm_audio_hidden_size", outputWidth: mm.hiddenSize)
        try l.finish(under: ["model.mm_audio_aligner.", "model.query_tokens"])
        return AudioConnector(aligner: aligner, queries: queries, projector: projector)
    }

    init(aligner: Aligner, queries: Tensor, projector: Projector) {
        self.aligner = aligner
        self.queries = queries
        self.projector = projector
    }

    /// Rows produced per window.
    public var tokensPerWindow: Int { queries.shape[0] }

    /// Encoder states `[n, P, D]` → embeddings `[n·Q, hidden]`, window after window.
    public func connect(encoderStates: Tensor) throws -> Tensor {
        let aligned: Tensor
        switch aligner {
        case .whisperDecoder(let d): aligned = try d.forward(queries: queries, encoderStates: encoderStates)
        case .qformer(let q): aligned = try q.forward(queries: queries, encoderStates: encoderStates)
        }
        let y = try projector.forward(aligned)
        return try y.reshaped([y.rowCount, projector.outputWidth])
    }
}
