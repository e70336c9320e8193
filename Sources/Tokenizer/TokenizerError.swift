/// Everything that can go wrong loading or using a tokenizer; each message names the file or the
/// JSON element and says what is wrong, so a user can fix the file.
public enum TokenizerError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A file could not be read.
    case io(path: String, reason: String)
    /// The bytes are not valid JSON (offset of the problem in bytes).
    case badJSON(file: String, offset: Int, reason: String)
    /// Valid JSON, but a required key is missing or has the wrong kind of value.
    case malformed(file: String, reason: String)
    /// A pipeline stage whose `"type"` this implementation does not know.
    case unsupported(file: String, stage: String, type: String)
    /// A BPE merge names a token (or produces one) that is not in the vocabulary.
    case mergeOutOfVocabulary(file: String, merge: String, token: String)
    /// A regular expression in the file does not compile.
    case badRegex(file: String, pattern: String, reason: String)

    /// One line: control characters from token text are escaped so CLI errors stay on one line.
    public var description: String {
        var out = ""
        for c in message.unicodeScalars {
            switch c {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    private var message: String {
        switch self {
        case .io(let path, let reason): return "\(path): \(reason)"
        case .badJSON(let file, let offset, let reason): return "\(file): invalid JSON at byte \(offset): \(reason)"
        case .malformed(let file, let reason): return "\(file): \(reason)"
        case .unsupported(let file, let stage, let type): return "\(file): unsupported \(stage) type '\(type)'"
        case .mergeOutOfVocabulary(let file, let merge, let token):
            return "\(file): merge '\(merge)' uses token '\(token)' that is not in the vocabulary"
        case .badRegex(let file, let pattern, let reason): return "\(file): regex '\(pattern)' does not compile: \(reason)"
        }
    }
}
