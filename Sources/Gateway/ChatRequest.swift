import Foundation
import JSON
import Stages

/// A `POST /v1/chat/completions` body read into what the pipeline takes: one `AskRequest` (the
/// conversation's text folded into its question, media in document order — the order the
/// `BodyScanner` uploaded them in) and the OpenAI options the gateway applies itself (streaming,
/// stop strings).
struct ChatRequest {
    var ask: AskRequest
    var stream = false
    var includeUsage = false
    var stop: [String] = []

    /// Nesting allowed in a request body: messages → content → part → image_url is 6 deep, so 32
    /// leaves room and refuses nested-array bombs at once.
    static let jsonOptions = JSONParseOptions(maxDepth: 32, rejectDuplicateKeys: true)

    /// Reads and checks the skeleton of a body (`BodyScanner`): its media strings were emptied and
    /// uploaded, `streamed` names them by part. `fileRoots` limits `file://` media.
    init(body: Data, fileRoots: [String], streamed: [String: MediaItem]) throws(GatewayError) {
        let root: JSONValue
        do { root = try JSONValue.parse(body, options: Self.jsonOptions) } catch { throw .malformedJSON(error.description) }
        guard case .object = root else { throw .invalidRequest("the body must be a JSON object, got \(root.kind)") }
        guard let messages = root["messages"]?.arrayValue, !messages.isEmpty else {
            throw .invalidRequest("'messages' must be a non-empty array of {role, content}")
        }
        var texts: [String] = []
        var media: [MediaItem] = []
        for (i, m) in messages.enumerated() {
            let at = "messages[\(i)]"
            guard case .object = m else { throw .invalidRequest("\(at) must be an object, got \(m.kind)") }
            guard let role = m["role"]?.stringValue, ["system", "user", "assistant", "developer"].contains(role) else {
                throw .invalidRequest("\(at).role must be \"system\", \"developer\", \"user\" or \"assistant\"")
            }
            switch m["content"] {
            case .string(let s)?: texts.append(s)
            case .null?, nil: continue
            case .array(let parts)?:
                for (j, part) in parts.enumerated() {
                    let name = "\(at).content[\(j)]"
                    guard let type = part["type"]?.stringValue else { throw .invalidPart(part: name, reason: "needs a string 'type'") }
                    if type == "text" {
                        guard let t = part["text"]?.stringValue else { throw .invalidPart(part: name, reason: "a text part needs a string 'text'") }
                        texts.append(t)
                        continue
                    }
                    guard role == "user" else { throw .invalidPart(part: name, reason: "only user messages may carry \(type) parts") }
                    media.append(try MediaPart.read(part, type: type, name: name, fileRoots: fileRoots, streamed: streamed[name]))
                }
            case let other?: throw .invalidRequest("\(at).content must be a string, an array of parts or null, got \(other.kind)")
            }
        }
        // Media of one kind keep their order, which is all the template and stitching look at.
        ask = AskRequest(question: texts.joined(separator: "\n"), media: media)

        if let n = root["n"], n.intValue != 1 { throw .invalidRequest("'n' must be 1 (one choice per request)") }
        if let v = root["max_completion_tokens"] ?? root["max_tokens"], !v.isNull {
            guard let n = v.intValue, (1...65536).contains(n) else { throw .invalidRequest("'max_tokens' must be an integer in 1…65536") }
            ask.maxNewTokens = n
        }
        if let v = root["temperature"], !v.isNull {
            guard let t = v.doubleValue, (0...2).contains(t) else { throw .invalidRequest("'temperature' must be a number in 0…2") }
            ask.temperature = t
        }
        if let v = root["top_p"], !v.isNull {
            guard let p = v.doubleValue, p > 0, p <= 1 else { throw .invalidRequest("'top_p' must be a number in (0, 1]") }
            ask.topP = p
        }
        if let v = root["seed"], !v.isNull {
            guard let s = v.intValue, s >= 0 else { throw .invalidRequest("'seed' must be a non-negative integer") }
            ask.seed = UInt64(s)
        }
        switch root["stop"] {
        case nil, .null?: break
        case .string(let s)?: stop = [s]
        case .array(let a)?:
            stop = a.compactMap(\.stringValue)
            guard stop.count == a.count, stop.count <= 4 else { throw .invalidRequest("'stop' must be a string or up to 4 strings") }
        case let other?: throw .invalidRequest("'stop' must be a string or an array of strings, got \(other.kind)")
        }
        stop = stop.filter { !$0.isEmpty }
        if let v = root["stream"], !v.isNull {
            guard let b = v.boolValue else { throw .invalidRequest("'stream' must be a boolean") }
            stream = b
        }
        includeUsage = root["stream_options"]?["include_usage"]?.boolValue ?? false
    }
}

