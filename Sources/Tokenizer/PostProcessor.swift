import JSON

/// The stage after the model: adds the special tokens a model expects around one sequence
/// (LLaMA's BOS, RoBERTa's `<s> … </s>`). Only single sequences are encoded here.
protocol PostProcessor: Sendable {
    func process(_ ids: [Int]) -> [Int]
}

/// `TemplateProcessing`: the `single` template, e.g. `<s> $A`.
struct TemplateProcessor: PostProcessor {
    enum Item: Sendable { case special([Int]), sequence }
    let single: [Item]

    func process(_ ids: [Int]) -> [Int] {
        var out: [Int] = []
        for item in single {
            switch item {
            case .special(let s): out += s
            case .sequence: out += ids
            }
        }
        return out
    }
}

/// `RobertaProcessing` / `BertProcessing`: `cls $A sep`.
struct WrapProcessor: PostProcessor {
    let cls: Int, sep: Int
    func process(_ ids: [Int]) -> [Int] { [cls] + ids + [sep] }
}

/// `ByteLevel` only trims offsets, which this tokenizer does not report.
struct IdentityProcessor: PostProcessor {
    func process(_ ids: [Int]) -> [Int] { ids }
}

struct SequenceProcessor: PostProcessor {
    let stages: [PostProcessor]
    func process(_ ids: [Int]) -> [Int] { stages.reduce(ids) { $1.process($0) } }
}

/// Builds the post-processor described by a `"post_processor"` JSON value (nil for `null`).
func makePostProcessor(_ json: JSONValue, file: String) throws -> PostProcessor? {
    if json.isNull { return nil }
    guard let type = json["type"]?.stringValue else {
        throw TokenizerError.malformed(file: file, reason: "post_processor has no 'type'")
    }
    switch type {
    case "TemplateProcessing":
        guard let single = json["single"]?.arrayValue else {
            throw TokenizerError.malformed(file: file, reason: "TemplateProcessing has no 'single' template")
        }
        var items: [TemplateProcessor.Item] = []
        for piece in single {
            if let special = piece["SpecialToken"] {
                guard let name = special["id"]?.stringValue else {
                    throw TokenizerError.malformed(file: file, reason: "TemplateProcessing SpecialToken has no 'id'")
                }
                guard let entry = json["special_tokens"]?[name], let idList = entry["ids"]?.arrayValue else {
                    throw TokenizerError.malformed(file: file, reason: "TemplateProcessing uses '\(name)' but special_tokens does not define it")
                }
                let ids = try idList.map { v -> Int in
                    guard let i = v.intValue else { throw TokenizerError.malformed(file: file, reason: "special token '\(name)' has a non-integer id") }
                    return i
                }
                items.append(.special(ids))
            } else if piece["Sequence"] != nil {
                items.append(.sequence)
            } else {
                throw TokenizerError.malformed(file: file, reason: "TemplateProcessing piece is neither SpecialToken nor Sequence")
            }
        }
        return TemplateProcessor(single: items)
    case "RobertaProcessing", "BertProcessing":
        guard let cls = json["cls"]?.arrayValue, cls.count == 2, let clsId = cls[1].intValue,
              let sep = json["sep"]?.arrayValue, sep.count == 2, let sepId = sep[1].intValue else {
            throw TokenizerError.malformed(file: file, reason: "\(type) needs 'cls' and 'sep' as [token, id]")
        }
        return WrapProcessor(cls: clsId, sep: sepId)
    case "ByteLevel":
        return IdentityProcessor()
    case "Sequence":
        guard let list = json["processors"]?.arrayValue else {
            throw TokenizerError.malformed(file: file, reason: "Sequence post-processor has no 'processors' array")
        }
        return SequenceProcessor(stages: try list.compactMap { try makePostProcessor($0, file: file) })
    default:
        throw TokenizerError.unsupported(file: file, stage: "post-processor", type: type)
    }
}
