import Foundation

/// UTF-8 text as the pipeline carries it. Stages work on bytes and Unicode scalars, never on Swift
/// `String` comparison, which would treat canonically equivalent spellings as equal.
typealias Bytes = [UInt8]

/// Dictionary key for token bytes: hashes the whole buffer at once (`[UInt8]`'s own `Hashable`
/// feeds the hasher byte by byte, which dominated loading a 150k-token vocabulary).
struct ByteKey: Hashable, Sendable {
    let bytes: Bytes
    init(_ bytes: Bytes) { self.bytes = bytes }
    func hash(into hasher: inout Hasher) { bytes.withUnsafeBytes { hasher.combine(bytes: $0) } }
    static func == (a: ByteKey, b: ByteKey) -> Bool { a.bytes == b.bytes }
}

enum Text {
    /// Length in bytes of the UTF-8 sequence that starts with `lead` (1 for stray continuation bytes).
    @inline(__always)
    static func sequenceLength(_ lead: UInt8) -> Int {
        if lead < 0x80 { return 1 }
        if lead >= 0xF0 { return 4 }
        if lead >= 0xE0 { return 3 }
        if lead >= 0xC0 { return 2 }
        return 1
    }

    static func scalars(_ bytes: Bytes) -> [Unicode.Scalar] {
        Array(String(decoding: bytes, as: UTF8.self).unicodeScalars)
    }

    static func bytes(_ scalars: some Sequence<Unicode.Scalar>) -> Bytes {
        var out: Bytes = []
        for s in scalars { append(s, to: &out) }
        return out
    }

    @inline(__always)
    static func append(_ s: Unicode.Scalar, to out: inout Bytes) {
        let v = s.value
        if v < 0x80 {
            out.append(UInt8(v))
        } else if v < 0x800 {
            out.append(UInt8(0xC0 | (v >> 6))); out.append(UInt8(0x80 | (v & 0x3F)))
        } else if v < 0x10000 {
            out.append(UInt8(0xE0 | (v >> 12))); out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        } else {
            out.append(UInt8(0xF0 | (v >> 18))); out.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((v >> 6) & 0x3F))); out.append(UInt8(0x80 | (v & 0x3F)))
        }
    }

    /// Scalars with their starting byte offsets (and the total length as a final offset).
    static func scalarOffsets(_ bytes: Bytes) -> (scalars: [Unicode.Scalar], offsets: [Int]) {
        var scalars: [Unicode.Scalar] = []
        var offsets: [Int] = []
        var i = 0
        for s in String(decoding: bytes, as: UTF8.self).unicodeScalars {
            scalars.append(s)
            offsets.append(i)
            i += s.utf8.count
        }
        offsets.append(i)
        return (scalars, offsets)
    }

    /// Rust's `char::is_whitespace` (the Unicode White_Space property).
    @inline(__always)
    static func isWhitespace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace }

    /// `regex_syntax::is_word_character`: Unicode `\w`.
    static func isWordCharacter(_ s: Unicode.Scalar) -> Bool {
        let p = s.properties
        if p.isAlphabetic || p.isJoinControl { return true }
        switch p.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }

    /// Rust's `char::is_numeric` (general categories Nd, Nl, No).
    static func isNumeric(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// `tokenizers`' punctuation test: ASCII punctuation or a Unicode P* category.
    static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        if s.isASCII {
            let v = s.value
            return (0x21...0x2F).contains(v) || (0x3A...0x40).contains(v) || (0x5B...0x60).contains(v) || (0x7B...0x7E).contains(v)
        }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation: return true
        default: return false
        }
    }

    /// All non-overlapping occurrences of `needle` in `hay`, left to right.
    static func occurrences(of needle: Bytes, in hay: Bytes) -> [Range<Int>] {
        guard !needle.isEmpty, needle.count <= hay.count else { return [] }
        var out: [Range<Int>] = []
        let first = needle[0]
        var i = 0
        let last = hay.count - needle.count
        outer: while i <= last {
            if hay[i] != first { i += 1; continue }
            for k in 1..<needle.count where hay[i + k] != needle[k] { i += 1; continue outer }
            out.append(i..<i + needle.count)
            i += needle.count
        }
        return out
    }

    static func replacing(_ needle: Bytes, with replacement: Bytes, in hay: Bytes) -> Bytes {
        let hits = occurrences(of: needle, in: hay)
        if hits.isEmpty { return hay }
        var out: Bytes = []
        out.reserveCapacity(hay.count + hits.count * max(0, replacement.count - needle.count))
        var prev = 0
        for r in hits {
            out.append(contentsOf: hay[prev..<r.lowerBound])
            out.append(contentsOf: replacement)
            prev = r.upperBound
        }
        out.append(contentsOf: hay[prev...])
        return out
    }
}

/// A compiled regular expression from tokenizer.json. `tokenizers` uses Oniguruma, whose `\s` is the
/// Unicode White_Space property; ICU's `\s` omits U+000B and U+0085, so `\s`/`\S` are rewritten to
/// `\p{White_Space}`/`\P{White_Space}` before compiling with `NSRegularExpression` (ICU).
struct TokenRegex: Sendable {
    let pattern: String
    private let regex: NSRegularExpression

    init(_ pattern: String, file: String) throws {
        self.pattern = pattern
        do {
            regex = try NSRegularExpression(pattern: TokenRegex.translate(pattern))
        } catch {
            throw TokenizerError.badRegex(file: file, pattern: pattern, reason: "\(error)")
        }
    }

    static func translate(_ p: String) -> String {
        var out = ""
        var it = p.unicodeScalars.makeIterator()
        while let c = it.next() {
            guard c == "\\" else { out.unicodeScalars.append(c); continue }
            guard let e = it.next() else { out += "\\"; break }
            switch e {
            case "s": out += "\\p{White_Space}"
            case "S": out += "\\P{White_Space}"
            default: out.unicodeScalars.append(c); out.unicodeScalars.append(e)
            }
        }
        return out
    }

    /// Byte ranges of every match, left to right (empty matches included, as Oniguruma reports them).
    func matches(in bytes: Bytes) -> [Range<Int>] {
        if bytes.isEmpty { return [] }
        let s = String(decoding: bytes, as: UTF8.self)
        let ns = s as NSString
        let found = regex.matches(in: s, range: NSRange(location: 0, length: ns.length))
        if found.isEmpty { return [] }
        // Map UTF-16 offsets back to byte offsets.
        var u16ToByte = [Int](repeating: 0, count: ns.length + 1)
        var u = 0, b = 0
        for scalar in s.unicodeScalars {
            let n16 = scalar.utf16.count, n8 = scalar.utf8.count
            u16ToByte[u] = b
            if n16 == 2 { u16ToByte[u + 1] = b }
            u += n16; b += n8
        }
        u16ToByte[u] = b
        return found.map { m in u16ToByte[m.range.location]..<u16ToByte[m.range.location + m.range.length] }
    }
}
