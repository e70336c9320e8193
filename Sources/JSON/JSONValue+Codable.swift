/// `Codable` so typed configurations (`ModelConfig`) can hold free-form JSON sub-trees and decode
/// them with whatever decoder reads the rest. Object members decoded this way come back sorted by
/// key bytes (a keyed container does not keep file order); use `JSONValue.parse` to keep it.
extension JSONValue: Codable {
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null; return }
        if let b = try? c.decode(Bool.self) { self = .bool(b); return }
        if let i = try? c.decode(Int.self) { self = .int(i); return }
        if let d = try? c.decode(Double.self) { self = .double(d); return }
        if let s = try? c.decode(String.self) { self = .string(s); return }
        if let a = try? c.decode([JSONValue].self) { self = .array(a); return }
        if let o = try? c.decode(JSONObject.self) { self = .object(o); return }
        throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a JSON value")
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}

extension JSONObject: Codable {
    private struct MemberKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { return nil }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: MemberKey.self)
        var out = JSONObject()
        for k in c.allKeys.sorted(by: { $0.stringValue.utf8.lexicographicallyPrecedes($1.stringValue.utf8) }) {
            out.append(key: k.stringValue, value: try c.decode(JSONValue.self, forKey: k))
        }
        self = out
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: MemberKey.self)
        for (k, v) in elements { try c.encode(v, forKey: MemberKey(stringValue: k)) }
    }
}
