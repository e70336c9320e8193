import Foundation
import Checkpoint
import Models
import Tensor
import Tokenizer

/// The kinds of media a request may carry, in the order the template places their placeholders.
public enum Modality: String, Codable, Sendable, CaseIterable {
    case image, audio, video

    var placeholder: Placeholder {
        switch self {
        case .image: return .image
        case .audio: return .audio
        case .video: return .video
        }
    }
}

/// One media input of a request: its kind and a name for messages (the file name on the client).
public struct MediaItem: Codable, Sendable, Equatable {
    public var modality: Modality
    public var name: String
    public init(modality: Modality, name: String) {
        self.modality = modality
        self.name = name
    }
}

/// What a client asks: the question, its media (bytes travel separately, in chunks) and how to
/// generate. The same value drives `unimoe run` and the distributed pipeline.
public struct AskRequest: Codable, Sendable, Equatable {
    public var question: String
    public var media: [MediaItem]
    public var maxNewTokens: Int
    public var temperature: Double
    public var topP: Double
    public var seed: UInt64

    public init(question: String, media: [MediaItem] = [], maxNewTokens: Int = 64, temperature: Double = 0,
                topP: Double = 1, seed: UInt64 = 0) {
        self.question = question
        self.media = media
        self.maxNewTokens = maxNewTokens
        self.temperature = temperature
        self.topP = topP
        self.seed = seed
    }

    var sampling: SamplingParameters {
        SamplingParameters(temperature: Float(temperature), topK: 0, topP: Float(topP), seed: seed)
    }
}

/// The finished answer: generated ids (EOS included when produced), their text, per-stage timings,
/// and how many input rows the prompt had (tokens plus media embedding rows; absent from old peers).
public struct Answer: Codable, Sendable, Equatable {
    public var ids: [Int]
    public var text: String
    public var timings: [String: Double]
    public var promptTokens: Int?
    public init(ids: [Int], text: String, timings: [String: Double] = [:], promptTokens: Int? = nil) {
        self.ids = ids
        self.text = text
        self.timings = timings
        self.promptTokens = promptTokens
    }
}

/// Errors of the pipeline stages, each naming what to fix.
public enum StageError: Error, Equatable, CustomStringConvertible, Sendable {
    case badRequest(String)
    case media(file: String, reason: String)
    case stage(String)
    /// The client abandoned the request (`AskClient`'s `cancelled` said so); the coordinator was told.
    case cancelled
    /// The pipeline refused the request at once: it holds as many as it may (`max_requests`).
    case busy(String)

    /// How the coordinator's error reply for a refused request begins (the wire carries text).
    public static let busyPrefix = "busy: "

    public var description: String {
        switch self {
        case .badRequest(let m): return "bad request: \(m)"
        case .media(let file, let reason): return "\(file): \(reason)"
        case .stage(let m): return m
        case .cancelled: return "cancelled by the client"
        case .busy(let m): return "busy: \(m)"
        }
    }
}

/// Template + tokenisation with placeholders, and stitching of media embeddings at the sentinels.
/// Shared by `unimoe run` and the coordinator, so both build the very same input embeddings.
public final class PromptBuilder: @unchecked Sendable {
    public let tokenizer: Tokenizer
    /// `[vocab, hidden]` token embeddings, memory-mapped from the checkpoint (only this tensor).
    public let embedTokens: Tensor
    public let config: ModelConfig

    /// `@unchecked Sendable`: every field is immutable after init.
    public init(modelDirectory: String) throws {
        config = try ModelConfig.load(directory: modelDirectory)
        tokenizer = try Tokenizer(directory: modelDirectory)
        let ckpt = try Checkpoint(directory: modelDirectory)
        embedTokens = try ckpt.take("model.embed_tokens.weight", shape: [config.vocabSize, config.hiddenSize])
    }

    public var hidden: Int { config.hiddenSize }

    /// Prompt ids with sentinels, placeholders in template order (images, audios, videos).
    public func promptIds(_ request: AskRequest) -> [Int] {
        let count = { (m: Modality) in request.media.filter { $0.modality == m }.count }
        let text = ChatTemplate.vicuna(query: request.question, images: count(.image), audios: count(.audio), videos: count(.video))
        return tokenizer.encodeWithPlaceholders(text)
    }

    /// Input embeddings `[T, hidden]`: token embeddings with each sentinel replaced by the rows of
    /// the next media input of that kind (`embeddings[i]` belongs to `request.media[i]`).
    public func stitch(ids: [Int], request: AskRequest, embeddings: [Tensor]) throws -> Tensor {
        try stitchWithKinds(ids: ids, request: request, embeddings: embeddings).embeddings
    }

