import Foundation
import JSON

/// The first stage of `tokenizer.json`: rewrites text before it is split (Unicode forms, the
/// SentencePiece space marker, case). Built from the JSON `"normalizer"` by `makeNormalizer`.
protocol Normalizer: Sendable {
    func normalize(_ text: Bytes) -> Bytes
}

/// A string or regex `"pattern"` as `Replace` and `Split` stages store it.
enum TextPattern: Sendable {
    case literal(Bytes)
    case regex(TokenRegex)

    init(json: JSONValue?, file: String, stage: String) throws {
        guard let json else { throw TokenizerError.malformed(file: file, reason: "\(stage) has no 'pattern'") }
        if let s = json["String"]?.stringValue {
            self = .literal(Array(s.utf8))
        } else if let r = json["Regex"]?.stringValue {
            self = .regex(try TokenRegex(r, file: file))
        } else if let s = json.stringValue {
            self = .literal(Array(s.utf8))
        } else {
            throw TokenizerError.malformed(file: file, reason: "\(stage) 'pattern' must be {\"String\": …} or {\"Regex\": …}")
        }
    }

    func matches(in text: Bytes) -> [Range<Int>] {
        switch self {
        case .literal(let b): return Text.occurrences(of: b, in: text)
        case .regex(let r): return r.matches(in: text)
        }
    }

    func replacingAll(in text: Bytes, with content: Bytes) -> Bytes {
        if case .literal(let b) = self { return Text.replacing(b, with: content, in: text) }
        let hits = matches(in: text)
        if hits.isEmpty { return text }
        var out: Bytes = []
        var prev = 0
        for r in hits where r.lowerBound >= prev {
            out.append(contentsOf: text[prev..<r.lowerBound])
            out.append(contentsOf: content)
            prev = r.upperBound
        }
        out.append(contentsOf: text[prev...])
        return out
    }
}

struct SequenceNormalizer: Normalizer {
    let stages: [Normalizer]
    func normalize(_ text: Bytes) -> Bytes { stages.reduce(text) { $1.normalize($0) } }
}

struct PrependNormalizer: Normalizer {
    let prefix: Bytes
    func normalize(_ text: Bytes) -> Bytes { text.isEmpty ? text : prefix + text }
}

struct ReplaceNormalizer: Normalizer {
    let pattern: TextPattern
    let content: Bytes
    func normalize(_ text: Bytes) -> Bytes { pattern.replacingAll(in: text, with: content) }
}

enum UnicodeForm: Sendable { case nfc, nfd, nfkc, nfkd }

struct UnicodeNormalizer: Normalizer {
    let form: UnicodeForm
    func normalize(_ text: Bytes) -> Bytes {
        // Pure ASCII is the same in every form.
        if !text.contains(where: { $0 >= 0x80 }) { return text }
        let s = String(decoding: text, as: UTF8.self)
        let out: String
        switch form {
        case .nfc: out = s.precomposedStringWithCanonicalMapping
        case .nfd: out = s.decomposedStringWithCanonicalMapping
        case .nfkc: out = s.precomposedStringWithCompatibilityMapping
        case .nfkd: out = s.decomposedStringWithCompatibilityMapping
        }
        return Array(out.utf8)
    }
}

/// Per-character full lowercase mapping, as Rust's `char::to_lowercase` (no final-sigma context).
struct LowercaseNormalizer: Normalizer {
    func normalize(_ text: Bytes) -> Bytes {
        var out: Bytes = []
        out.reserveCapacity(text.count)
        for s in String(decoding: text, as: UTF8.self).unicodeScalars {
            if s.isASCII {
                let v = UInt8(s.value)
                out.append(v >= 0x41 && v <= 0x5A ? v + 32 : v)
            } else {
                out.append(contentsOf: Array(s.properties.lowercaseMapping.utf8))
            }
        }
        return out
    }
}

struct StripNormalizer: Normalizer {
    let left: Bool, right: Bool
    func normalize(_ text: Bytes) -> Bytes {
        var scalars = Text.scalars(text)[...]
        if left { while let f = scalars.first, Text.isWhitespace(f) { scalars.removeFirst() } }
        if right { while let l = scalars.last, Text.isWhitespace(l) { scalars.removeLast() } }
        return Text.bytes(scalars)
    }
}

