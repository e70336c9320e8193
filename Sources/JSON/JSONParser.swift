/// How strict `JSONValue.parse` is beyond RFC 8259 (which it always enforces).
public struct JSONParseOptions: Sendable {
    /// Deepest nesting of arrays and objects accepted, so a hostile file cannot exhaust the stack.
    public var maxDepth: Int
    /// Reject an object naming one key twice (keys compared byte for byte). Foundation and Python
    /// silently keep one of the two; a safetensors header could then name a tensor twice and we
    /// would read the wrong bytes. Off where the reference readers accept duplicates (tokenizer.json).
    public var rejectDuplicateKeys: Bool

    public init(maxDepth: Int = 64, rejectDuplicateKeys: Bool = true) {
        self.maxDepth = maxDepth
        self.rejectDuplicateKeys = rejectDuplicateKeys
    }
}

extension JSONValue {
    /// Parses exactly one JSON value followed only by whitespace. Strict: RFC 8259 grammar (no
    /// leading zeros, no `NaN`, `true` is not a number), UTF-8 checked in every string, unpaired
    /// surrogate escapes rejected, nesting bounded; see `JSONParseOptions` for duplicate keys.
    public static func parse(_ bytes: UnsafeRawBufferPointer, options: JSONParseOptions = .init()) throws(JSONError) -> JSONValue {
        var p = JSONParser(bytes: bytes, options: options)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.pos == bytes.count else { throw p.fail("unexpected text after the JSON value") }
        return v
    }

    /// The same over any byte collection (`[UInt8]`, `Data`, …); contiguous ones are not copied.
    public static func parse(_ bytes: some Collection<UInt8>, options: JSONParseOptions = .init()) throws(JSONError) -> JSONValue {
        // The closure-taking accessors only rethrow `any Error`; carry the typed error out in a Result.
        let result = bytes.withContiguousStorageIfAvailable { b in
            Result { () throws(JSONError) in try parse(UnsafeRawBufferPointer(b), options: options) }
        }
        if let result { return try result.get() }
        return try parse(Array(bytes), options: options)
    }
}

/// A recursive-descent parser over UTF-8 bytes; `JSONValue.parse` is its interface.
struct JSONParser {
    let bytes: UnsafeRawBufferPointer
    let options: JSONParseOptions
    var pos = 0

    init(bytes: UnsafeRawBufferPointer, options: JSONParseOptions) {
        self.bytes = bytes
        self.options = options
    }

    func fail(_ reason: String, at offset: Int? = nil) -> JSONError { .syntax(offset: offset ?? pos, reason: reason) }

    @inline(__always) var peek: UInt8? { pos < bytes.count ? bytes[pos] : nil }

    @inline(__always) mutating func skipSpace() {
        while pos < bytes.count {
            let c = bytes[pos]
            guard c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 else { return }
            pos += 1
        }
    }

    mutating func value(depth: Int) throws(JSONError) -> JSONValue {
        guard depth < options.maxDepth else { throw fail("nesting deeper than \(options.maxDepth) levels") }
        guard let c = peek else { throw fail("unexpected end of text") }
        switch c {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default:
            let shown = c < 0x80 ? "'\(Character(Unicode.Scalar(c)))'" : "byte 0x\(String(c, radix: 16))"
            throw fail("unexpected character \(shown)")
        }
    }

    mutating func literal(_ word: StaticString) throws(JSONError) {
        let n = word.utf8CodeUnitCount
        guard pos + n <= bytes.count else { throw fail("unexpected end of text") }
        for i in 0..<n where bytes[pos + i] != word.utf8Start[i] { throw fail("invalid literal") }
        pos += n
    }

    mutating func expect(_ c: UInt8, _ what: String) throws(JSONError) {
        guard peek == c else { throw fail(peek == nil ? "unexpected end of text, expected \(what)" : "expected \(what)") }
        pos += 1
    }