    /// `stitch`, plus what each row is (`text` or the modality of its media input), for routing telemetry.
    public func stitchWithKinds(ids: [Int], request: AskRequest, embeddings: [Tensor]) throws -> (embeddings: Tensor, kinds: [String]) {
        guard embeddings.count == request.media.count else {
            throw StageError.stage("\(embeddings.count) media embeddings for \(request.media.count) media inputs")
        }
        var queues: [Int: [Tensor]] = [:]
        var kinds: [String] = []
        for (item, e) in zip(request.media, embeddings) {
            guard e.rank == 2, e.shape[1] == hidden else {
                throw StageError.stage("\(item.name): embeddings of shape \(e.shape), expected [n, \(hidden)]")
            }
            queues[item.modality.placeholder.rawValue, default: []].append(e)
        }
        var rows = 0
        var pieces: [(id: Int?, tensor: Tensor?)] = []
        for id in ids {
            if id < 0 {
                guard var q = queues[id], !q.isEmpty else { throw StageError.stage("placeholder \(id) has no media input") }
                let t = q.removeFirst()
                queues[id] = q
                pieces.append((nil, t))
                let kind = request.media.first { $0.modality.placeholder.rawValue == id }?.modality.rawValue ?? "media"
                kinds += [String](repeating: kind, count: t.shape[0])
                rows += t.shape[0]
            } else {
                guard id < config.vocabSize else { throw StageError.stage("token id \(id) outside the vocabulary") }
                pieces.append((id, nil))
                kinds.append("text")
                rows += 1
            }
        }
        let out = Tensor(zeros: [rows, hidden])
        var r = 0
        var run: [Int] = []
        func flush() throws {
            if run.isEmpty { return }
            try Gather.embedding(embedTokens, ids: run, into: out.floats + r * hidden)
            r += run.count
            run.removeAll()
        }
        for p in pieces {
            if let id = p.id { run.append(id); continue }
            try flush()
            let t = p.tensor!.converted(to: .f32)
            (out.floats + r * hidden).update(from: t.floats, count: t.count)
            r += t.shape[0]
        }
        try flush()
        return (out, kinds)
    }

    /// A sequence's whole input so far, for a fresh KV cache: its prompt's rows (`prompt`, what
    /// `stitch` made) followed by the embeddings of the tokens it generated (router failover).
    public func replay(prompt: Tensor, generated ids: [Int]) throws -> Tensor {
        guard prompt.shape.count == 2, prompt.shape[1] == hidden else { throw StageError.stage("prompt rows \(prompt.shape), hidden \(hidden)") }
        let t = prompt.converted(to: .f32)
        let out = Tensor(zeros: [t.shape[0] + ids.count, hidden])
        out.floats.update(from: t.floats, count: t.count)
        if !ids.isEmpty { try Gather.embedding(embedTokens, ids: ids, into: out.floats + t.count) }
        return out
    }

    /// Embeddings of single generated tokens (the decode steps' inputs).
    public func embed(_ id: Int) throws -> Tensor {
        guard (0..<config.vocabSize).contains(id) else { throw StageError.stage("token id \(id) outside the vocabulary") }
        let out = Tensor(zeros: [1, hidden])
        try Gather.embedding(embedTokens, ids: [id], into: out.floats)
        return out
    }
}

/// One sequence being generated: sampler, ids so far, streaming detokenizer, stop rule. Fed the
/// logits of each step by whoever runs the trunk (in-process or over the wire).
public final class GenerationState {
    public let maxNewTokens: Int
    public private(set) var ids: [Int] = []
    public private(set) var text = ""
    public private(set) var finished: Bool
    private let sampler: Sampler
    private let eos: Set<Int>
    private var detok: StreamingDetokenizer

    public init(request: AskRequest, builder: PromptBuilder) {
        maxNewTokens = request.maxNewTokens
        sampler = Sampler(request.sampling)
        eos = Set(builder.config.eosTokenIds)
        detok = StreamingDetokenizer(tokenizer: builder.tokenizer)
        finished = request.maxNewTokens <= 0
    }

    /// Samples the next id from `logits` (`[1, vocab]` or `[vocab]`); returns it and the text it
    /// completes (the final flush included once the sequence ends).
    public func accept(_ logits: Tensor) -> (id: Int, text: String) {
        let id = sampler.sample(logits)
        ids.append(id)
        var piece = eos.contains(id) ? "" : detok.append(id)
        if eos.contains(id) || ids.count >= maxNewTokens {
            finished = true
            piece += detok.finish()
        }
        text += piece
        return (id, piece)
    }
}
