import Foundation
import JSON

/// One conversation turn of a training sample (`from` is `human` or `gpt`, as the reference data).
public struct Turn: Sendable, Equatable {
    public var fromHuman: Bool
    public var value: String
}

/// One sample of a data file in the reference's format, validated: `{"id", "image" | "audio" |
/// "video" (a path or a list of paths, relative to the media directory), "conversations": [...]}`.
/// Remembers where it came from so every later error can name the file and line.
public struct RawSample: Sendable, Equatable {
    public var id: String
    public var file: String
    public var line: Int
    public var images: [String]
    public var audios: [String]
    public var videos: [String]
    public var turns: [Turn]
    /// Optional question family (`"family"`), for per-family evaluation.
    public var family: String?
    /// Optional expected answer (`"answer"`); evaluation falls back to the last gpt turn.
    public var answer: String?

    /// The modalities it carries, `+`-joined in a fixed order (`text` when none): the batching group.
    public var modalityGroup: String {
        var parts: [String] = []
        if !images.isEmpty { parts.append("image") }
        if !audios.isEmpty { parts.append("audio") }
        if !videos.isEmpty { parts.append("video") }
        return parts.isEmpty ? "text" : parts.joined(separator: "+")
    }
}

/// Reads training data files: a JSON list of samples or JSON Lines (one sample per line). Every
/// problem is a `TrainingError` naming the file and the line of the sample; with `skipBad`, a bad
/// sample is reported through `warn` and left out instead.
public enum TrainingData {
    /// Keys a sample may carry besides the media keys and `conversations`: metadata, never media.
    public static let metadataKeys: Set<String> = ["id", "source", "family", "answer", "split", "category", "task"]
    public static let mediaKeys = ["image", "audio", "video"]

    public static func load(path: String, mediaDirectory: String, skipBad: Bool = false,
                            warn: (String) -> Void = { _ in }) throws -> [RawSample] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TrainingError.malformedData(file: path, line: 0, reason: "the file cannot be read")
        }
        let bytes = [UInt8](data)
        var objects: [(JSONValue?, Int, String?)] = []   // (value, line, parse error)
        let first = bytes.firstIndex { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }
        if let f = first, bytes[f] == UInt8(ascii: "[") {
            let value: JSONValue
            do { value = try JSONValue.parse(data) } catch {
                throw TrainingError.malformedData(file: path, line: lineOf(error: error, in: bytes), reason: "not valid JSON: \(error)")
            }
            guard case .array(let items) = value else { throw TrainingError.malformedData(file: path, line: 1, reason: "expected a JSON list") }
            let starts = elementStartLines(bytes)
            for (i, item) in items.enumerated() { objects.append((item, i < starts.count ? starts[i] : 0, nil)) }
        } else {
            var lineNo = 0
            for raw in bytes.split(separator: 0x0A, omittingEmptySubsequences: false) {
                lineNo += 1
                if raw.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
                do { objects.append((try JSONValue.parse(Data(raw)), lineNo, nil)) } catch {
                    objects.append((nil, lineNo, "not valid JSON: \(error)"))
                }
            }
        }
        var out: [RawSample] = []
        for (value, line, parseError) in objects {
            do {
                if let parseError { throw TrainingError.malformedData(file: path, line: line, reason: parseError) }
                guard let value else { continue }
                out.append(try sample(value, file: path, line: line, mediaDirectory: mediaDirectory))
            } catch let e as TrainingError {
                guard skipBad else { throw e }
                warn("warning: skipping \(e)")
            }
        }
        return out
    }

    /// Validates one sample object.
    static func sample(_ v: JSONValue, file: String, line: Int, mediaDirectory: String) throws -> RawSample {
        func bad(_ r: String) -> TrainingError { .malformedData(file: file, line: line, reason: r) }
        guard case .object(let obj) = v else { throw bad("a sample must be a JSON object") }
        for key in obj.keys where !metadataKeys.contains(key) && !mediaKeys.contains(key) && key != "conversations" {
            throw TrainingError.unknownModality(file: file, line: line, key: key)
        }
        let id = obj["id"].flatMap { $0.stringValue ?? $0.intValue.map(String.init) } ?? "\(file):\(line)"
        func paths(_ key: String) throws -> [String] {
            guard let v = obj[key], !v.isNull else { return [] }
            let list: [JSONValue]
            if case .array(let a) = v { list = a } else { list = [v] }
            return try list.map { item in
                guard let p = item.stringValue, !p.isEmpty else { throw bad("'\(key)' must be a path or a list of paths") }
                let full = p.hasPrefix("/") ? p : (mediaDirectory as NSString).appendingPathComponent(p)
                guard FileManager.default.fileExists(atPath: full) else { throw TrainingError.missingMedia(file: file, line: line, path: full) }
                return full
            }
        }
        let images = try paths("image"), audios = try paths("audio"), videos = try paths("video")
        guard case .array(let conv)? = obj["conversations"], !conv.isEmpty else { throw bad("no 'conversations' list") }
        var turns: [Turn] = []
        for (i, t) in conv.enumerated() {
            guard let from = t["from"]?.stringValue, let value = t["value"]?.stringValue else {
                throw bad("conversation turn \(i) needs string 'from' and 'value'")
            }
            switch from {
            case "human", "user": turns.append(Turn(fromHuman: true, value: value))
            case "gpt", "assistant": turns.append(Turn(fromHuman: false, value: value))
            default: throw bad("conversation turn \(i) is from '\(from)' (expected human or gpt)")
            }
        }
        guard turns.contains(where: { !$0.fromHuman }) else { throw bad("the conversation has no 'gpt' answer to learn") }
        guard turns[0].fromHuman else { throw bad("the conversation must start with a 'human' turn") }
        for (kind, count) in [("image", images.count), ("audio", audios.count), ("video", videos.count)] {
            let marks = turns.filter(\.fromHuman).reduce(0) { $0 + $1.value.components(separatedBy: "<\(kind)>").count - 1 }
            let inAnswers = turns.filter { !$0.fromHuman }.contains { $0.value.contains("<\(kind)>") }
            if marks != count || inAnswers {
                throw TrainingError.placeholderMismatch(file: file, line: line,
                    reason: "the sample has \(count) \(kind) input(s) but its human turns hold \(marks) <\(kind)> placeholder(s)"
                        + (inAnswers ? " (and an answer holds one)" : ""))
            }
        }
        return RawSample(id: id, file: file, line: line, images: images, audios: audios, videos: videos, turns: turns,
                         family: obj["family"]?.stringValue, answer: obj["answer"]?.stringValue)
    }

    /// 1-based line of each top-level array element's first byte.
    static func elementStartLines(_ b: [UInt8]) -> [Int] {
        var lines: [Int] = [], depth = 0, inString = false, escape = false, line = 1, expecting = false
        for c in b {
            if c == 0x0A { line += 1 }
            if inString {
                if escape { escape = false } else if c == UInt8(ascii: "\\") { escape = true } else if c == UInt8(ascii: "\"") { inString = false }
                continue
            }
            if depth == 1 && expecting && !(c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 || c == UInt8(ascii: ",") || c == UInt8(ascii: "]")) {
                lines.append(line); expecting = false
            }
            switch c {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth == 1 { expecting = true }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            case UInt8(ascii: ","): if depth == 1 { expecting = true }
            default: break
            }
        }
        return lines
    }

    static func lineOf(error: Error, in bytes: [UInt8]) -> Int {
        guard let off = (error as? JSONError)?.offset else { return 0 }
        return 1 + bytes.prefix(min(off, bytes.count)).filter { $0 == 0x0A }.count
    }
}
