import Foundation
import Checkpoint
import Models
import Tensor
import Tokenizer
import JSON

/// One training sample after tokenisation, with the frozen encoders' outputs of its media: ids with
/// `Placeholder` sentinels (-200 image, -300 audio, -400 video), labels aligned with the ids (-100
/// where nothing is learned; sentinels are never learned), and per medium, in placeholder order:
/// image features `[P, mm_hidden]`, video frame features `[F, P, mm_hidden]`, audio encoder states
/// `[windows, S, D]`.
public struct TrainingExample: Sendable {
    public var ids: [Int]
    public var labels: [Int]
    public var images: [Tensor]
    public var videos: [Tensor]
    public var audios: [Tensor]
    /// Vocabulary indices of the words of its answers (the media-words objective; empty otherwise).
    public var answerWords: [Int] = []

    public init(ids: [Int], labels: [Int], images: [Tensor] = [], videos: [Tensor] = [], audios: [Tensor] = []) {
        self.ids = ids; self.labels = labels; self.images = images; self.videos = videos; self.audios = audios
    }

    /// Media inputs it holds (images, videos, audio clips).
    public var mediaCount: Int { images.count + videos.count + audios.count }

    /// Tokens whose label is learned (after the shift: a label at position 0 can never be predicted).
    public var targetCount: Int { labels.dropFirst().filter { $0 != TrunkBatch.ignoreIndex }.count }
}

/// What one micro-batch contributed.
public struct MicroBatchStats: Sendable {
    public var crossEntropySum: Double
    public var targetTokens: Int
    public var auxLoss: Double
    /// The media-words objective's summed loss (0 without it).
    public var mediaWordsLoss: Double = 0
    public var rows: Int
    public var routing: [Int: [Int]]
}

/// A whole Uni-MoE model under training: every tensor of its directory as an f32 `Parameter`
/// (plus LoRA adapters when present), the trunk, and the trainable connectors (image projector,
/// speech connector). Frozen encoders are not part of it: training consumes their cached outputs.
public final class TrainableModel {
    public let directory: String
    public let config: ModelConfig
    public let multimodal: MultimodalConfig?
    public let params: ParameterSet
    public let trunk: TrainableTrunk
    let imageProjector: ProjectorOp?
    let speech: SpeechConnectorOp?
    /// LoRA scale alpha / r of the adapters present (1 without adapters).
    public let loraScale: Float

    /// Loads `directory` (config.json, model safetensors, optional `adapter.safetensors` +
    /// `adapter_config.json`). `speechHeads` overrides the connector's head count (read otherwise
    /// from the audio tower's config).
    public convenience init(directory: String, speechHeads: Int? = nil, expertsLocal: Bool = true) throws {
        let loaded = try Self.loadParameters(directory: directory, expertsLocal: expertsLocal)
        try self.init(directory: directory, config: loaded.config, params: loaded.params, loraScale: loaded.loraScale,
                      speechHeads: speechHeads, expertsLocal: expertsLocal)
    }

    /// Every tensor of a model directory as f32 parameters (frozen), plus adapters when present.
    public static func loadParameters(directory: String, expertsLocal: Bool = true) throws
        -> (config: ModelConfig, params: ParameterSet, loraScale: Float) {
        let config = try ModelConfig.load(directory: directory)
        let ckpt = try Checkpoint(directory: directory, mergeAdapters: false)
        let arch = try Architecture.forConfig(config)
        let params = ParameterSet()
        for name in ckpt.names {
            if name.hasSuffix(".rotary_emb.inv_freq") || name.hasSuffix("audio_decoder.embed_tokens.weight") { continue }
            if !expertsLocal && arch.isExpertTensor(name) { continue }
            params.add(Parameter(name: name, value: try ckpt.take(name)))
        }
        var scale: Float = 1
        let adapterPath = (directory as NSString).appendingPathComponent(AdapterConfig.weightsFile)
        if FileManager.default.fileExists(atPath: adapterPath) {
            let cfg = try AdapterConfig.load(directory: directory)
            scale = cfg.scale
            let adapters = try Checkpoint(file: adapterPath)
            for name in adapters.names where expertsLocal || !arch.isExpertTensor(name) {
                params.add(Parameter(name: name, value: try adapters.take(name)))
            }
        }
        return (config, params, scale)
    }

