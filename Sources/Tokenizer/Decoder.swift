import JSON

/// The way back: turns token strings into text (undoing `▁`, byte fallback and byte-level
/// mapping). Each stage maps a list of token byte strings to another, as `tokenizers`' decoders do.
protocol Decoder: Sendable {
    func decode(_ tokens: [Bytes]) -> [Bytes]
}

struct SequenceDecoder: Decoder {
    let stages: [Decoder]
    func decode(_ tokens: [Bytes]) -> [Bytes] { stages.reduce(tokens) { $1.decode($0) } }
}

struct ReplaceDecoder: Decoder {
    let pattern: TextPattern
    let content: Bytes
    func decode(_ tokens: [Bytes]) -> [Bytes] { tokens.map { pattern.replacingAll(in: $0, with: content) } }
}

/// `<0xNN>` tokens become their bytes; a run that is not valid UTF-8 becomes one U+FFFD per byte.
struct ByteFallbackDecoder: Decoder {
    static func byteValue(_ t: Bytes) -> UInt8? {
        guard t.count == 6, t[0] == 0x3C, t[1] == 0x30, t[2] == 0x78, t[5] == 0x3E else { return nil }
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        guard let h = hex(t[3]), let l = hex(t[4]) else { return nil }
        return h << 4 | l
    }

    func decode(_ tokens: [Bytes]) -> [Bytes] {
        var out: [Bytes] = []
        var pending: Bytes = []
        func flush() {
            guard !pending.isEmpty else { return }
            if String(validating: pending, as: UTF8.self) != nil {
                out.append(pending)
            } else {
                for _ in pending { out.append([0xEF, 0xBF, 0xBD]) }
            }
            pending.removeAll()
        }
        for t in tokens {
            if let b = ByteFallbackDecoder.byteValue(t) {
                pending.append(b)
            } else {
                flush()
                out.append(t)
            }
        }
        flush()
        return out
    }
}

struct FuseDecoder: Decoder {
    func decode(_ tokens: [Bytes]) -> [Bytes] { [tokens.flatMap { $0 }] }
}

/// Removes up to `start` leading and `stop` trailing copies of one character from every token.
struct StripDecoder: Decoder {
    let content: Unicode.Scalar
    let start: Int, stop: Int
    func decode(_ tokens: [Bytes]) -> [Bytes] {
        tokens.map { t in
            let chars = Text.scalars(t)
            var lo = 0
            while lo < min(start, chars.count), chars[lo] == content { lo += 1 }
            var hi = chars.count
            var k = 0
            while k < stop, hi > lo, chars[hi - 1] == content { hi -= 1; k += 1 }
            return lo == 0 && hi == chars.count ? t : Text.bytes(chars[lo..<hi])
        }
    }
}

/// `▁` back to spaces; in the first token the marker is dropped (unless prepend_scheme is never).
struct MetaspaceDecoder: Decoder {
    let replacement: Bytes
    let dropInFirst: Bool
    func decode(_ tokens: [Bytes]) -> [Bytes] {
        tokens.enumerated().map { i, t in
            Text.replacing(replacement, with: i == 0 && dropInFirst ? [] : [0x20], in: t)
        }
    }
}

/// Byte-level characters back to bytes, all tokens joined, invalid UTF-8 replaced (`from_utf8_lossy`).
struct ByteLevelDecoder: Decoder {
    func decode(_ tokens: [Bytes]) -> [Bytes] {
        var bytes: Bytes = []
        for t in tokens { bytes += ByteLevel.decode(t) ?? t }
        return [Array(String(decoding: bytes, as: UTF8.self).utf8)]
    }
}

/// Builds the decoder described by a `"decoder"` JSON value (nil for `null`).
func makeDecoder(_ json: JSONValue, file: String) throws -> Decoder? {
    if json.isNull { return nil }
    guard let type = json["type"]?.stringValue else {
        throw TokenizerError.malformed(file: file, reason: "decoder has no 'type'")
    }
    switch type {
    case "Sequence":
        guard let list = json["decoders"]?.arrayValue else {
            throw TokenizerError.malformed(file: file, reason: "Sequence decoder has no 'decoders' array")
        }
        return SequenceDecoder(stages: try list.compactMap { try makeDecoder($0, file: file) })
    case "Replace":
        return ReplaceDecoder(pattern: try TextPattern(json: json["pattern"], file: file, stage: "Replace decoder"),
                              content: Array((json["content"]?.stringValue ?? "").utf8))
    case "ByteFallback": return ByteFallbackDecoder()
    case "Fuse": return FuseDecoder()
    case "Strip":
        guard let c = json["content"]?.stringValue, let scalar = c.unicodeScalars.first, c.unicodeScalars.count == 1 else {
            throw TokenizerError.malformed(file: file, reason: "Strip decoder needs a one-character 'content'")
        }
        return StripDecoder(content: scalar, start: json["start"]?.intValue ?? 0, stop: json["stop"]?.intValue ?? 0)
    case "Metaspace":
        let rep = json["replacement"]?.stringValue ?? "\u{2581}"
        let drop: Bool
        if let scheme = json["prepend_scheme"]?.stringValue { drop = scheme != "never" } else { drop = json["add_prefix_space"]?.boolValue ?? true }
        return MetaspaceDecoder(replacement: Array(rep.utf8), dropInFirst: drop)
    case "ByteLevel": return ByteLevelDecoder()
    default:
        throw TokenizerError.unsupported(file: file, stage: "decoder", type: type)
    }
}
