import Foundation
import JSON

/// Builds the `tokenizer.json` transformers (5.x `LlamaTokenizer`, the fast tokenizer it makes from a
/// LLaMA/Vicuna `tokenizer.model`) would write: a byte-fallback BPE whose merges are every split of a
/// piece into two pieces (ordered by the merged piece's id, then the left part's length), no
/// normalizer, a Metaspace pre-tokenizer, `<s> $A` post-processing, and the Replace / ByteFallback /
/// Fuse / Strip decoder. Like transformers' LlamaTokenizer it ignores the model's own normalizer
/// rules; other tokenizer classes (which convert differently) are refused.
public enum SentencePieceConverter {
    /// The tokenizer_config.json settings that shape the result (transformers' defaults).
    public struct Options: Sendable, Equatable {
        public var addBOS = true
        public var addEOS = false
        /// `legacy` true prepends `▁` to every section between added tokens, false only to the first.
        public var legacy = false
        public var addPrefixSpace = true
        public var unkToken = "<unk>", bosToken = "<s>", eosToken = "</s>"

        public init() {}

        /// Reads the keys of a tokenizer_config.json (missing keys keep their defaults).
        public init(config data: Data, file: String) throws {
            let json: JSONValue
            do { json = try JSONValue.parse(data) } catch {
                throw TokenizerError.malformed(file: file, reason: "not valid JSON (\(error))")
            }
            guard json.objectValue != nil else { throw TokenizerError.malformed(file: file, reason: "the top level is not an object") }
            func flag(_ key: String, _ into: inout Bool) throws {
                guard let v = json[key], !v.isNull else { return }
                guard let b = v.boolValue else { throw TokenizerError.malformed(file: file, reason: "'\(key)' must be true or false, got \(v)") }
                into = b
            }
            func token(_ key: String, _ into: inout String) throws {
                guard let v = json[key], !v.isNull else { return }
                // A plain string, or an AddedToken object with "content".
                guard let s = v.stringValue ?? v["content"]?.stringValue else {
                    throw TokenizerError.malformed(file: file, reason: "'\(key)' must be a string or an object with 'content', got \(v)")
                }
                into = s
            }
            // Other tokenizer classes convert a tokenizer.model differently (normalizers, vocabulary order).
            if let cls = json["tokenizer_class"]?.stringValue, !["LlamaTokenizer", "LlamaTokenizerFast"].contains(cls) {
                throw TokenizerError.malformed(file: file, reason: "tokenizer_class '\(cls)': only LlamaTokenizer's conversion of tokenizer.model is implemented")
            }
            try flag("add_bos_token", &addBOS)
            try flag("add_eos_token", &addEOS)
            try flag("legacy", &legacy)
            try flag("add_prefix_space", &addPrefixSpace)
            try token("unk_token", &unkToken)
            try token("bos_token", &bosToken)
            try token("eos_token", &eosToken)
        }
    }

    /// The tokenizer.json for `model` (BPE models only: LLaMA's tokenizers are BPE).
    public static func tokenizerJSON(_ model: SentencePieceModel, options: Options = Options(), file: String) throws -> JSONValue {
        guard model.modelType == .bpe else {
            throw TokenizerError.malformed(file: file, reason: "is a SentencePiece \(model.modelType) model; only BPE models (LLaMA, Vicuna) convert")
        }
        var ids: [String: Int] = [:]
        for (i, p) in model.pieces.enumerated() { ids[p.text] = i }
        func id(of token: String, _ role: String) throws -> Int {
            guard let i = ids[token] else {
                throw TokenizerError.malformed(file: file, reason: "\(role) '\(token)' (tokenizer_config.json) is not a piece of the model")
            }
            return i
        }
        let unk = try id(of: options.unkToken, "unk_token"), bos = try id(of: options.bosToken, "bos_token")
        let eos = try id(of: options.eosToken, "eos_token")

        // Added tokens: unk/bos/eos, control pieces (special) and user-defined pieces (not special).
        var added: [Int: Bool] = [unk: true, bos: true, eos: true]
        for (i, p) in model.pieces.enumerated() where p.type == .control || p.type == .userDefined {
            added[i] = added[i] ?? (p.type == .control)
        }
        let addedTokens: [JSONValue] = added.keys.sorted().map { i in
            .object(["id": .int(i), "content": .string(model.pieces[i].text), "single_word": .bool(false), "lstrip": .bool(false),
                     "rstrip": .bool(false), "normalized": .bool(false), "special": .bool(added[i]!)])
        }

        let vocab = JSONObject(model.pieces.enumerated().map { (key: $0.element.text, value: .int($0.offset)) })
        let bpe: JSONValue = .object([
            "type": .string("BPE"), "dropout": .null, "unk_token": .null, "continuing_subword_prefix": .null, "end_of_word_suffix": .null,
            "fuse_unk": .bool(true), "byte_fallback": .bool(true), "ignore_merges": .bool(false),
            "vocab": .object(vocab), "merges": .array(merges(model.pieces.map(\.text), ids: ids).map { .array([.string($0.0), .string($0.1)]) }),
        ])

        let scheme = options.addPrefixSpace ? (options.legacy ? "always" : "first") : "never"
        var decoders: [JSONValue] = [
            .object(["type": .string("Replace"), "pattern": .object(["String": .string("\u{2581}")]), "content": .string(" ")]),
            .object(["type": .string("ByteFallback")]), .object(["type": .string("Fuse")]),
        ]
        if options.addPrefixSpace { decoders.append(.object(["type": .string("Strip"), "content": .string(" "), "start": .int(1), "stop": .int(0)])) }

        return .object([
            "version": .string("1.0"), "truncation": .null, "padding": .null, "added_tokens": .array(addedTokens), "normalizer": .null,
            "pre_tokenizer": .object(["type": .string("Metaspace"), "replacement": .string("\u{2581}"), "prepend_scheme": .string(scheme), "split": .bool(false)]),
            "post_processor": postProcessor(options, bos: bos, eos: eos),
            "decoder": .object(["type": .string("Sequence"), "decoders": .array(decoders)]),
            "model": bpe,
        ])
    }