/// Removes combining marks (general category Mn), as `tokenizers`' StripAccents (use after NFD).
struct StripAccentsNormalizer: Normalizer {
    func normalize(_ text: Bytes) -> Bytes {
        Text.bytes(Text.scalars(text).filter { $0.properties.generalCategory != .nonspacingMark })
    }
}

/// BERT's cleaning: drop control characters, map whitespace to a space, pad CJK ideographs with
/// spaces, optionally strip accents and lowercase.
struct BertNormalizer: Normalizer {
    let cleanText: Bool, handleChineseChars: Bool, stripAccents: Bool, lowercase: Bool

    static func isChinese(_ v: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v)
            || (0x2A700...0x2B73F).contains(v) || (0x2B740...0x2B81F).contains(v) || (0x2B920...0x2CEAF).contains(v)
            || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
    }

    func normalize(_ text: Bytes) -> Bytes {
        var scalars: [Unicode.Scalar] = []
        for s in Text.scalars(text) {
            if cleanText {
                if s.value == 0 || s.value == 0xFFFD { continue }
                if s == "\t" || s == "\n" || s == "\r" { scalars.append(" "); continue }
                switch s.properties.generalCategory {
                case .control, .format, .surrogate, .privateUse, .unassigned: continue
                default: break
                }
                if Text.isWhitespace(s) { scalars.append(" "); continue }
            }
            if handleChineseChars && BertNormalizer.isChinese(s.value) {
                scalars.append(" "); scalars.append(s); scalars.append(" ")
            } else {
                scalars.append(s)
            }
        }
        var out = Text.bytes(scalars)
        if stripAccents {
            out = StripAccentsNormalizer().normalize(UnicodeNormalizer(form: .nfd).normalize(out))
        }
        if lowercase { out = LowercaseNormalizer().normalize(out) }
        return out
    }
}

/// Maps every byte to its printable stand-in, as the ByteLevel pre-tokenizer does.
struct ByteLevelNormalizer: Normalizer {
    func normalize(_ text: Bytes) -> Bytes { ByteLevel.encode(text) }
}

/// Builds the normalizer described by a `"normalizer"` JSON value (nil for `null`).
func makeNormalizer(_ json: JSONValue, file: String) throws -> Normalizer? {
    if json.isNull { return nil }
    guard let type = json["type"]?.stringValue else {
        throw TokenizerError.malformed(file: file, reason: "normalizer has no 'type'")
    }
    switch type {
    case "Sequence":
        guard let list = json["normalizers"]?.arrayValue else {
            throw TokenizerError.malformed(file: file, reason: "Sequence normalizer has no 'normalizers' array")
        }
        return SequenceNormalizer(stages: try list.compactMap { try makeNormalizer($0, file: file) })
    case "Prepend":
        guard let p = json["prepend"]?.stringValue else {
            throw TokenizerError.malformed(file: file, reason: "Prepend normalizer has no 'prepend' string")
        }
        return PrependNormalizer(prefix: Array(p.utf8))
    case "Replace":
        return ReplaceNormalizer(pattern: try TextPattern(json: json["pattern"], file: file, stage: "Replace normalizer"),
                                 content: Array((json["content"]?.stringValue ?? "").utf8))
    case "NFC": return UnicodeNormalizer(form: .nfc)
    case "NFD": return UnicodeNormalizer(form: .nfd)
    case "NFKC": return UnicodeNormalizer(form: .nfkc)
    case "NFKD": return UnicodeNormalizer(form: .nfkd)
    case "Lowercase": return LowercaseNormalizer()
    case "Strip":
        return StripNormalizer(left: json["strip_left"]?.boolValue ?? true, right: json["strip_right"]?.boolValue ?? true)
    case "StripAccents": return StripAccentsNormalizer()
    case "BertNormalizer":
        let lower = json["lowercase"]?.boolValue ?? true
        let strip = json["strip_accents"]?.boolValue ?? lower
        return BertNormalizer(cleanText: json["clean_text"]?.boolValue ?? true,
                              handleChineseChars: json["handle_chinese_chars"]?.boolValue ?? true,
                              stripAccents: strip, lowercase: lower)
    case "ByteLevel": return ByteLevelNormalizer()
    default:
        throw TokenizerError.unsupported(file: file, stage: "normalizer", type: type)
    }
}
