import Foundation
import JSON

/// A Hugging Face `tokenizer.json` tokenizer (BPE models: LLaMA/Vicuna SentencePiece-style with byte
/// fallback, GPT-2/Qwen/LLaMA-3 byte-level), producing the same ids as the `tokenizers` library.
/// The pipeline mirrors that library stage by stage: added tokens are cut out first, the rest is
/// normalized, pre-tokenized into words, BPE-encoded, and wrapped by the post-processor.
///
/// Sendable: every stage is immutable after loading; the only mutable state, the BPE word cache,
/// sits behind a `Mutex`.
public final class Tokenizer: Sendable {
    private let normalizer: Normalizer?
    private let preTokenizer: PreTokenizer?
    private let model: BPEModel
    private let postProcessor: PostProcessor?
    private let decoder: Decoder?
    private let addedById: [Int: Bytes]
    private let addedByContent: [Bytes: Int]
    private let specialContents: Set<Bytes>
    private let rawMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher

    /// Id of the beginning-of-sequence token: `bos_token` of tokenizer_config.json, else the special
    /// token the post-processor puts first.
    public let bosTokenId: Int?
    /// Id of the end-of-sequence token: `eos_token` of tokenizer_config.json, else a conventional name.
    public let eosTokenId: Int?
    /// One more than the largest id, counting added tokens: the embedding rows a model needs.
    public let vocabularySize: Int

    /// Loads `DIR/tokenizer.json` and, if present, `DIR/tokenizer_config.json`.
    public convenience init(directory: String) throws {
        let tokPath = (directory as NSString).appendingPathComponent("tokenizer.json")
        let cfgPath = (directory as NSString).appendingPathComponent("tokenizer_config.json")
        let json = try Tokenizer.read(tokPath)
        let config = FileManager.default.fileExists(atPath: cfgPath) ? try Tokenizer.read(cfgPath) : nil
        try self.init(json: json, config: config, file: tokPath, configFile: cfgPath)
    }

    /// Builds a tokenizer from the contents of tokenizer.json (and tokenizer_config.json).
    public convenience init(json: Data, config: Data? = nil) throws {
        try self.init(json: Array(json), config: config.map { Array($0) }, file: "tokenizer.json", configFile: "tokenizer_config.json")
    }

    private static func read(_ path: String) throws -> Bytes {
        do {
            return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot be read" : "no such file"
            throw TokenizerError.io(path: path, reason: reason)
        }
    }

    /// Parses tokenizer JSON with the shared strict parser. Duplicate keys are kept (the last one
    /// wins on lookup), as the `tokenizers` library and Python's `json` read them.
    private static func parse(_ bytes: Bytes, file: String) throws -> JSONValue {
        do { return try JSONValue.parse(bytes, options: JSONParseOptions(rejectDuplicateKeys: false)) } catch {
            if case .syntax(let offset, let reason) = error { throw TokenizerError.badJSON(file: file, offset: offset, reason: reason) }
            throw TokenizerError.badJSON(file: file, offset: error.offset, reason: "\(error)")
        }
    }

