import Tensor

/// What to generate: how many tokens at most, how to sample, and which ids end the sequence
/// (nil: the config's `eos_token_id`s).
public struct GenerationParameters: Sendable, Equatable {
    public var maxNewTokens: Int
    public var sampling: SamplingParameters
    public var eosTokenIds: [Int]?

    public init(maxNewTokens: Int, sampling: SamplingParameters = SamplingParameters(), eosTokenIds: [Int]? = nil) {
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
        self.eosTokenIds = eosTokenIds
    }
}

/// Generates one sequence token by token: the prompt is prefilled in one batched pass, then each
/// step feeds the last token through the KV cache. `next()` returns the next id, or nil when the
/// sequence has ended (after an EOS id, which is returned like transformers includes it, or after
/// `maxNewTokens`). The CLI iterates it; the pipeline coordinator, which batches many sequences,
/// uses `LanguageModel.forward` and `Sampler` directly in the same way.
public final class TokenGenerator {
    public let model: LanguageModel
    public let parameters: GenerationParameters
    public let cache: KVCache
    public let sampler: Sampler
    /// Ids produced so far.
    public private(set) var generated: [Int] = []
    public private(set) var finished = false
    private let runner: ExpertRunner?
    private let eos: Set<Int>
    private var prompt: Tensor?
    /// Kept from step to step, so a step allocates nothing: its input row, the one-item step
    /// array, the last id as an array, the logits.
    private let stepInput: Tensor
    private var step: [SequenceStep]
    private var lastId = [0]
    private let logits: Tensor

    /// - prompt: input embeddings `[n ≥ 1, hidden]` (token embeddings, possibly with multimodal
    ///   embeddings stitched in).
    public init(model: LanguageModel, embeddings prompt: Tensor, parameters: GenerationParameters,
                experts: ExpertRunner? = nil) throws {
        guard prompt.rank == 2, prompt.shape[0] > 0, prompt.shape[1] == model.hidden else {
            throw ModelError.invalidInput("prompt embeddings have shape \(prompt.shape), expected [n ≥ 1, \(model.hidden)]")
        }
        guard parameters.maxNewTokens >= 0 else { throw ModelError.invalidInput("max new tokens must be ≥ 0") }
        let s = parameters.sampling
        guard s.temperature.isFinite, s.temperature >= 0, s.topK >= 0, s.topP > 0, s.topP <= 1 else {
            throw ModelError.invalidInput("sampling needs temperature ≥ 0, top-k ≥ 0 and 0 < top-p ≤ 1")
        }
        self.model = model
        self.parameters = parameters
        self.prompt = prompt
        runner = experts
        eos = Set(parameters.eosTokenIds ?? model.config.eosTokenIds)
        cache = model.makeCache(capacity: prompt.shape[0] + parameters.maxNewTokens)
        sampler = Sampler(parameters.sampling)
        stepInput = Tensor(zeros: [1, model.hidden])
        step = [SequenceStep(cache: cache, embeddings: prompt)]
        logits = Tensor(zeros: [1, model.vocab])
        generated.reserveCapacity(parameters.maxNewTokens)
    }

    /// Prompt given as token ids (BOS included if wanted).
    public convenience init(model: LanguageModel, promptIds: [Int], parameters: GenerationParameters,
                            experts: ExpertRunner? = nil) throws {
        guard !promptIds.isEmpty else { throw ModelError.invalidInput("empty prompt") }
        try self.init(model: model, embeddings: model.embed(ids: promptIds), parameters: parameters, experts: experts)
    }

    /// The next generated id, or nil once the sequence has ended.
    public func next() throws -> Int? {
        if finished || generated.count >= parameters.maxNewTokens { finished = true; return nil }
        if prompt != nil {
            prompt = nil   // `step` holds it for the prefill
        } else {
            lastId[0] = generated[generated.count - 1]
            try model.embed(ids: lastId, into: stepInput.floats)
            step[0] = SequenceStep(cache: cache, embeddings: stepInput)
        }
        try model.forward(step, experts: runner, allPositions: false, into: logits)
        let id = sampler.sample(logits)
        generated.append(id)
        if eos.contains(id) || generated.count >= parameters.maxNewTokens { finished = true }
        return id
    }

    /// Runs to the end and returns every generated id.
    public func run() throws -> [Int] {
        while try next() != nil {}
        return generated
    }
}
