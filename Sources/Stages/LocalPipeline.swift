import Foundation
import Checkpoint
import Media
import Models
import Tensor
import Wire

/// `unimoe run`: every stage in this process, called directly in the order the distributed
/// pipeline calls them (decode → encode → connect per input, stitch, then trunk steps with the
/// same sampler), so both give the same ids for the same inputs and seed.
public final class LocalPipeline {
    public let builder: PromptBuilder
    public let router: RouterStage
    public let decoder: DecodeStage
    public let encoder: EncodeStage
    public let connector: ConnectStage

    public init(modelDirectory: String) throws {
        builder = try PromptBuilder(modelDirectory: modelDirectory)
        let ckpt = try Checkpoint(directory: modelDirectory)
        // The multimodal files also hold the connectors: the trunk takes its tensors only.
        let model = try LanguageModel(config: builder.config, checkpoint: ckpt, experts: .local)
        router = RouterStage(model: model)
        decoder = DecodeStage(modelDirectory: modelDirectory)
        encoder = EncodeStage(modelDirectory: modelDirectory)
        connector = ConnectStage(modelDirectory: modelDirectory)
    }

    /// Answers `request`; `media[i]` holds the bytes of `request.media[i]`. `onToken` sees every id
    /// and the text it completes, as they are produced.
    public func ask(_ request: AskRequest, media: [MediaSource], onToken: (Int, String) -> Void = { _, _ in }) throws -> Answer {
        guard media.count == request.media.count else {
            throw StageError.badRequest("\(media.count) media sources for \(request.media.count) media items")
        }
        // Weights load before the clock starts, as the distributed workers load theirs at start.
        for m in Set(request.media.map(\.modality)) {
            try decoder.preload(m)
            try encoder.preload(m)
            try connector.preload(m)
        }
        var timings = StageTimings()
        let t0 = monotonicSeconds()
        var embeddings: [Tensor] = []
        for (item, source) in zip(request.media, media) {
            let x = try timings.measure("decode") { try decoder.decode(item.modality, source) }
            let f = try timings.measure("encode") { try encoder.encode(item.modality, x) }
            embeddings.append(try timings.measure("connect") { try connector.connect(item.modality, f) })
        }
        let ids = builder.promptIds(request)
        var (input, kinds) = try timings.measure("stitch") { try builder.stitchWithKinds(ids: ids, request: request, embeddings: embeddings) }
        let kindsCount = kinds.count
        let state = GenerationState(request: request, builder: builder)
        let seq: UInt64 = 1
        defer { router.release([seq]) }
        var first = true
        while !state.finished {
            let logits = try timings.measure(first ? "prefill" : "decode_steps") { try router.step([(seq, input)], rowKinds: [kinds])[0] }
            kinds = ["text"]
            if first { timings.add("first_token", seconds: monotonicSeconds() - t0); first = false }
            let (id, text) = state.accept(logits)
            onToken(id, text)
            if !state.finished { input = try builder.embed(id) }
        }
        timings.add("total", seconds: monotonicSeconds() - t0)
        return Answer(ids: state.ids, text: state.text, timings: timings.milliseconds, promptTokens: kindsCount)
    }
}