    /// Builds the model over already loaded (and possibly extended) parameters.
    public init(directory: String, config: ModelConfig, params: ParameterSet, loraScale: Float,
                speechHeads: Int? = nil, expertsLocal: Bool = true) throws {
        self.directory = directory
        self.config = config
        self.params = params
        let hasMM = config.raw["mm_projector_type"] != nil || config.raw["mm_audio_hidden_size"] != nil
            || config.raw["mm_vision_tower"] != nil || config.raw["mm_audio_tower"] != nil
        multimodal = hasMM ? try MultimodalConfig.load(directory: directory) : nil
        self.loraScale = loraScale
        trunk = try TrainableTrunk(config: config, params: params, loraScale: loraScale, expertsLocal: expertsLocal,
                                   auxLossCoefficient: Float(config.raw["router_aux_loss_coef"]?.doubleValue ?? 0.01))
        if let mm = multimodal, params["model.mm_projector.0.weight"] != nil || params["model.mm_projector.weight"] != nil {
            imageProjector = try ProjectorOp(type: mm.projectorType, prefix: "model.mm_projector", params: params)
        } else {
            imageProjector = nil
        }
        if let mm = multimodal, params["model.query_tokens"] != nil {
            var heads = speechHeads
            var eps: Float = 1e-5
            if heads == nil, let tower = mm.audioTower {
                let dir = tower.hasPrefix("/") ? tower : (directory as NSString).appendingPathComponent(tower)
                let w = try WhisperConfig.load(directory: dir)
                heads = w.decoderHeads
                eps = Float(w.layerNormEps)
            }
            guard let heads else { throw TrainingError.unsupportedModel("the speech connector's head count is unknown (no audio tower config)") }
            speech = try SpeechConnectorOp(params: params, heads: heads, eps: eps, projectorType: mm.audioProjectorType)
        } else {
            speech = nil
        }
    }

    /// Names of the connector tensors (stage 1 trains exactly these).
    public static func isConnector(_ name: String) -> Bool { MultimodalConfig.isConnectorTensor(name) }

    /// Runs one micro-batch forward and backward, accumulating gradients into the trainable
    /// parameters. `ceScale` = 1 / target tokens of the whole optimizer step; `auxScale` = the aux
    /// coefficient / micro-batches per step.
    /// `wordsScale` weighs the media-words objective (with `mediaWords` set; the weight / media of
    /// the step). `trunkLoss: false` is `--media-words-only`: the trunk does not run, and only the
    /// media-words gradient reaches the connectors (and towers).
    public func accumulate(_ examples: [TrainingExample], ceScale: Float, auxScale: Float, wordsScale: Float = 0,
                           trunkLoss: Bool = true) throws -> MicroBatchStats {
        GemmProfile.phase = "forward"
        let (batch, media) = try prepare(examples)
        defer { GemmProfile.phase = "forward"; media.release() }
        var r = TrunkResult(crossEntropySum: 0, targetTokens: 0, auxLoss: 0, mediaGrad: nil, routing: [:])
        if trunkLoss {
            try trunk.forward(batch)
            GemmProfile.phase = "backward"
            r = try trunk.backward(ceScale: ceScale, auxScale: auxScale, wantMediaGrad: connectorsTrainable && batch.media != nil)
        } else if let rows = batch.media {
            r.mediaGrad = Tensor(zeros: rows.shape)
        }
        var words = 0.0
        if let head = mediaWords, let rows = batch.media {
            words = head.accumulate(media: rows, segments: media.segments, scale: wordsScale, mediaGrad: r.mediaGrad)
        }
        if let g = r.mediaGrad { media.backward(g) }
        return MicroBatchStats(crossEntropySum: r.crossEntropySum, targetTokens: r.targetTokens, auxLoss: r.auxLoss,
                               mediaWordsLoss: words, rows: trunkLoss ? batch.rows : batch.media?.rowCount ?? 0, routing: r.routing)
    }

    /// The media-words objective (stage 0's `--media-words`); its head's tensors are in `params`
    /// (for the optimizer and checkpoints) but never exported.
    private(set) var mediaWords: MediaWordsOp?

    /// Adds the media-words head over a vocabulary of `vocabulary` words (initialised from `seed`).
    func attachMediaWords(vocabulary: Int, seed: UInt64) {
        let head = MediaWordsOp(vocabulary: vocabulary, width: config.hiddenSize, seed: seed)
        params.add(head.weight)
        params.add(head.bias)
        mediaWords = head
    }