    mutating func object(depth: Int) throws(JSONError) -> JSONValue {
        pos += 1
        var out = JSONObject()
        var seen = DuplicateCheck()
        skipSpace()
        if peek == UInt8(ascii: "}") { pos += 1; return .object(out) }
        while true {
            skipSpace()
            guard peek == UInt8(ascii: "\"") else { throw fail(peek == nil ? "unexpected end of text, expected a string key" : "expected a string key") }
            let keyStart = pos
            let key = try string()
            skipSpace()
            try expect(UInt8(ascii: ":"), "':' after a key")
            skipSpace()
            let v: JSONValue
            do { v = try value(depth: depth + 1) } catch { throw error.inside(key) }
            if options.rejectDuplicateKeys && !seen.insert(key, into: out) {
                throw .duplicateKey(key: key, path: [], offset: keyStart)
            }
            out.append(key: key, value: v)
            skipSpace()
            if peek == UInt8(ascii: ",") { pos += 1; continue }
            try expect(UInt8(ascii: "}"), "',' or '}' in an object")
            return .object(out)
        }
    }

    mutating func array(depth: Int) throws(JSONError) -> JSONValue {
        pos += 1
        var out: [JSONValue] = []
        skipSpace()
        if peek == UInt8(ascii: "]") { pos += 1; return .array(out) }
        while true {
            skipSpace()
            do { out.append(try value(depth: depth + 1)) } catch { throw error.inside("[\(out.count)]") }
            skipSpace()
            if peek == UInt8(ascii: ",") { pos += 1; continue }
            try expect(UInt8(ascii: "]"), "',' or ']' in an array")
            return .array(out)
        }
    }

    mutating func hex4() throws(JSONError) -> UInt32 {
        guard pos + 4 <= bytes.count else { throw fail("unexpected end of text in a \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | d
            pos += 1
        }
        return v
    }

    /// A string starting at the opening quote. Strings without escapes (nearly all: vocabulary
    /// tokens, tensor names) become a `String` straight from the input bytes.
    mutating func string() throws(JSONError) -> String {
        pos += 1
        let start = pos
        var high: UInt8 = 0
        while pos < bytes.count {
            let c = bytes[pos]
            if c == UInt8(ascii: "\"") {
                let raw = UnsafeRawBufferPointer(rebasing: bytes[start..<pos])
                pos += 1
                if high < 0x80 { return String(decoding: raw, as: UTF8.self) }  // ASCII: nothing to check
                guard let s = String(validating: raw, as: UTF8.self) else {
                    throw fail("string is not valid UTF-8", at: start + firstInvalidUTF8(raw))
                }
                return s
            }
            if c == UInt8(ascii: "\\") || c < 0x20 { break }
            high |= c
            pos += 1
        }
        var out = Array(UnsafeRawBufferPointer(rebasing: bytes[start..<pos]))
        return try escapedString(&out, start: start)
    }

    /// The rest of a string with escapes, appended to `out` (the bytes before the first escape).
    mutating func escapedString(_ out: inout [UInt8], start: Int) throws(JSONError) -> String {
        while true {
            guard let c = peek else { throw fail("unterminated string") }
            pos += 1
            if c == UInt8(ascii: "\"") { break }
            if c < 0x20 { pos -= 1; throw fail("control character in a string") }
            if c != UInt8(ascii: "\\") { out.append(c); continue }
            guard let e = peek else { throw fail("unterminated string") }
            pos += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                let escapeStart = pos - 2
                var scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    guard pos + 2 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                        throw fail("unpaired surrogate in a \\u escape", at: escapeStart)
                    }
                    pos += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate in a \\u escape", at: escapeStart) }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let u = Unicode.Scalar(scalar) else { throw fail("unpaired surrogate in a \\u escape", at: escapeStart) }
                UTF8.encode(u) { out.append($0) }
            default:
                throw fail("invalid escape '\\\(e < 0x80 ? String(Character(Unicode.Scalar(e))) : "…")'", at: pos - 2)
            }
        }
        guard let s = String(validating: out, as: UTF8.self) else { throw fail("string is not valid UTF-8", at: start) }
        return s
    }

    /// Integers without fraction or exponent are read digit by digit into an exact `Int`; others
    /// (and integers beyond `Int`) go through `Double`'s correctly rounded conversion.
    mutating func number() throws(JSONError) -> JSONValue {
        let start = pos
        let negative = bytes[pos] == UInt8(ascii: "-")
        if negative { pos += 1 }
        let intStart = pos
        var magnitude: UInt64 = 0
        var overflow = false
        while pos < bytes.count, case let d = bytes[pos] &- UInt8(ascii: "0"), d < 10 {
            let (m, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(d))
            overflow = overflow || o1 || o2
            magnitude = a
            pos += 1
        }
        guard pos > intStart else { throw fail("invalid number", at: start) }
        if bytes[intStart] == UInt8(ascii: "0") && pos - intStart > 1 { throw fail("number with a leading zero", at: start) }
        var isInteger = true
        if peek == UInt8(ascii: ".") {
            pos += 1; isInteger = false
            guard skipDigits() > 0 else { throw fail("invalid number", at: start) }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            pos += 1; isInteger = false
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { pos += 1 }
            guard skipDigits() > 0 else { throw fail("invalid number", at: start) }
        }
        if isInteger && !overflow {
            if negative, magnitude <= UInt64(Int.max) + 1 { return .int(magnitude == UInt64(Int.max) + 1 ? Int.min : -Int(magnitude)) }
            if !negative, magnitude <= UInt64(Int.max) { return .int(Int(magnitude)) }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
        guard let d = Double(text), d.isFinite else { throw fail("number out of range", at: start) }
        return .double(d)
    }

    mutating func skipDigits() -> Int {
        let s = pos
        while pos < bytes.count, bytes[pos] &- UInt8(ascii: "0") < 10 { pos += 1 }
        return pos - s
    }
}

