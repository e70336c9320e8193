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

    /// Asks `question` about the files in `files` (one per `request.media` item); see `ask(_:uploads:cancelled:onToken:)`.
    public func ask(_ request: AskRequest, files: [String], onToken: (Int, String) -> Void = { _, _ in }) throws -> Answer {
        try ask(request, uploads: files.map { .file($0) }, onToken: onToken)
    }

    /// Asks `request.question` about `uploads` (one per `request.media` item, each sent in chunks
    /// as it is read); `onToken` sees every generated id and the text it completes. `cancelled` is
    /// polled while waiting (at least every 0.1 s) and after each token: once it says true the
    /// coordinator is sent CANCEL (it frees the sequence) and `StageError.cancelled` is thrown.
    /// Throws `StageError.stage` with the pipeline's message when the request fails (an undecodable
    /// input is named in it by its `MediaItem.name`).
    public func ask(_ request: AskRequest, uploads: [UploadSource], cancelled: () -> Bool = { false },
                    onToken: (Int, String) -> Void = { _, _ in }) throws -> Answer {
        guard uploads.count == request.media.count else { throw StageError.badRequest("\(uploads.count) files for \(request.media.count) media items") }
        var readers: [UploadReader] = []
        for u in uploads { readers.append(try UploadReader(u)) }
        let id = nextID
        nextID &+= 1
        try socket.send(try Message.json(.ask, request, requestID: id))
        for (i, r) in readers.enumerated() {
            var seq: UInt32 = 0
            var chunk = r.read(chunkSize)
            repeat {
                let next = r.read(chunkSize)
                try socket.send(Message(.mediaChunk, requestID: id, sequence: seq, layer: Int32(i), flags: next.isEmpty ? .last : [], payload: chunk))
                seq += 1
                chunk = next
            } while !chunk.isEmpty
        }
        func abandon() throws -> Never {
            try? socket.send(Message(.cancel, requestID: id))
            throw StageError.cancelled
        }
        struct Token: Codable { var id: Int; var text: String }
        var lastWord = monotonicSeconds()
        while true {
            if cancelled() { try abandon() }
            guard let frames = try socket.receive(timeout: min(0.1, max(0, timeout - (monotonicSeconds() - lastWord)))) else {
                if monotonicSeconds() - lastWord < timeout { continue }
                try? socket.send(Message(.cancel, requestID: id))
                throw WireError.timeout("no word from the coordinator at \(endpoint) for \(Int(timeout)) s (is the pipeline running?)")
            }
            let m = try Message(frames: frames)
            guard m.requestID == id else { continue }
            lastWord = monotonicSeconds()
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

/// Where one media input's bytes come from on the client side: a file, read as it is sent (`unimoe
/// ask`), or bytes already in memory (the HTTP gateway's decoded `data:` URLs).
public enum UploadSource: Sendable, Equatable {
    case file(String)
    case bytes(Data)
}

/// Reads an `UploadSource` in chunks. An empty chunk means the end.
private final class UploadReader {
    private let handle: FileHandle?
    private let data: Data
    private var offset = 0

    init(_ source: UploadSource) throws {
        switch source {
        case .file(let path):
            guard let h = FileHandle(forReadingAtPath: path) else { throw StageError.media(file: path, reason: "cannot open the file") }
            handle = h
            data = Data()
        case .bytes(let d):
            handle = nil
            data = d
        }
    }

    deinit { try? handle?.close() }

    func read(_ count: Int) -> Data {
        if let handle { return handle.readData(ofLength: count) }
        let end = min(data.count, offset + count)
        defer { offset = end }
        return data.subdata(in: data.startIndex + offset ..< data.startIndex + end)
    }
}
