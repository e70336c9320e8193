import Foundation
import JSON
import Stages

/// Reads a chat-completions body while it arrives and sends its media to the pipeline at once:
/// each media string (`image_url` / `video_url` `url`, `input_audio` `data`) that holds a
/// `data:…;base64,` URL or base64 audio is decoded on the fly and uploaded in 64 KiB chunks; a
/// `file://` URL is uploaded from disk as soon as it is read. Everything else is copied into a
/// small "skeleton" (the body with those strings emptied) that `ChatRequest` parses at the end
/// with the JSON module. Only the skeleton is buffered (at most `maxSkeleton` bytes), so a large
/// upload never sits whole in the gateway and decoding starts before the body ends.
///
/// The scanner follows just enough of the grammar to know where it is (strings, escapes,
/// containers, keys); the full RFC 8259 check happens when the skeleton is parsed.
struct BodyScanner {
    /// One open container: an object with the key whose value comes next, or an array's index.
    struct Frame {
        var isObject: Bool
        var key = ""
        var awaitingKey = true
        var index = 0
    }

    /// What the current string is.
    enum StringKind {
        case plain
        case key
        /// A media URL whose start (up to the first comma) is being looked at.
        case urlPrefix(part: String, type: String)
        /// Base64 being decoded and uploaded.
        case base64(part: String)
    }

    let uploads: EarlyUploads
    let fileRoots: [String]
    let maxSkeleton: Int
    let maxDepth = ChatRequest.jsonOptions.maxDepth
    private(set) var skeleton: [UInt8] = []
    /// Media parts sent, by part name (`messages[0].content[1]`), in document order.
    private(set) var streamed: [String: MediaItem] = [:]
    /// The first problem found; scanning stops there (the rest of the body is dropped).
    private(set) var failure: GatewayError?

    private var stack: [Frame] = []
    private var inString = false
    private var escaped = false
    private var kind = StringKind.plain
    private var text: [UInt8] = []
    private var decoder = Base64Decoder()
    private var pending = Data()

    init(uploads: EarlyUploads, fileRoots: [String], maxSkeleton: Int) {
        self.uploads = uploads
        self.fileRoots = fileRoots
        self.maxSkeleton = maxSkeleton
    }

    /// Takes the next piece of the body; false once a failure stopped the scan.
    mutating func feed(_ bytes: UnsafeRawBufferPointer) -> Bool {
        for b in bytes {
            guard failure == nil else { return false }
            if inString { string(b) } else { structure(b) }
        }
        if skeleton.count > maxSkeleton {
            failure = .tooLarge(limit: maxSkeleton)
        }
        return failure == nil
    }

    /// The body ended: a string or container left open is a truncated body (the parse reports it).
    /// An input still uploading is closed, so its decoder stops waiting.
    mutating func finish() {
        if failure == nil, inString, case .base64(let part) = kind { failure = .malformedJSON("\(part): the body ends inside its data") }
        if uploads.isOpen { try? uploads.send(Data(), last: true) }
    }

    // MARK: - outside strings

    private mutating func structure(_ b: UInt8) {
        skeleton.append(b)
        switch b {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            stack.append(Frame(isObject: b == UInt8(ascii: "{")))
            if stack.count > maxDepth { failure = .malformedJSON("nesting deeper than \(maxDepth) levels at byte \(skeleton.count - 1)") }
        case UInt8(ascii: "}"), UInt8(ascii: "]"):
            if stack.popLast() == nil { failure = .malformedJSON("unbalanced '\(Character(Unicode.Scalar(b)))' at byte \(skeleton.count - 1)") }
        case UInt8(ascii: ","):
            guard !stack.isEmpty else { return }
            if stack[stack.count - 1].isObject { stack[stack.count - 1].awaitingKey = true } else { stack[stack.count - 1].index += 1 }
        case UInt8(ascii: ":"):
            if !stack.isEmpty { stack[stack.count - 1].awaitingKey = false }
        case UInt8(ascii: "\""):
            inString = true
            escaped = false
            text.removeAll(keepingCapacity: true)
            kind = .plain
            if let top = stack.last, top.isObject, top.awaitingKey {
                kind = .key
            } else if let (part, type) = mediaValue() {
                if type != "input_audio" {
                    kind = .urlPrefix(part: part, type: type)
                } else if open(part: part, modality: .audio, type: type) {
                    kind = .base64(part: part)
                }
            }
            if case .plain = kind {} else if case .key = kind {} else { skeleton.removeLast() }  // media: written at its end
        default: break
        }
    }

    /// The part and its type when the string value starting here is media, from where it stands:
    /// `messages[i].content[j].<type>` (a bare URL), `.<type>.url` or `.input_audio.data`.
    private func mediaValue() -> (part: String, type: String)? {
        let s = stack
        guard s.count == 5 || s.count == 6, s[0].isObject, s[0].key == "messages", !s[1].isObject,
              s[2].isObject, s[2].key == "content", !s[3].isObject, s[4].isObject else { return nil }
        let part = "messages[\(s[1].index)].content[\(s[3].index)]"
        let type = s[4].key
        if s.count == 5 { return ["image_url", "video_url"].contains(type) ? (part, type) : nil }
        guard s[5].isObject else { return nil }
        switch (type, s[5].key) {
        case ("image_url", "url"), ("video_url", "url"), ("input_audio", "data"): return (part, type)
        default: return nil
        }
    }

    // MARK: - inside strings