    private init(json bytes: Bytes, config configBytes: Bytes?, file: String, configFile: String) throws {
        let root = try Tokenizer.parse(bytes, file: file)
        guard root.members != nil else { throw TokenizerError.malformed(file: file, reason: "top level is not an object") }
        guard let modelJSON = root["model"] else { throw TokenizerError.malformed(file: file, reason: "no 'model'") }
        let bpe = try BPEModel(json: modelJSON, file: file)
        model = bpe
        normalizer = try root["normalizer"].map { try makeNormalizer($0, file: file) } ?? nil
        preTokenizer = try root["pre_tokenizer"].map { try makePreTokenizer($0, file: file) } ?? nil
        postProcessor = try root["post_processor"].map { try makePostProcessor($0, file: file) } ?? nil
        decoder = try root["decoder"].map { try makeDecoder($0, file: file) } ?? nil

        var added: [AddedToken] = []
        if let list = root["added_tokens"], !list.isNull {
            guard let items = list.arrayValue else { throw TokenizerError.malformed(file: file, reason: "'added_tokens' is not an array") }
            added = try items.map { try AddedToken(json: $0, file: file) }
        }
        var byId: [Int: Bytes] = [:], byContent: [Bytes: Int] = [:]
        for t in added { byId[t.id] = t.content; byContent[t.content] = t.id }
        addedById = byId
        addedByContent = byContent
        specialContents = Set(added.filter(\.special).map(\.content))
        // Special tokens first, then the others, as `tokenizers` builds its matchers.
        let ordered = added.filter(\.special) + added.filter { !$0.special }
        let raw = ordered.filter { !$0.normalized }
        rawMatcher = AddedTokenMatcher(tokens: raw, patterns: raw.map(\.content))
        let norm = ordered.filter(\.normalized)
        let normalizer = self.normalizer
        normalizedMatcher = AddedTokenMatcher(tokens: norm, patterns: norm.map { normalizer?.normalize($0.content) ?? $0.content })
        vocabularySize = max(bpe.tokens.count, (added.map(\.id).max() ?? -1) + 1)

        // Special token ids: tokenizer_config.json first, then what the files imply.
        var config: JSONValue?
        if let configBytes {
            config = try Tokenizer.parse(configBytes, file: configFile)
        }
        func configured(_ key: String) -> (present: Bool, content: String?) {
            guard let v = config?[key] else { return (false, nil) }
            if let s = v.stringValue { return (true, s) }
            if let s = v["content"]?.stringValue { return (true, s) }
            return (true, nil)
        }
        let lookup: (String) -> Int? = { s in byContent[Array(s.utf8)] ?? bpe.id(of: Array(s.utf8)) }
        let bos = configured("bos_token")
        if bos.present {
            bosTokenId = bos.content.flatMap(lookup)
        } else {
            switch postProcessor {
            case let t as TemplateProcessor:
                if case .special(let ids)? = t.single.first { bosTokenId = ids.first } else { bosTokenId = nil }
            case let w as WrapProcessor: bosTokenId = w.cls
            default: bosTokenId = lookup("<s>")
            }
        }
        let eos = configured("eos_token")
        if eos.present {
            eosTokenId = eos.content.flatMap(lookup)
        } else {
            eosTokenId = ["</s>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>"].lazy.compactMap(lookup).first
        }
    }

    /// Token ids of `text`. With `addSpecialTokens` the post-processor adds its special tokens (BOS);
    /// special tokens written in the text are recognised either way, as in `tokenizers`.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        let input = Array(text.utf8)
        var ids: [Int] = []
        for (range, id) in rawMatcher.split(input) {
            if let id { ids.append(id); continue }
            if range.isEmpty { continue }
            let raw = Array(input[range])
            let normalized = normalizer?.normalize(raw) ?? raw
            for (r, id2) in normalizedMatcher.split(normalized) {
                if let id2 { ids.append(id2); continue }
                if r.isEmpty { continue }
                let piece = Piece(bytes: Array(normalized[r]), offset: range.lowerBound + r.lowerBound)
                for word in preTokenizer?.split([piece]) ?? [piece] {
                    ids += model.encode(word.bytes)
                }
            }
        }
        if addSpecialTokens, let postProcessor { ids = postProcessor.process(ids) }
        return ids
    }

    /// Text of `ids`. Unknown ids are skipped; special tokens too unless `skipSpecialTokens` is false.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = true) -> String {
        String(decoding: decodeBytes(ids, skipSpecialTokens: skipSpecialTokens), as: UTF8.self)
    }

    func decodeBytes(_ ids: [Int], skipSpecialTokens: Bool = true) -> Bytes {
        var tokens: [Bytes] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            guard let t = addedById[id] ?? model.token(of: id) else { continue }
            if skipSpecialTokens && specialContents.contains(t) { continue }
            tokens.append(t)
        }
        guard let decoder else { return Array(tokens.joined(separator: [0x20])) }
        return decoder.decode(tokens).flatMap { $0 }
    }

    /// Id of a token given by its exact text (added tokens first, then the model vocabulary).
    public func tokenId(_ token: String) -> Int? {
        let b = Array(token.utf8)
        return addedByContent[b] ?? model.id(of: b)
    }

    /// The text of one token id as stored in the vocabulary (e.g. `▁the`, `<0x0A>`, `Ġthe`).
    public func token(_ id: Int) -> String? {
        (addedById[id] ?? model.token(of: id)).map { String(decoding: $0, as: UTF8.self) }
    }
}