/// One media content part (`image_url`, `input_audio`, `video_url`) → the item the pipeline
/// decodes (named after the part, so a decode error names it). Its bytes were uploaded by the
/// `BodyScanner` (`streamed`); a part it did not upload is explained here.
enum MediaPart {
    static func read(_ part: JSONValue, type: String, name: String, fileRoots: [String], streamed: MediaItem?) throws(GatewayError) -> MediaItem {
        switch type {
        case "image_url", "video_url":
            // OpenAI nests {"url": …}; a bare string is accepted as well.
            guard let url = part[type]?["url"]?.stringValue ?? part[type]?.stringValue else {
                throw .invalidPart(part: name, reason: "needs '\(type)': {\"url\": \"data:…;base64,…\" or \"file:///…\"}")
            }
            if let streamed, streamed.name == "\(name) (\(type))" { return streamed }
            _ = try filePath(of: url, part: name, fileRoots: fileRoots)  // throws why it was not uploaded
            throw .invalidPart(part: name, reason: "its URL was not readable as it arrived")
        case "input_audio":
            guard part["input_audio"]?["data"]?.stringValue != nil, let streamed, streamed.name == "\(name) (input_audio)" else {
                throw .invalidPart(part: name, reason: "needs 'input_audio': {\"data\": base64, \"format\": \"wav\" or \"mp3\"}")
            }
            if let f = part["input_audio"]?["format"], !f.isNull {
                guard let s = f.stringValue, ["wav", "mp3"].contains(s) else {
                    throw .invalidPart(part: name, reason: "input_audio.format must be \"wav\" or \"mp3\"")
                }
            }
            return streamed
        default:
            throw .invalidPart(part: name, reason: "unknown part type '\(type)'; use text, image_url, input_audio or video_url")
        }
    }

    /// Checks a media URL: nil for a `data:[mime];base64,…` URL, the resolved path for a `file://`
    /// URL naming a readable file under `fileRoots`; anything else throws why not.
    static func filePath(of url: String, part: String, fileRoots: [String]) throws(GatewayError) -> String? {
        if url.hasPrefix("data:") {
            guard let comma = url.firstIndex(of: ","), url[..<comma].hasSuffix(";base64") else {
                throw .invalidPart(part: part, reason: "a data: URL must be base64 (data:<type>;base64,<data>)")
            }
            return nil
        }
        if url.hasPrefix("file://") {
            let raw = String(url.dropFirst("file://".count))
            guard raw.hasPrefix("/"), let path = raw.removingPercentEncoding else {
                throw .invalidPart(part: part, reason: "a file: URL must hold an absolute path (file:///dir/name)")
            }
            let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
            if !fileRoots.isEmpty {
                let inside = fileRoots.contains { root in
                    let r = URL(fileURLWithPath: root).resolvingSymlinksInPath().path
                    return resolved == r || resolved.hasPrefix(r.hasSuffix("/") ? r : r + "/")
                }
                guard inside else { throw .invalidPart(part: part, reason: "\(path) is outside the gateway's \"file_roots\"") }
            }
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: resolved, isDirectory: &isDir), !isDir.boolValue,
                  FileManager.default.isReadableFile(atPath: resolved) else {
                throw .invalidPart(part: part, reason: "\(path): no such readable file")
            }
            return resolved
        }
        throw .invalidPart(part: part, reason: "only data: and file:// URLs are accepted (the gateway fetches nothing remote)")
    }
}