    /// Logits of every row of one example's expanded sequence (tests, evaluation of the loss).
    public func logits(_ example: TrainingExample) throws -> Tensor {
        let (batch, media) = try prepare([example])
        let l = try trunk.forward(batch, allLogits: true)
        _ = try trunk.backward(ceScale: 0, auxScale: 0, wantMediaGrad: false)
        media.release()
        return l
    }

    var connectorsTrainable: Bool {
        params.ordered.contains { $0.trainable && Self.isConnector($0.name) } || visionTower != nil || audioTower != nil
    }

    /// Trainable towers (stage 0 with `--train-towers`); their tensors are also in `params`. With
    /// them, examples carry the towers' inputs (pixels `[1|F, 3, S, S]`, log-mel `[n, mel, frames]`)
    /// instead of their outputs.
    public private(set) var visionTower: TrainableVisionTower?
    public private(set) var audioTower: TrainableWhisperEncoder?
    private var towersRan = (vision: false, audio: false)

    /// Adds trainable towers; their parameters join `params` (CLIP `vision_model.*`, Whisper `encoder.*` names).
    public func attachTowers(vision: TrainableVisionTower?, audio: TrainableWhisperEncoder?) {
        visionTower = vision
        audioTower = audio
        for set in [vision?.params, audio?.params].compactMap({ $0 }) {
            for p in set.ordered where params[p.name] == nil { params.add(p) }
        }
    }

    /// With trainable towers: runs each tower once over every input of the micro-batch (in the order
    /// `prepare` lays the connectors' inputs, so their input gradients line up) and returns the
    /// examples with features in place of pixels / log-mel.
    func runTowers(_ examples: [TrainingExample]) throws -> [TrainingExample] {
        towersRan = (false, false)
        guard visionTower != nil || audioTower != nil else { return examples }
        var out = examples
        if let tower = visionTower, examples.contains(where: { !$0.images.isEmpty || !$0.videos.isEmpty }) {
            var inputs: [Tensor] = []
            for ex in examples { inputs += ex.images; inputs += ex.videos }
            let c = tower.config, plane = c.channels * c.imageSize * c.imageSize
            let total = inputs.reduce(0) { $0 + $1.count / plane }
            let features = try tower.forward(pixels: Vec.concatenate(inputs, shape: [total, c.channels, c.imageSize, c.imageSize]))
            let p = c.patches, d = c.hiddenSize
            var img = 0
            for (e, ex) in examples.enumerated() {
                out[e].images = try ex.images.map { _ in defer { img += 1 }; return try features.rows((img * p)..<((img + 1) * p)).copy().reshaped([p, d]) }
                out[e].videos = try ex.videos.map { v in
                    let frames = v.shape[0]
                    defer { img += frames }
                    return try features.rows((img * p)..<((img + frames) * p)).copy().reshaped([frames, p, d])
                }
            }
            towersRan.vision = true
        }
        if let tower = audioTower, examples.contains(where: { !$0.audios.isEmpty }) {
            let mels = examples.flatMap(\.audios)
            let c = tower.config
            let n = mels.reduce(0) { $0 + $1.shape[0] }
            let states = try tower.forward(mel: Vec.concatenate(mels, shape: [n, c.melBins, c.melFrames]))
            let p = c.maxSourcePositions, d = c.dModel
            var w = 0
            for (e, ex) in examples.enumerated() {
                out[e].audios = try ex.audios.map { m in
                    let k = m.shape[0]
                    defer { w += k }
                    return try states.rows((w * p)..<((w + k) * p)).copy().reshaped([k, p, d])
                }
            }
            towersRan.audio = true
        }
        return out
    }

    /// Media rows in trunk order and how to send their gradient back to the connectors.
    struct MediaPlan {
        var imageProjector: ProjectorOp?
        var speech: SpeechConnectorOp?
        /// Towers that train (stage 0 with `--train-towers`): the connectors pass their input gradients on.
        var visionTower: TrainableVisionTower?
        var audioTower: TrainableWhisperEncoder?
        /// Where a media row of the trunk came from.
        enum RowSource {
            /// Row of the image projector's output.
            case image(row: Int)
            /// Token `token` of video `video` (the mean of that token over the video's frames).
            case video(video: Int, token: Int)
            /// Row of the speech connector's output.
            case speech(row: Int)
        }
        /// One entry per media row, in trunk order.
        var rowSource: [RowSource] = []
        /// Each medium's rows in trunk order, with its example's answer words.
        var segments: [MediaWordsOp.Segment] = []
        var videoFrames: [Int] = []       // frames of each video
        var videoOffset: [Int] = []       // first projector row of each video
        var tokens = 0
        var projectorRows = 0
        var speechRows = 0

