import JSON

/// A run of normalized text on its way to the model, with the byte offset in the original input
/// where it starts (Metaspace's `prepend_scheme: first` needs to know whether that is 0).
struct Piece: Sendable {
    var bytes: Bytes
    var offset: Int
}

/// The second stage of `tokenizer.json`: splits normalized text into words the model encodes one
/// by one. Built from the JSON `"pre_tokenizer"` by `makePreTokenizer`.
protocol PreTokenizer: Sendable {
    func split(_ piece: Piece) -> [Piece]
}

extension PreTokenizer {
    func split(_ pieces: [Piece]) -> [Piece] { pieces.flatMap { split($0) }.filter { !$0.bytes.isEmpty } }
}

/// `SplitDelimiterBehavior` of `tokenizers`: what happens to the matched delimiters.
enum SplitBehavior: String, Sendable {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"

    /// Cuts `piece` given the matches of a pattern (byte ranges, left to right, non-overlapping).
    func apply(_ piece: Piece, matches: [Range<Int>], invert: Bool = false) -> [Piece] {
        let text = piece.bytes
        if text.isEmpty { return [] }
        // Cover the whole text with (range, isMatch) as `Pattern::find_matches` does.
        var parts: [(Range<Int>, Bool)] = []
        var prev = 0
        for m in matches where m.lowerBound >= prev {
            if prev != m.lowerBound { parts.append((prev..<m.lowerBound, false)) }
            parts.append((m, true))
            prev = m.upperBound
        }
        if prev != text.count { parts.append((prev..<text.count, false)) }
        if invert { parts = parts.map { ($0.0, !$0.1) } }

        var cuts: [(Range<Int>, Bool)] = []  // (range, remove)
        switch self {
        case .isolated:
            cuts = parts.map { ($0.0, false) }
        case .removed:
            cuts = parts
        case .contiguous:
            var previousMatch = false
            for (r, isMatch) in parts {
                if isMatch == previousMatch, let last = cuts.last {
                    cuts[cuts.count - 1] = (last.0.lowerBound..<r.upperBound, false)
                } else {
                    cuts.append((r, false))
                }
                previousMatch = isMatch
            }
        case .mergedWithPrevious:
            var previousMatch = false
            for (r, isMatch) in parts {
                if isMatch && !previousMatch, let last = cuts.last {
                    cuts[cuts.count - 1] = (last.0.lowerBound..<r.upperBound, false)
                } else {
                    cuts.append((r, false))
                }
                previousMatch = isMatch
            }
        case .mergedWithNext:
            var previousMatch = false
            for (r, isMatch) in parts.reversed() {
                if isMatch && !previousMatch, let last = cuts.last {
                    cuts[cuts.count - 1] = (r.lowerBound..<last.0.upperBound, false)
                } else {
                    cuts.append((r, false))
                }
                previousMatch = isMatch
            }
            cuts.reverse()
        }
        return cuts.compactMap { r, remove in
            remove || r.isEmpty ? nil : Piece(bytes: Array(text[r]), offset: piece.offset + r.lowerBound)
        }
    }
}

/// Byte ranges of single characters satisfying `test`, the `Fn(char) -> bool` pattern of `tokenizers`.
func characterMatches(_ text: Bytes, _ test: (Unicode.Scalar) -> Bool) -> [Range<Int>] {
    var out: [Range<Int>] = []
    var i = 0
    for s in String(decoding: text, as: UTF8.self).unicodeScalars {
        let n = s.utf8.count
        if test(s) { out.append(i..<i + n) }
        i += n
    }
    return out
}

struct SequencePreTokenizer: PreTokenizer {
    let stages: [PreTokenizer]
    func split(_ piece: Piece) -> [Piece] {
        stages.reduce([piece]) { pieces, stage in stage.split(pieces) }
    }
}

struct SplitPreTokenizer: PreTokenizer {
    let pattern: TextPattern
    let behavior: SplitBehavior
    let invert: Bool
    func split(_ piece: Piece) -> [Piece] {
        behavior.apply(piece, matches: pattern.matches(in: piece.bytes), invert: invert)
    }
}

/// SentencePiece's space handling: spaces become `▁`, a `▁` is prepended (always, or only at the
/// start of the input), and optionally the text is split before each `▁`.
struct MetaspacePreTokenizer: PreTokenizer {
    enum Prepend: Sendable { case always, first, never }
    let replacement: Bytes
    let prepend: Prepend
    let splitWords: Bool

    func split(_ piece: Piece) -> [Piece] {
        var text = Text.replacing([0x20], with: replacement, in: piece.bytes)
        let startsWithReplacement = text.starts(with: replacement)
        switch prepend {
        case .always where !startsWithReplacement: text = replacement + text
        case .first where !startsWithReplacement && piece.offset == 0: text = replacement + text
        default: break
        }
        let p = Piece(bytes: text, offset: piece.offset)
        guard splitWords else { return [p] }
        return SplitBehavior.mergedWithNext.apply(p, matches: Text.occurrences(of: replacement, in: text))
    }
}