    /// transformers' `generate_merges` without scores: for each piece (in id order) every split into
    /// two pieces, sorted by the merged piece's id, then the left part's length in code points.
    static func merges(_ pieces: [String], ids: [String: Int]) -> [(String, String)] {
        var out: [(merged: Int, leftLength: Int, left: String, right: String)] = []
        for (merged, piece) in pieces.enumerated() {
            let scalars = Array(piece.unicodeScalars)
            guard scalars.count > 1 else { continue }
            for cut in 1..<scalars.count {
                var l = String.UnicodeScalarView(), r = String.UnicodeScalarView()
                l.append(contentsOf: scalars[..<cut]); r.append(contentsOf: scalars[cut...])
                let left = String(l), right = String(r)
                if ids[left] != nil, ids[right] != nil { out.append((merged, cut, left, right)) }
            }
        }
        out.sort { ($0.merged, $0.leftLength) < ($1.merged, $1.leftLength) }
        return out.map { ($0.left, $0.right) }
    }

    /// TemplateProcessing with the BOS/EOS the options ask for (the second sequence's have type 1).
    static func postProcessor(_ o: Options, bos: Int, eos: Int) -> JSONValue {
        func special(_ t: String, _ type: Int) -> JSONValue { .object(["SpecialToken": .object(["id": .string(t), "type_id": .int(type)])]) }
        func sequence(_ s: String, _ type: Int) -> JSONValue { .object(["Sequence": .object(["id": .string(s), "type_id": .int(type)])]) }
        func part(_ s: String, _ type: Int) -> [JSONValue] {
            (o.addBOS ? [special(o.bosToken, type)] : []) + [sequence(s, type)] + (o.addEOS ? [special(o.eosToken, type)] : [])
        }
        var specials: [(key: String, value: JSONValue)] = []
        if o.addBOS { specials.append((o.bosToken, .object(["id": .string(o.bosToken), "ids": .array([.int(bos)]), "tokens": .array([.string(o.bosToken)])]))) }
        if o.addEOS, !(o.addBOS && o.eosToken == o.bosToken) {
            specials.append((o.eosToken, .object(["id": .string(o.eosToken), "ids": .array([.int(eos)]), "tokens": .array([.string(o.eosToken)])])))
        }
        return .object(["type": .string("TemplateProcessing"), "single": .array(part("A", 0)), "pair": .array(part("A", 0) + part("B", 1)),
                        "special_tokens": .object(JSONObject(specials))])
    }

    /// The tokenizer.json text for `directory`'s `tokenizer.model` (shaped by its
    /// `tokenizer_config.json`, when present); nil when it has no tokenizer.model or already ships a
    /// tokenizer.json.
    public static func tokenizerJSON(directory: String) throws -> String? {
        let fm = FileManager.default
        let modelPath = (directory as NSString).appendingPathComponent("tokenizer.model")
        guard fm.fileExists(atPath: modelPath), !fm.fileExists(atPath: (directory as NSString).appendingPathComponent("tokenizer.json")) else {
            return nil
        }
        let configPath = (directory as NSString).appendingPathComponent("tokenizer_config.json")
        var options = Options()
        if let data = fm.contents(atPath: configPath) { options = try Options(config: data, file: configPath) }
        return try tokenizerJSON(try SentencePieceModel(path: modelPath), options: options, file: modelPath).serialized() + "\n"
    }

    /// Writes `text` as `directory/tokenizer.json`.
    public static func write(_ text: String, into directory: String) throws {
        let path = (directory as NSString).appendingPathComponent("tokenizer.json")
        do { try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw TokenizerError.io(path: path, reason: (error as NSError).localizedDescription)
        }
    }
}
