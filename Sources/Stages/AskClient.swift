import Foundation
import Wire

/// The client side of the coordinator's frontend (`unimoe ask`, tests, benchmarks): sends one
/// request, uploads each media file in chunks straight from disk (the pipeline starts decoding
/// while the upload continues), and streams the answer's tokens as they arrive.
public final class AskClient {
    public let endpoint: String
    /// Longest silence from the coordinator before giving up (seconds).
    public var timeout: Double
    public var chunkSize = 64 << 10
    private let socket: Socket
    private var nextID = UInt64.random(in: 1...(UInt64.max >> 1))

    public init(endpoint: String, timeout: Double = 300) throws {
        self.endpoint = endpoint
        self.timeout = timeout
        socket = try Socket(.dealer)
        try socket.connect(endpoint)
    }

    deinit { socket.close() }

    /// Asks `question` about the files in `media` (kind and path each); `onToken` sees every
    /// generated id and the text it completes. Throws `StageError.stage` with the pipeline's
    /// message when the request fails (an undecodable file is named in it).
    public func ask(_ request: AskRequest, files: [String], onToken: (Int, String) -> Void = { _, _ in }) throws -> Answer {
        guard files.count == request.media.count else { throw StageError.badRequest("\(files.count) files for \(request.media.count) media items") }
        var handles: [FileHandle] = []
        for f in files {
            guard let h = FileHandle(forReadingAtPath: f) else { throw StageError.media(file: f, reason: "cannot open the file") }
            handles.append(h)
        }
        defer { for h in handles { try? h.close() } }
        let id = nextID
        nextID &+= 1
        try socket.send(try Message.json(.ask, request, requestID: id))
        for (i, h) in handles.enumerated() {
            var seq: UInt32 = 0
            var chunk = h.readData(ofLength: chunkSize)
            repeat {
                let next = h.readData(ofLength: chunkSize)
                try socket.send(Message(.mediaChunk, requestID: id, sequence: seq, layer: Int32(i), flags: next.isEmpty ? .last : [], payload: chunk))
                seq += 1
                chunk = next
            } while !chunk.isEmpty
        }
        struct Token: Codable { var id: Int; var text: String }
        while true {
            guard let frames = try socket.receive(timeout: timeout) else {
                throw WireError.timeout("no word from the coordinator at \(endpoint) for \(Int(timeout)) s (is the pipeline running?)")
            }
            let m = try Message(frames: frames)
            guard m.requestID == id else { continue }
            switch m.kind {
            case .token:
                let t = try m.decodePayload(Token.self)
                onToken(t.id, t.text)
            case .done: return try m.decodePayload(Answer.self)
            case .error: throw StageError.stage(m.payloadText)
            default: continue
            }
        }
    }

    /// The coordinator's counters, with the router's (and its expert dispatcher's) under `router/`.
    public func stats() throws -> [String: Int] {
        let id = nextID
        nextID &+= 1
        try socket.send(Message(.stats, requestID: id))
        let deadline = monotonicSeconds() + min(timeout, 30)
        while monotonicSeconds() < deadline {
            guard let frames = try socket.receive(timeout: deadline - monotonicSeconds()) else { break }
            let m = try Message(frames: frames)
            if m.requestID == id && m.kind == .statsReply { return try m.decodePayload([String: Int].self) }
        }
        throw WireError.timeout("no stats from the coordinator at \(endpoint)")
    }
}