        func backward(_ g: Tensor) {
            let h = g.lastDim
            if let p = imageProjector, projectorRows > 0 {
                let d = Tensor(zeros: [projectorRows, h])
                for (r, s) in rowSource.enumerated() {
                    switch s {
                    case .image(let row): Vec.addRow(d, row, g, r, width: h)
                    case .video(let v, let token):
                        let frames = videoFrames[v], inv = 1 / Float(frames)
                        for f in 0..<frames { Vec.addRow(d, videoOffset[v] + f * tokens + token, g, r, width: h, scale: inv) }
                    case .speech: break
                    }
                }
                if let tower = visionTower { tower.backward(p.backward(d)) } else { p.accumulateGradients(d) }
            }
            if let sp = speech, speechRows > 0 {
                let d = Tensor(zeros: [speechRows, h])
                for (r, s) in rowSource.enumerated() {
                    if case .speech(let row) = s { Vec.addRow(d, row, g, r, width: h) }
                }
                if let tower = audioTower, let dStates = sp.backward(d, encoderGrad: true) { tower.backward(dStates) } else { sp.backward(d) }
            }
        }

        func release() { imageProjector?.release(); speech?.release(); visionTower?.release(); audioTower?.release() }
    }

    /// Expands the examples' sentinels into media rows (connectors run once per micro-batch over
    /// every medium) and shifts the labels into per-row targets.
    func prepare(_ examples: [TrainingExample]) throws -> (TrunkBatch, MediaPlan) {
        let h = config.hiddenSize
        let examples = try runTowers(examples)
        var plan = MediaPlan(imageProjector: imageProjector, speech: speech,
                             visionTower: towersRan.vision ? visionTower : nil, audioTower: towersRan.audio ? audioTower : nil)
        // 1. Image-like inputs through the projector in one call.
        var projIn: [Tensor] = []
        var imageOffsets: [[Int]] = [], videoIdx: [[Int]] = []
        var rows = 0
        for ex in examples {
            var offs: [Int] = []
            for im in ex.images {
                guard im.rank == 2 else { throw TrainingError.invalidSetting("image features must be [P, D], got \(im.shape)") }
                offs.append(rows); rows += im.rowCount; projIn.append(im)
            }
            imageOffsets.append(offs)
            var vids: [Int] = []
            for v in ex.videos {
                guard v.rank == 3 else { throw TrainingError.invalidSetting("video features must be [F, P, D], got \(v.shape)") }
                vids.append(plan.videoFrames.count)
                plan.videoFrames.append(v.shape[0]); plan.videoOffset.append(rows)
                plan.tokens = v.shape[1]
                rows += v.shape[0] * v.shape[1]; projIn.append(v)
            }
            videoIdx.append(vids)
        }
        var projected: Tensor?
        if !projIn.isEmpty {
            guard let p = imageProjector else { throw TrainingError.unsupportedModel("the model has no vision projector, but a sample holds an image or video") }
            let width = projIn[0].lastDim
            let x = Tensor(zeros: [rows, width])
            var at = 0
            for t in projIn {
                guard t.lastDim == width else { throw TrainingError.invalidSetting("vision features of width \(t.lastDim) and \(width) in one batch") }
                Vec.copy(x, at: at * width, from: t); at += t.rowCount
            }
            projected = p.forward(x)
            plan.projectorRows = rows
        }
        // 2. Audio windows through the speech connector in one call.
        var audioOffsets: [[Int]] = []
        var windows: [Tensor] = []
        var audioRows = 0
        for ex in examples {
            var offs: [Int] = []
            for a in ex.audios {
                guard a.rank == 3 else { throw TrainingError.invalidSetting("audio states must be [windows, S, D], got \(a.shape)") }
                offs.append(audioRows); audioRows += a.shape[0] * (speech?.queryCount ?? 0); windows.append(a)
            }
            audioOffsets.append(offs)
        }
        var spoken: Tensor?
        if !windows.isEmpty {
            guard let sp = speech else { throw TrainingError.unsupportedModel("the model has no speech connector, but a sample holds audio") }
            let s = windows[0].shape[1], d = windows[0].shape[2]
            let total = windows.reduce(0) { $0 + $1.shape[0] }
            let x = Tensor(zeros: [total, s, d])
            var at = 0
            for w in windows {
                guard w.shape[1] == s, w.shape[2] == d else { throw TrainingError.invalidSetting("audio states \(w.shape) and [_, \(s), \(d)] in one batch") }
                Vec.copy(x, at: at, from: w); at += w.count
            }
            spoken = try sp.forward(encoderStates: x)
            plan.speechRows = audioRows
        }
        // 3. Rows of the trunk.
        var tokens: [Int] = [], targets: [Int] = [], lengths: [Int] = []
        var mediaRows: [(Tensor, Int)] = []   // (source tensor, row), copied below
        for (e, ex) in examples.enumerated() {
            guard ex.ids.count == ex.labels.count, !ex.ids.isEmpty else {
                throw TrainingError.invalidSetting("sample \(e): \(ex.ids.count) ids and \(ex.labels.count) labels")
            }
            var labels: [Int] = []
            var ni = 0, nv = 0, na = 0
            for (id, label) in zip(ex.ids, ex.labels) {
                switch id {
                case Placeholder.image.rawValue:
                    guard ni < ex.images.count, let pr = projected else { throw TrainingError.invalidSetting("sample \(e): more <image> placeholders than images") }
                    let off = imageOffsets[e][ni], n = ex.images[ni].rowCount
                    plan.segments.append(.init(start: mediaRows.count, count: n, words: ex.answerWords))
                    for j in 0..<n { tokens.append(TrunkBatch.mediaRow); labels.append(TrunkBatch.ignoreIndex); mediaRows.append((pr, off + j)); plan.rowSource.append(.image(row: off + j)) }
                    ni += 1
                case Placeholder.video.rawValue:
                    guard nv < ex.videos.count, let pr = projected else { throw TrainingError.invalidSetting("sample \(e): more <video> placeholders than videos") }
                    let vi = videoIdx[e][nv], frames = plan.videoFrames[vi], p = plan.tokens
                    let mean = Tensor(zeros: [p, h]), inv = 1 / Float(frames)
                    for f in 0..<frames {
                        for j in 0..<p { Vec.addRow(mean, j, pr, plan.videoOffset[vi] + f * p + j, width: h, scale: inv) }
                    }
                    plan.segments.append(.init(start: mediaRows.count, count: p, words: ex.answerWords))
                    for j in 0..<p { tokens.append(TrunkBatch.mediaRow); labels.append(TrunkBatch.ignoreIndex); mediaRows.append((mean, j)); plan.rowSource.append(.video(video: vi, token: j)) }
                    nv += 1
                case Placeholder.audio.rawValue:
                    guard na < ex.audios.count, let sp = spoken, let q = speech?.queryCount else { throw TrainingError.invalidSetting("sample \(e): more <audio> placeholders than audio inputs") }
                    let off = audioOffsets[e][na], n = ex.audios[na].shape[0] * q
                    plan.segments.append(.init(start: mediaRows.count, count: n, words: ex.answerWords))
                    for j in 0..<n { tokens.append(TrunkBatch.mediaRow); labels.append(TrunkBatch.ignoreIndex); mediaRows.append((sp, off + j)); plan.rowSource.append(.speech(row: off + j)) }
                    na += 1
                default:
                    tokens.append(id); labels.append(label)
                }
            }
            guard ni == ex.images.count, nv == ex.videos.count, na == ex.audios.count else {
                throw TrainingError.invalidSetting("sample \(e): media inputs without a placeholder")
            }
            for i in 0..<labels.count { targets.append(i + 1 < labels.count ? labels[i + 1] : TrunkBatch.ignoreIndex) }
            lengths.append(labels.count)
        }
        var media: Tensor?
        if !mediaRows.isEmpty {
            let m = Tensor(zeros: [mediaRows.count, h])
            for (i, (t, r)) in mediaRows.enumerated() { Vec.copyRow(m, i, from: t, r, width: h) }
            media = m
        }
        return (TrunkBatch(tokens: tokens, targets: targets, lengths: lengths, media: media), plan)
    }
}