/// Offset of the first byte that is not part of valid UTF-8 (for the error message only).
private func firstInvalidUTF8(_ raw: UnsafeRawBufferPointer) -> Int {
    var parser = Unicode.UTF8.ForwardParser()
    var it = raw.makeIterator()
    var offset = 0
    while true {
        switch parser.parseScalar(from: &it) {
        case .valid(let s): offset += s.count
        case .emptyInput, .error: return offset
        }
    }
}

/// Keys seen so far in one object, compared byte for byte: a scan while the object is small, a
/// hash set (built on first need) for large ones.
private struct DuplicateCheck {
    private var set: Set<ByteString>?

    /// False if `key` is already among `members`' keys.
    mutating func insert(_ key: String, into members: JSONObject) -> Bool {
        if set == nil {
            if members.count < 16 { return !members.contains { sameBytes($0.key, key) } }
            set = Set(members.map { ByteString($0.key) })
        }
        return set?.insert(ByteString(key)).inserted ?? true
    }
}

/// A string hashed and compared by its UTF-8 bytes.
private struct ByteString: Hashable {
    let s: String
    init(_ s: String) { self.s = s }
    static func == (a: ByteString, b: ByteString) -> Bool { sameBytes(a.s, b.s) }
    func hash(into h: inout Hasher) {
        if s.utf8.withContiguousStorageIfAvailable({ h.combine(bytes: UnsafeRawBufferPointer($0)) }) == nil {
            for b in s.utf8 { h.combine(b) }
        }
        h.combine(s.utf8.count)
    }
}

extension JSONError {
    /// The same error seen from the enclosing member `name` (prefixes a duplicate key's path).
    func inside(_ name: String) -> JSONError {
        if case .duplicateKey(let key, let path, let offset) = self { return .duplicateKey(key: key, path: [name] + path, offset: offset) }
        return self
    }
}
