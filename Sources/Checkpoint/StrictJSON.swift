/// A small strict JSON parser for the headers this module reads from untrusted files.
/// Foundation's parsers silently keep one of two duplicate keys (a file could then name a tensor
/// twice and we would read the wrong bytes), turn integers into doubles (offsets above 2^53 lose
/// precision) and accept `true` as a number; this one rejects duplicates, keeps integers exact,
/// checks UTF-8 and bounds the nesting depth so a hostile header cannot exhaust the stack.
struct StrictJSON {
    /// What went wrong and where (byte offset into the parsed text).
    struct Failure: Error, CustomStringConvertible {
        let message: String
        let offset: Int
        var description: String { "\(message) at byte \(offset)" }
    }

    /// A key that appears twice in one object.
    struct DuplicateKey: Error {
        let key: String
        /// The keys of the enclosing objects, outermost first.
        let path: [String]
    }

    static let maxDepth = 64

    private let bytes: UnsafeRawBufferPointer
    private var pos = 0
    private var path: [String] = []

    private init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// Parses exactly one JSON value followed only by whitespace.
    static func parse(_ bytes: UnsafeRawBufferPointer) throws -> JSONValue {
        var p = StrictJSON(bytes)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.pos == bytes.count else { throw p.fail("unexpected text after the JSON value") }
        return v
    }

    static func parse(_ array: [UInt8]) throws -> JSONValue {
        try array.withUnsafeBytes { try parse($0) }
    }

    private func fail(_ m: String) -> Failure { Failure(message: m, offset: pos) }

    private var peek: UInt8? { pos < bytes.count ? bytes[pos] : nil }

    private mutating func skipSpace() {
        while let c = peek, c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { pos += 1 }
    }

    private mutating func expect(_ c: UInt8, _ what: String) throws {
        guard peek == c else { throw fail("expected \(what)") }
        pos += 1
    }

    private mutating func value(depth: Int) throws -> JSONValue {
        guard depth < Self.maxDepth else { throw fail("nesting deeper than \(Self.maxDepth) levels") }
        guard let c = peek else { throw fail("unexpected end of text") }
        switch c {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw fail("unexpected character '\(Character(Unicode.Scalar(c)))'")
        }
    }

    private mutating func literal(_ word: StaticString) throws {
        let n = word.utf8CodeUnitCount
        guard pos + n <= bytes.count else { throw fail("unexpected end of text") }
        for i in 0..<n where bytes[pos + i] != word.utf8Start[i] { throw fail("invalid literal") }
        pos += n
    }

    private mutating func object(depth: Int) throws -> JSONValue {
        pos += 1
        var out: [String: JSONValue] = [:]
        skipSpace()
        if peek == UInt8(ascii: "}") { pos += 1; return .object(out) }
        while true {
            skipSpace()
            guard peek == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let key = try string()
            skipSpace()
            try expect(UInt8(ascii: ":"), "':' after a key")
            skipSpace()
            path.append(key)
            let v = try value(depth: depth + 1)
            path.removeLast()
            guard out.updateValue(v, forKey: key) == nil else { throw DuplicateKey(key: key, path: path) }
            skipSpace()
            if peek == UInt8(ascii: ",") { pos += 1; continue }
            try expect(UInt8(ascii: "}"), "',' or '}' in an object")
            return .object(out)
        }
    }

    private mutating func array(depth: Int) throws -> JSONValue {
        pos += 1
        var out: [JSONValue] = []
        skipSpace()
        if peek == UInt8(ascii: "]") { pos += 1; return .array(out) }
        while true {
            skipSpace()
            out.append(try value(depth: depth + 1))
            skipSpace()
            if peek == UInt8(ascii: ",") { pos += 1; continue }
            try expect(UInt8(ascii: "]"), "',' or ']' in a list")
            return .array(out)
        }
    }

    private mutating func hex4() throws -> UInt32 {
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

    private mutating func string() throws -> String {
        pos += 1
        var out: [UInt8] = []
        while true {
            guard let c = peek else { throw fail("unterminated string") }
            pos += 1
            if c == UInt8(ascii: "\"") { break }
            if c < 0x20 { throw fail("control character in a string") }
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
                var scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    guard pos + 2 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                        throw fail("unpaired surrogate in a \\u escape")
                    }
                    pos += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate in a \\u escape") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let u = Unicode.Scalar(scalar) else { throw fail("unpaired surrogate in a \\u escape") }
                out.append(contentsOf: Array(String(Character(u)).utf8))
            default: throw fail("invalid escape '\\\(Character(Unicode.Scalar(e)))'")
            }
        }
        guard let s = String(validating: out, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
        return s
    }

    private mutating func number() throws -> JSONValue {
        let start = pos
        var isInteger = true
        if peek == UInt8(ascii: "-") { pos += 1 }
        func digits(_ p: inout StrictJSON) -> Int {
            var n = 0
            while let c = p.peek, c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") { p.pos += 1; n += 1 }
            return n
        }
        let intStart = pos
        guard digits(&self) > 0 else { throw fail("invalid number") }
        if bytes[intStart] == UInt8(ascii: "0") && pos - intStart > 1 { throw fail("number with a leading zero") }
        if peek == UInt8(ascii: ".") {
            pos += 1; isInteger = false
            guard digits(&self) > 0 else { throw fail("invalid number") }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            pos += 1; isInteger = false
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { pos += 1 }
            guard digits(&self) > 0 else { throw fail("invalid number") }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
        if isInteger, let i = Int(text) { return .int(i) }
        guard let d = Double(text) else { throw fail("invalid number") }
        return .double(d)
    }
}
