/// Any JSON value, as `JSONValue.parse` reads it from untrusted files (safetensors headers, the
/// sharded index, config.json, tokenizer.json). Integers stay exact `Int`s (offsets above 2^53
/// must not pass through a `Double`) and are told apart from fractional numbers; objects keep their
/// members in file order with byte-exact keys (see `JSONObject`). Kept as data so keys nobody
/// models yet (exporter extras, `mm_*` keys) stay readable, `Sendable` and comparable.
public enum JSONValue: Sendable, Equatable, CustomStringConvertible {
    case null
    case bool(Bool)
    /// A number written without fraction or exponent that fits in an `Int`.
    case int(Int)
    /// Any other number (a fraction, an exponent, or an integer beyond the `Int` range).
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// The member `key` of an object, matched byte for byte (nil for other values or a missing key).
    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// Integers, and doubles that hold an integer exactly.
    public var intValue: Int? {
        switch self {
        case .int(let i): return i
        case .double(let d): return Int(exactly: d)
        default: return nil
        }
    }

    public var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// The members of an object as a dictionary (Swift `String` keys: canonically equivalent keys
    /// fold together, the later one wins). Use `members` where keys must stay byte-exact.
    public var objectValue: [String: JSONValue]? {
        if case .object(let o) = self { return o.dictionary }
        return nil
    }

    /// The members of an object in file order, with byte-exact keys.
    public var members: JSONObject? {
        if case .object(let o) = self { return o }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// A short name of the value's kind, for error messages ("a string", "an object", …).
    public var kind: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int: return "an integer"
        case .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    public var description: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return String(b)
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .string(let s): return "\"\(s)\""
        case .array(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .object(let o): return o.description
        }
    }
}

/// The members of a JSON object in file order as (key, value) pairs, looked up byte for byte.
/// A `[String: JSONValue]` would not do: Swift strings compare by canonical equivalence, and a
/// vocabulary may hold both "é" and "e\u{301}" as different tokens.
public struct JSONObject: Sendable, Equatable, RandomAccessCollection, ExpressibleByDictionaryLiteral,
    CustomStringConvertible {
    public typealias Element = (key: String, value: JSONValue)

    /// The members in file order.
    public private(set) var elements: [Element]

    public init(_ elements: [Element] = []) { self.elements = elements }

    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self.elements = elements.map { (key: $0.0, value: $0.1) }
    }

    public var startIndex: Int { elements.startIndex }
    public var endIndex: Int { elements.endIndex }
    public subscript(position: Int) -> Element { elements[position] }

    /// The value of the member whose key has exactly the bytes of `key`. Where duplicate keys were
    /// allowed the last one wins, as in Python's `json` and serde.
    public subscript(key: String) -> JSONValue? {
        for i in elements.indices.reversed() where sameBytes(elements[i].key, key) { return elements[i].value }
        return nil
    }

    public mutating func append(key: String, value: JSONValue) { elements.append((key: key, value: value)) }

    public var keys: [String] { elements.map(\.key) }

    /// The members as a dictionary keyed by Swift `String` (canonically equivalent keys fold, the later wins).
    public var dictionary: [String: JSONValue] {
        Dictionary(elements.map { ($0.key, $0.value) }, uniquingKeysWith: { _, later in later })
    }

    /// Same members (keys compared byte for byte), in any order.
    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        guard a.count == b.count else { return false }
        for (i, m) in a.elements.enumerated() {
            if sameBytes(b.elements[i].key, m.key) && b.elements[i].value == m.value { continue }  // same order: quick
            guard let v = b[m.key], v == m.value else { return false }
        }
        return true
    }

    public var description: String {
        "{" + elements.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "}"
    }
}

/// Byte-for-byte equality of two strings' UTF-8 (not Swift's canonical equivalence).
@inline(__always)
func sameBytes(_ a: String, _ b: String) -> Bool {
    let au = a.utf8, bu = b.utf8
    guard au.count == bu.count else { return false }
    if let r = au.withContiguousStorageIfAvailable({ pa in
        bu.withContiguousStorageIfAvailable { pb in pa.elementsEqual(pb) }
    }), let r { return r }
    return au.elementsEqual(bu)
}
