import Foundation
import JSON
import Stages

/// A `POST /v1/chat/completions` body read into what the pipeline takes: one `AskRequest` (the
/// conversation's text folded into its question, media in template order), the bytes or files of
/// each media input, and the OpenAI options the gateway applies itself (streaming, stop strings).
struct ChatRequest {
    var ask: AskRequest
    var uploads: [UploadSource]
    var stream = false
    var includeUsage = false
    var stop: [String] = []

    /// Nesting allowed in a request body: messages → content → part → image_url is 6 deep, so 32
    /// leaves room and refuses nested-array bombs at once.
    static let jsonOptions = JSONParseOptions(maxDepth: 32, rejectDuplicateKeys: true)

    /// Reads and checks `body`; `fileRoots` limits `file://` media (empty: any readable file).
    init(body: Data, fileRoots: [String]) throws(GatewayError) {
        let root: JSONValue
        do { root = try JSONValue.parse(body, options: Self.jsonOptions) } catch { throw .malformedJSON(error.description) }
        guard case .object = root else { throw .invalidRequest("the body must be a JSON object, got \(root.kind)") }
        guard let messages = root["messages"]?.arrayValue, !messages.isEmpty else {
            throw .invalidRequest("'messages' must be a non-empty array of {role, content}")
        }
        var texts: [String] = []
        var media: [(item: MediaItem, upload: UploadSource)] = []
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
                    let (item, upload) = try MediaPart.read(part, type: type, name: name, fileRoots: fileRoots)
                    media.append((item, upload))
                }
            case let other?: throw .invalidRequest("\(at).content must be a string, an array of parts or null, got \(other.kind)")
            }
        }
        // The template places images, then audios, then videos (as `unimoe ask` orders its files).
        let ordered = Modality.allCases.flatMap { m in media.filter { $0.item.modality == m } }
        ask = AskRequest(question: texts.joined(separator: "\n"), media: ordered.map(\.item))
        uploads = ordered.map(\.upload)

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
/// decodes (named after the part, so a decode error names it) and where its bytes come from.
enum MediaPart {
    static func read(_ part: JSONValue, type: String, name: String, fileRoots: [String]) throws(GatewayError) -> (MediaItem, UploadSource) {
        switch type {
        case "image_url", "video_url":
            let modality: Modality = type == "image_url" ? .image : .video
            // OpenAI nests {"url": …}; a bare string is accepted as well.
            guard let url = part[type]?["url"]?.stringValue ?? part[type]?.stringValue else {
                throw .invalidPart(part: name, reason: "needs '\(type)': {\"url\": \"data:…;base64,…\" or \"file:///…\"}")
            }
            return (MediaItem(modality: modality, name: "\(name) (\(type))"), try source(url, part: name, fileRoots: fileRoots))
        case "input_audio":
            guard let data = part["input_audio"]?["data"]?.stringValue else {
                throw .invalidPart(part: name, reason: "needs 'input_audio': {\"data\": base64, \"format\": \"wav\" or \"mp3\"}")
            }
            if let f = part["input_audio"]?["format"], !f.isNull {
                guard let s = f.stringValue, ["wav", "mp3"].contains(s) else {
                    throw .invalidPart(part: name, reason: "input_audio.format must be \"wav\" or \"mp3\"")
                }
            }
            return (MediaItem(modality: .audio, name: "\(name) (input_audio)"), .bytes(try base64(data, part: name)))
        default:
            throw .invalidPart(part: name, reason: "unknown part type '\(type)'; use text, image_url, input_audio or video_url")
        }
    }

    /// A `data:[mime];base64,…` URL's bytes, or a `file://` path that exists under `fileRoots`.
    static func source(_ url: String, part: String, fileRoots: [String]) throws(GatewayError) -> UploadSource {
        if url.hasPrefix("data:") {
            guard let comma = url.firstIndex(of: ","), url[..<comma].hasSuffix(";base64") else {
                throw .invalidPart(part: part, reason: "a data: URL must be base64 (data:<type>;base64,<data>)")
            }
            return .bytes(try base64(url[url.index(after: comma)...], part: part))
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
            return .file(resolved)
        }
        throw .invalidPart(part: part, reason: "only data: and file:// URLs are accepted (the gateway fetches nothing remote)")
    }

    static func base64(_ text: some StringProtocol, part: String) throws(GatewayError) -> Data {
        // Only the base64 alphabet and line breaks: `.ignoreUnknownCharacters` alone would skip junk.
        let alphabet = text.utf8.allSatisfy { b in
            (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) || (0x30...0x39).contains(b) || [0x2B, 0x2F, 0x3D, 0x0A, 0x0D, 0x20].contains(b)
        }
        guard alphabet, let d = Data(base64Encoded: String(text), options: .ignoreUnknownCharacters), !d.isEmpty else {
            throw .invalidPart(part: part, reason: "invalid base64 data")
        }
        return d
    }
}
