import JSON
import Testing

private func parse(_ text: String, _ options: JSONParseOptions = .init()) throws(JSONError) -> JSONValue {
    try JSONValue.parse(Array(text.utf8), options: options)
}

/// The syntax error for `text` (nil if it parses).
private func syntaxError(_ text: String) -> (offset: Int, reason: String)? {
    syntaxError(Array(text.utf8))
}

private func syntaxError(_ bytes: [UInt8], _ options: JSONParseOptions = .init()) -> (offset: Int, reason: String)? {
    do {
        _ = try JSONValue.parse(bytes, options: options)
        return nil
    } catch {
        guard case .syntax(let o, let r) = error else { return (-1, "\(error)") }
        return (o, r)
    }
}

struct JSONParserTests {
    @Test func parsesEveryKindOfValue() throws {
        let v = try parse(#" {"a": [1, -2, 3.5, 1e3, true, false, null], "b": {"c": "d\n\u00e9\ud83d\ude00"}} "#)
        #expect(v["a"] == .array([.int(1), .int(-2), .double(3.5), .double(1000), .bool(true), .bool(false), .null]))
        #expect(v["b"]?["c"]?.stringValue == "d\n\u{e9}\u{1F600}")
        #expect(v["missing"] == nil && v["a"]?["x"] == nil)
        #expect(try parse("[]") == .array([]) && parse("{}") == .object([:]))
        #expect(try parse(#""\"\\\/\b\f\r\t""#).stringValue == "\"\\/\u{8}\u{C}\r\t")
    }

    @Test func integersStayExactAndDistinctFromFractions() throws {
        // 2^53 + 1 is not representable as a Double; offsets this large must survive.
        #expect(try parse("9007199254740993").intValue == 9_007_199_254_740_993)
        #expect(try parse("9223372036854775807") == .int(Int.max))
        #expect(try parse("-9223372036854775808") == .int(Int.min))
        #expect(try parse("-0") == .int(0))
        #expect(try parse("3") == .int(3))
        #expect(try parse("3.0") == .double(3))
        #expect(try parse("3e0") == .double(3))
        #expect(try parse("3.0").intValue == 3)        // an exact integer written as a fraction
        #expect(try parse("3.5").intValue == nil)
        // Beyond Int: a Double (never a wrapped or truncated Int).
        #expect(try parse("18446744073709551616") == .double(18446744073709551616))
        #expect(try parse("18446744073709551616").intValue == nil)
        #expect(try parse("true").intValue == nil && parse("true").doubleValue == nil)
        #expect(try parse("\"1\"").intValue == nil)
    }

    @Test func rejectsWhatRFC8259Rejects() {
        let bad: [(String, String)] = [
            ("", "unexpected end"), ("{\"w\": ", "unexpected end"), ("01", "leading zero"), ("-", "invalid number"),
            ("1.", "invalid number"), (".5", "unexpected character"), ("+1", "unexpected character"),
            ("1e", "invalid number"), ("NaN", "unexpected character"), ("Infinity", "unexpected character"),
            ("1e999", "out of range"), ("tru", "unexpected end"), ("trUe", "invalid literal"),
            ("{'w': 1}", "expected a string key"), ("{\"w\" 1}", "':'"), ("[1 2]", "',' or ']'"), ("{\"a\": 1,}", "string key"),
            ("[1,]", "unexpected character"), ("{\"w\": {} } x", "after the JSON value"),
            ("\"a\u{01}b\"", "control character"), ("\"abc", "unterminated"), ("\"\\x\"", "invalid escape"),
            ("\"\\u12zz\"", "invalid \\u escape"), ("\"\\u12\"", "end of text in a \\u escape"), ("\"\\ud800\"", "unpaired surrogate"),
            ("\"\\ud800\\u0041\"", "unpaired surrogate"), ("\"\\udc00\"", "unpaired surrogate"),
        ]
        for (text, reason) in bad {
            let e = syntaxError(text)
            #expect(e?.reason.contains(reason) == true, "\(text.debugDescription): \(String(describing: e))")
        }
    }

    @Test func errorsGiveTheByteOffset() {
        #expect(syntaxError("[1, 2, x]")?.offset == 7)
        #expect(syntaxError("{\"a\": 01}")?.offset == 6)
        #expect(syntaxError("\"ab\\q\"")?.offset == 3)
        #expect(syntaxError("[1] 2")?.offset == 4)
        #expect("\(JSONError.syntax(offset: 7, reason: "expected x"))" == "expected x at byte 7")
    }

    @Test func checksUTF8() throws {
        // A lone continuation byte, an overlong encoding, a truncated sequence, an encoded surrogate.
        for bad: [UInt8] in [[0x80], [0xC0, 0xAF], [0xE2, 0x82], [0xED, 0xA0, 0x80]] {
            let text = Array("[\"ok".utf8) + bad + Array("\"]".utf8)
            let e = syntaxError(text)
            #expect(e?.reason.contains("UTF-8") == true && e?.offset == 4, "\(bad): \(String(describing: e))")
        }
        // Also where the string has escapes (the slow path), and outside strings.
        #expect(syntaxError(Array("\"\\n".utf8) + [0xFF] + Array("\"".utf8))?.reason.contains("UTF-8") == true)
        #expect(syntaxError([0xEF, 0xBB, 0xBF] + Array("{}".utf8)) != nil)  // a BOM is not JSON text
        #expect(try JSONValue.parse(Array("\"é€😀\"".utf8)).stringValue == "é€😀")
    }

    @Test func boundsNesting() throws {
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(syntaxError(deep)?.reason.contains("nesting") == true)
        let fits = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        #expect(syntaxError(fits) == nil)
        // A depth bomb far past any stack fails fast with the offset where the limit is crossed.
        let bomb = String(repeating: "{\"a\":[", count: 200_000)
        let e = syntaxError(bomb)
        #expect(e?.reason == "nesting deeper than 64 levels" && e?.offset == 32 * 6)  // the 65th container
        #expect(syntaxError(Array(fits.utf8), JSONParseOptions(maxDepth: 10))?.reason.contains("nesting deeper than 10") == true)
    }

    @Test func duplicateKeysAreRejectedWithTheirPath() throws {
        func duplicate(_ text: String) -> JSONError? {
            do { _ = try parse(text); return nil } catch { return error }
        }
        #expect(duplicate(#"{"a": 1, "a": 2}"#) == .duplicateKey(key: "a", path: [], offset: 9))
        let nested = duplicate(#"{"w": {"shape": [1], "x": [{"k": 1}, {"k": 2, "k": 3}]}}"#)
        #expect(nested == .duplicateKey(key: "k", path: ["w", "x", "[1]"], offset: 46))
        #expect("\(nested!)" == "key 'k' appears more than once in 'w.x[1]' at byte 46")
        // Large objects switch to a hash set; the check must still hold there.
        let many = (0..<100).map { "\"k\($0)\": \($0)" }.joined(separator: ", ")
        #expect(try parse("{\(many)}").members?.count == 100)
        #expect(duplicate("{\(many), \"k57\": 0}") == .duplicateKey(key: "k57", path: [], offset: 1 + many.utf8.count + 2))
        // Allowed on request: both kept in order, lookups see the last one (as Python and serde do).
        let kept = try parse(#"{"a": 1, "b": 2, "a": 3}"#, JSONParseOptions(rejectDuplicateKeys: false))
        #expect(kept.members?.keys == ["a", "b", "a"] && kept["a"] == .int(3))
    }

    @Test func keysAreOrderedAndByteExact() throws {
        // "é" precomposed and decomposed are equal Swift Strings but different tokens.
        let text = "{\"z\": 0, \"\u{e9}\": 1, \"e\u{301}\": 2, \"a\": 3}"
        let v = try parse(text)
        #expect(v.members?.keys.map { Array($0.utf8) } == ["z", "\u{e9}", "e\u{301}", "a"].map { Array($0.utf8) })
        #expect(v["\u{e9}"] == .int(1) && v["e\u{301}"] == .int(2))
        // Distinct bytes are not duplicates, even with rejection on; byte-equal escapes are.
        #expect(v.members?.count == 4)
        #expect(throws: JSONError.self) { try parse(#"{"\u00e9": 1, "é": 2}"#) }
        // Equality ignores member order but not key bytes.
        #expect(try parse(#"{"a": 1, "b": [2]}"#) == parse(#"{"b": [2], "a": 1}"#))
        #expect(try parse("{\"\u{e9}\": 1}") != parse("{\"e\u{301}\": 1}"))
        // The dictionary view folds canonically equal keys (documented).
        #expect(v.objectValue?.count == 3)
        #expect(v.members?.description == "{\"z\": 0, \"\u{e9}\": 1, \"e\u{301}\": 2, \"a\": 3}")
    }

    @Test func trueIsNotANumberAndKindsAreNamed() throws {
        #expect(try parse("true").intValue == nil)
        #expect(try parse("1").boolValue == nil)
        #expect(try [parse("null"), parse("1"), parse("1.5"), parse("{}")].map(\.kind) == ["null", "an integer", "a number", "an object"])
        #expect(try parse("null").isNull && !parse("0").isNull)
    }
}
