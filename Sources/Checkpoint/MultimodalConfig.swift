import Foundation
import JSON

/// The multimodal keys of a Uni-MoE model directory's `config.json` (the reference implementation's
/// `mm_*` names, see docs/MODEL-DIRECTORY.md), read from the raw JSON so an encoder or connector
/// process never needs the trunk's config to be complete. Defaults follow the CLI contract.
public struct MultimodalConfig: Sendable, Equatable {
    /// The trunk's `hidden_size`: every connector's output width.
    public var hiddenSize: Int
    /// `mm_vision_tower`: subdirectory holding a transformers CLIP vision model; nil = no images.
    public var visionTower: String?
    /// `mm_vision_select_layer` (default −2): index into the tower's hidden states (0 = embeddings).
    public var visionSelectLayer: Int
    /// `mm_vision_select_feature`: `patch` drops CLS, `cls_patch` keeps it.
    public var visionSelectFeature: String
    /// `mm_projector_type`: `linear` or `mlp{N}x_gelu`.
    public var projectorType: String
    /// `mm_hidden_size`: the vision features' width (must equal the tower's `hidden_size`).
    public var mmHiddenSize: Int?
    /// `image_aspect_ratio`: `pad` pads images to a square with the mean colour first.
    public var imageAspectRatio: String?
    /// `video_frames` (default 8).
    public var videoFrames: Int
    /// `mm_audio_tower`: subdirectory holding a transformers Whisper model; nil = no audio.
    public var audioTower: String?
    /// `mm_audio_hidden_size`: width of the query tokens / speech connector (768 for Whisper-small).
    public var audioHiddenSize: Int?
    /// `audio_projector_type`: `linear` or `mlp{N}x_gelu`.
    public var audioProjectorType: String
    /// `query_tokens_size` (default 50): connector rows per 30 s window.
    public var queryTokensSize: Int
    /// `max_audio_chunks` (default 20).
    public var maxAudioChunks: Int
    /// `mm_audio_aligner_type` (our addition): `whisper_decoder` (default, Uni-MoE speech) or `qformer`.
    public var audioAlignerType: String
    /// `mm_audio_qformer_config` (our addition): the Blip2QFormerConfig keys for the `qformer` aligner.
    public var audioQFormerConfig: [String: JSONValue]?

    public var padToSquare: Bool { imageAspectRatio == "pad" }

    /// Name prefixes of the connector tensors a multimodal `model.safetensors` holds beside the trunk.
    /// The encoders' loaders own them (strictly); the language-model loader should skip them:
    /// `checkpoint.ignore(where: MultimodalConfig.isConnectorTensor)`.
    public static let connectorPrefixes = ["model.mm_projector.", "model.mm_audio_aligner.", "model.query_tokens"]

    public static func isConnectorTensor(_ name: String) -> Bool {
        connectorPrefixes.contains { name.hasPrefix($0) }
    }

    /// Reads `config.json` of a model directory.
    public static func load(directory: String) throws -> MultimodalConfig {
        let path = (directory as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CheckpointError.io(path: path, reason: "cannot read the model's config.json")
        }
        return try MultimodalConfig(json: ModelConfig.parseObject(data, path: path), path: path)
    }

    /// Decodes the multimodal keys from a parsed config; `path` names the file in errors.
    public init(json: [String: JSONValue], path: String) throws {
        func fail(_ m: String) -> CheckpointError { .config(path: path, reason: m) }
        func int(_ k: String, _ def: Int?) throws -> Int? {
            guard let v = json[k], !v.isNull else { return def }
            guard let i = v.intValue else { throw fail("'\(k)' must be an integer, got \(v)") }
            return i
        }
        func string(_ k: String) throws -> String? {
            guard let v = json[k], !v.isNull else { return nil }
            guard let s = v.stringValue else { throw fail("'\(k)' must be a string, got \(v)") }
            return s
        }
        guard let h = try int("hidden_size", nil), h > 0 else { throw fail("'hidden_size' (the trunk width) is missing") }
        hiddenSize = h
        visionTower = try string("mm_vision_tower")
        visionSelectLayer = try int("mm_vision_select_layer", -2) ?? -2
        visionSelectFeature = try string("mm_vision_select_feature") ?? "patch"
        projectorType = try string("mm_projector_type") ?? "linear"
        mmHiddenSize = try int("mm_hidden_size", nil)
        imageAspectRatio = try string("image_aspect_ratio")
        videoFrames = try int("video_frames", 8) ?? 8
        audioTower = try string("mm_audio_tower")
        audioHiddenSize = try int("mm_audio_hidden_size", nil)
        audioProjectorType = try string("audio_projector_type") ?? "linear"
        queryTokensSize = try int("query_tokens_size", 50) ?? 50
        maxAudioChunks = try int("max_audio_chunks", 20) ?? 20
        audioAlignerType = try string("mm_audio_aligner_type") ?? "whisper_decoder"
        if let q = json["mm_audio_qformer_config"], !q.isNull {
            guard let o = q.objectValue else { throw fail("'mm_audio_qformer_config' must be an object") }
            audioQFormerConfig = o
        } else {
            audioQFormerConfig = nil
        }
        guard ["patch", "cls_patch"].contains(visionSelectFeature) else {
            throw fail("'mm_vision_select_feature' is '\(visionSelectFeature)'; supported: patch, cls_patch")
        }
        guard videoFrames > 0 else { throw fail("'video_frames' must be positive, got \(videoFrames)") }
        guard queryTokensSize > 0 else { throw fail("'query_tokens_size' must be positive, got \(queryTokensSize)") }
        guard maxAudioChunks > 0 else { throw fail("'max_audio_chunks' must be positive, got \(maxAudioChunks)") }
        guard ["whisper_decoder", "qformer"].contains(audioAlignerType) else {
            throw fail("'mm_audio_aligner_type' is '\(audioAlignerType)'; supported: whisper_decoder, qformer")
        }
    }
}