/// GPT-2's pre-tokenizer: optional leading space, its word-splitting regex, then bytes mapped to
/// printable characters.
struct ByteLevelPreTokenizer: PreTokenizer {
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    let addPrefixSpace: Bool
    let regex: TokenRegex?

    func split(_ piece: Piece) -> [Piece] {
        var p = piece
        if addPrefixSpace && p.bytes.first != 0x20 { p.bytes.insert(0x20, at: 0) }
        let pieces = regex.map { SplitBehavior.isolated.apply(p, matches: $0.matches(in: p.bytes)) } ?? [p]
        return pieces.map { Piece(bytes: ByteLevel.encode($0.bytes), offset: $0.offset) }
    }
}

struct DigitsPreTokenizer: PreTokenizer {
    let individual: Bool
    func split(_ piece: Piece) -> [Piece] {
        (individual ? SplitBehavior.isolated : .contiguous).apply(piece, matches: characterMatches(piece.bytes, Text.isNumeric))
    }
}

/// `\w+|[^\w\s]+`: words and runs of symbols, whitespace dropped.
struct WhitespacePreTokenizer: PreTokenizer {
    let regex: TokenRegex
    func split(_ piece: Piece) -> [Piece] {
        SplitBehavior.removed.apply(piece, matches: regex.matches(in: piece.bytes), invert: true)
    }
}

struct WhitespaceSplitPreTokenizer: PreTokenizer {
    func split(_ piece: Piece) -> [Piece] {
        SplitBehavior.removed.apply(piece, matches: characterMatches(piece.bytes, Text.isWhitespace))
    }
}

struct PunctuationPreTokenizer: PreTokenizer {
    let behavior: SplitBehavior
    func split(_ piece: Piece) -> [Piece] {
        behavior.apply(piece, matches: characterMatches(piece.bytes, Text.isPunctuation))
    }
}

struct BertPreTokenizer: PreTokenizer {
    func split(_ piece: Piece) -> [Piece] {
        WhitespaceSplitPreTokenizer().split(piece).flatMap { PunctuationPreTokenizer(behavior: .isolated).split($0) }
    }
}

/// Builds the pre-tokenizer described by a `"pre_tokenizer"` JSON value (nil for `null`).
func makePreTokenizer(_ json: JSONValue, file: String) throws -> PreTokenizer? {
    if json.isNull { return nil }
    guard let type = json["type"]?.stringValue else {
        throw TokenizerError.malformed(file: file, reason: "pre_tokenizer has no 'type'")
    }
    func behavior(_ def: SplitBehavior) throws -> SplitBehavior {
        guard let s = json["behavior"]?.stringValue else { return def }
        guard let b = SplitBehavior(rawValue: s) else {
            throw TokenizerError.malformed(file: file, reason: "\(type) pre-tokenizer has unknown behavior '\(s)'")
        }
        return b
    }
    switch type {
    case "Sequence":
        guard let list = json["pretokenizers"]?.arrayValue else {
            throw TokenizerError.malformed(file: file, reason: "Sequence pre-tokenizer has no 'pretokenizers' array")
        }
        return SequencePreTokenizer(stages: try list.compactMap { try makePreTokenizer($0, file: file) })
    case "Split":
        return SplitPreTokenizer(pattern: try TextPattern(json: json["pattern"], file: file, stage: "Split pre-tokenizer"),
                                 behavior: try behavior(.isolated), invert: json["invert"]?.boolValue ?? false)
    case "Metaspace":
        let rep = json["replacement"]?.stringValue ?? "\u{2581}"
        let scheme: MetaspacePreTokenizer.Prepend
        switch json["prepend_scheme"]?.stringValue {
        case "always": scheme = .always
        case "first": scheme = .first
        case "never": scheme = .never
        case nil: scheme = (json["add_prefix_space"]?.boolValue ?? true) ? .always : .never
        case let other?:
            throw TokenizerError.malformed(file: file, reason: "Metaspace has unknown prepend_scheme '\(other)'")
        }
        return MetaspacePreTokenizer(replacement: Array(rep.utf8), prepend: scheme, splitWords: json["split"]?.boolValue ?? true)
    case "ByteLevel":
        let useRegex = json["use_regex"]?.boolValue ?? true
        return ByteLevelPreTokenizer(addPrefixSpace: json["add_prefix_space"]?.boolValue ?? true,
                                     regex: useRegex ? try TokenRegex(ByteLevelPreTokenizer.gpt2Pattern, file: file) : nil)
    case "Digits":
        return DigitsPreTokenizer(individual: json["individual_digits"]?.boolValue ?? false)
    case "Whitespace":
        return WhitespacePreTokenizer(regex: try TokenRegex(#"\w+|[^\w\s]+"#, file: file))
    case "WhitespaceSplit":
        return WhitespaceSplitPreTokenizer()
    case "Punctuation":
        return PunctuationPreTokenizer(behavior: try behavior(.isolated))
    case "BertPreTokenizer":
        return BertPreTokenizer()
    default:
        throw TokenizerError.unsupported(file: file, stage: "pre-tokenizer", type: type)
    }
}