    private mutating func string(_ b: UInt8) {
        let closing = !escaped && b == UInt8(ascii: "\"")
        switch kind {
        case .plain, .key:
            skeleton.append(b)
            if case .key = kind, !closing, text.count < 256 { text.append(b) }
        case .urlPrefix(let part, let type):
            if !closing { text.append(b) }
            if closing || b == UInt8(ascii: ",") || text.count > 512 { decideURL(part: part, type: type, closed: closing) }
        case .base64(let part):
            if !closing { base64(b, part: part) }
        }
        if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true }
        if closing { endString() }
    }

    private mutating func endString() {
        inString = false
        switch kind {
        case .key: if !stack.isEmpty { stack[stack.count - 1].key = String(decoding: text, as: UTF8.self) }
        case .base64(let part):
            guard let last = decoder.finish(), failure == nil else {
                if failure == nil { failure = .invalidPart(part: part, reason: "invalid base64 data") }
                return
            }
            pending.append(contentsOf: last)
            flush(part: part, last: true)
            skeleton += Array("\"\"".utf8)
        default: break
        }
        kind = .plain
    }

    /// The start of a media URL is known: a base64 data: URL streams from here; a file:// URL is
    /// sent from disk when complete; anything else stays in the skeleton for `ChatRequest` to judge.
    private mutating func decideURL(part: String, type: String, closed: Bool) {
        let modality: Modality = type == "image_url" ? .image : .video
        // The text read so far, JSON escapes resolved ("data:image\/png;…" as some encoders write it).
        let quoted = [UInt8(ascii: "\"")] + text + [UInt8(ascii: "\"")]
        let head = (try? JSONValue.parse(quoted))?.stringValue ?? String(decoding: text, as: UTF8.self)
        if head.hasPrefix("data:") && head.hasSuffix(",") && head.dropLast().hasSuffix(";base64") {
            kind = open(part: part, modality: modality, type: type) ? .base64(part: part) : .plain
            if case .plain = kind { skeleton += Array("\"".utf8) + text }
            return
        }
        if head.hasPrefix("file://") && !closed { return }  // wait for the whole path
        if head.hasPrefix("file://") {
            do throws(GatewayError) {
                guard let path = try MediaPart.filePath(of: head, part: part, fileRoots: fileRoots) else { return }
                if open(part: part, modality: modality, type: type) { try send(file: path, part: part) }
                skeleton += Array("\"\"".utf8)
            } catch { failure = error }
            kind = .plain
            inString = false
            return
        }
        // Not ours to stream (a remote URL, a malformed data: URL…): keep it as text.
        skeleton += Array("\"".utf8) + text + (closed ? Array("\"".utf8) : [])
        kind = .plain
    }

    private mutating func open(part: String, modality: Modality, type: String) -> Bool {
        let item = MediaItem(modality: modality, name: "\(part) (\(type))")
        do {
            try uploads.open(item)
            streamed[part] = item
            decoder = Base64Decoder()
            pending = Data()
            return true
        } catch {
            failure = .unavailable("cannot upload \(part): \(error)")
            return false
        }
    }

    private mutating func send(file path: String, part: String) throws(GatewayError) {
        do { try uploads.send(file: path) } catch { throw .unavailable("cannot upload \(part): \(error)") }
    }

    private mutating func base64(_ b: UInt8, part: String) {
        // JSON may escape '/' as "\/" and break lines as "\n": take the escaped character itself.
        if escaped {
            guard b == UInt8(ascii: "/") || b == UInt8(ascii: "n") || b == UInt8(ascii: "r") else {
                failure = .invalidPart(part: part, reason: "invalid base64 data")
                return
            }
            if b == UInt8(ascii: "/") { decode(b, part: part) }
            return
        }
        if b == UInt8(ascii: "\\") { return }
        decode(b, part: part)
    }

    private mutating func decode(_ b: UInt8, part: String) {
        guard decoder.add(b, into: &pending) else {
            failure = .invalidPart(part: part, reason: "invalid base64 data")
            return
        }
        if pending.count >= 64 << 10 { flush(part: part, last: false) }
    }

    private mutating func flush(part: String, last: Bool) {
        do { try uploads.send(pending, last: last) } catch { failure = .unavailable("cannot upload \(part): \(error)") }
        pending = Data()
    }
}

/// Base64 (RFC 4648, standard alphabet, `=` padding) decoded a character at a time. Spaces and
/// line breaks are skipped; anything else outside the alphabet, or data after padding, is an error.
struct Base64Decoder {
    private var quad: UInt32 = 0
    private var count = 0
    private var padding = 0
    private var total = 0

    /// Adds one character, appending any completed bytes to `out`; false on invalid input.
    mutating func add(_ c: UInt8, into out: inout Data) -> Bool {
        let v: UInt32
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = UInt32(c - UInt8(ascii: "A"))
        case UInt8(ascii: "a")...UInt8(ascii: "z"): v = UInt32(c - UInt8(ascii: "a")) + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): v = UInt32(c - UInt8(ascii: "0")) + 52
        case UInt8(ascii: "+"): v = 62
        case UInt8(ascii: "/"): v = 63
        case UInt8(ascii: "="):
            guard count >= 2 else { return false }
            padding += 1
            v = 0
        case 0x20, 0x0A, 0x0D: return true
        default: return false
        }
        if padding > 0 && c != UInt8(ascii: "=") { return false }
        quad = quad << 6 | v
        count += 1
        if count == 4 {
            let bytes = [UInt8(quad >> 16 & 0xFF), UInt8(quad >> 8 & 0xFF), UInt8(quad & 0xFF)]
            out.append(contentsOf: bytes.prefix(3 - padding))
            total += 3 - padding
            quad = 0
            count = 0
            if padding > 0 { padding = 3 }  // nothing may follow a padded quad
        }
        return true
    }

    /// The end: nil when a quad is incomplete or nothing was decoded; else no further bytes.
    func finish() -> Data? { count == 0 && total > 0 ? Data() : nil }
}
