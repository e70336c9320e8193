/// Turns generated ids into text as they arrive. Each call returns only newly completed text and
/// never half a UTF-8 character: text ending in an incomplete sequence (decoded as U+FFFD) is held
/// back until the next token completes it or `finish()` flushes it. The concatenation of everything
/// returned equals `tokenizer.decode(allIds)`.
///
/// It decodes a window that starts one token before the unread ones and emits the bytes beyond the
/// window's already-emitted prefix, so decoder rules that look at the first token (LLaMA's leading
/// space strip) act the same as in a full decode.
public struct StreamingDetokenizer: Sendable {
    private let tokenizer: Tokenizer
    private var ids: [Int] = []
    /// Start of the decode window and the end of the part of it already emitted.
    private var prefixOffset = 0
    private var readOffset = 0

    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// Adds one generated id; returns the text it completes (possibly empty).
    public mutating func append(_ id: Int) -> String {
        ids.append(id)
        let prefix = tokenizer.decodeBytes(Array(ids[prefixOffset..<readOffset]))
        let full = tokenizer.decodeBytes(Array(ids[prefixOffset...]))
        guard full.count > prefix.count, full.starts(with: prefix), !StreamingDetokenizer.endsIncomplete(full) else {
            return ""
        }
        prefixOffset = readOffset
        readOffset = ids.count
        return String(decoding: full[prefix.count...], as: UTF8.self)
    }

    /// Flushes whatever is held back (an incomplete character comes out as U+FFFD, as in `decode`).
    public mutating func finish() -> String {
        let prefix = tokenizer.decodeBytes(Array(ids[prefixOffset..<readOffset]))
        let full = tokenizer.decodeBytes(Array(ids[prefixOffset...]))
        prefixOffset = ids.count
        readOffset = ids.count
        guard full.count > prefix.count, full.starts(with: prefix) else { return "" }
        return String(decoding: full[prefix.count...], as: UTF8.self)
    }

    /// True when the text ends in U+FFFD (how an unfinished byte sequence decodes) or in bytes
    /// that do not yet form a whole character.
    static func endsIncomplete(_ b: [UInt8]) -> Bool {
        if b.count >= 3 && b[b.count - 3] == 0xEF && b[b.count - 2] == 0xBF && b[b.count - 1] == 0xBD { return true }
        // A trailing lead byte without all its continuation bytes.
        var k = b.count - 1
        var continuation = 0
        while k >= 0 && b[k] & 0xC0 == 0x80 && continuation < 3 { k -= 1; continuation += 1 }
        guard k >= 0 else { return continuation > 0 }
        return Text.sequenceLength(b[k]) > continuation + 1
    }
}
