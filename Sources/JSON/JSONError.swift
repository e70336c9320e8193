/// Why `JSONValue.parse` rejected a text, with the byte offset where it went wrong, so the module
/// reading the file can name the file and the place in its own error.
public enum JSONError: Error, Equatable, CustomStringConvertible {
    /// Not JSON (RFC 8259), not UTF-8, or nested deeper than the limit.
    case syntax(offset: Int, reason: String)
    /// `key` appears twice in one object; `path` names the enclosing members, outermost first
    /// (object keys, and `[i]` for array elements).
    case duplicateKey(key: String, path: [String], offset: Int)

    /// Byte offset of the problem in the parsed text.
    public var offset: Int {
        switch self {
        case .syntax(let o, _), .duplicateKey(_, _, let o): return o
        }
    }

    /// `path` written as `a.b[2].c` (empty for the top level).
    public static func describe(path: [String]) -> String {
        var out = ""
        for p in path {
            if !out.isEmpty && !p.hasPrefix("[") { out += "." }
            out += p
        }
        return out
    }

    public var description: String {
        switch self {
        case .syntax(let o, let reason): return "\(reason) at byte \(o)"
        case .duplicateKey(let key, let path, let o):
            let inside = path.isEmpty ? "the top-level object" : "'\(Self.describe(path: path))'"
            return "key '\(key)' appears more than once in \(inside) at byte \(o)"
        }
    }
}
