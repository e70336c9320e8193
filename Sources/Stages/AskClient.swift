import Foundation
import Wire

/// The client side of the coordinator's frontend (`unimoe ask`, tests, benchmarks): sends one
/// request, uploads each media file in chunks straight from disk (the pipeline starts decoding
/// while the upload continues), and streams the answer's tokens as they arrive.
public final class AskClient {
    public let endpoint: String
    /// Longest silence from the coordinator before giving up (seconds).
    public var timeout: Double
    /// When set, the longest a whole request may take, answer included (`unimoe ask --timeout`).
    public var requestLimit: Double?
    /// How long a request waits for the coordinator's heartbeat echo before it is sent: a pipeline
    /// that is not running is reported this soon, not after `timeout` (`unimoe ask`: 2 s; 10 s
    /// here, for programs that start a pipeline and ask at once).
    public var probeTimeout: Double = 10
    public var chunkSize = 64 << 10
    let socket: Socket
    private var nextID = UInt64.random(in: 1...(UInt64.max >> 1))

    public init(endpoint: String, timeout: Double = 300) throws {
        self.endpoint = endpoint
        self.timeout = timeout
        socket = try Socket(.dealer)
        try socket.connect(endpoint)
    }

    deinit { socket.close() }

    /// Asks `request.question` about `files` (one per `request.media` item, each sent in chunks
    /// as it is read); `onToken` sees every generated id and the text it completes. `cancelled` is
    /// polled while waiting (at least every 0.1 s) and after each token: once it says true the
    /// coordinator is sent CANCEL (it frees the sequence) and `StageError.cancelled` is thrown.
    /// Throws `StageError.stage` with the pipeline's message when the request fails (an undecodable
    /// input is named in it by its `MediaItem.name`).
    ///
    /// With `early`, its media (uploaded already, announced before the question was known: the
    /// HTTP gateway's parts) are the request's first; `files` holds the rest.
    public func ask(_ request: AskRequest, files: [String], after early: EarlyUploads? = nil,
                    onToken: (Int, String) -> Void = { _, _ in }, cancelled: () -> Bool = { false }) throws -> Answer {
        let sent = early?.announced ?? []
        guard sent.count + files.count == request.media.count, Array(request.media.prefix(sent.count)) == sent else {
            throw StageError.badRequest("\(sent.count) uploaded and \(files.count) files for \(request.media.count) media items")
        }
        var handles: [FileHandle] = []
        for f in files {
            guard let h = FileHandle(forReadingAtPath: f) else { throw StageError.media(file: f, reason: "cannot open the file") }
            handles.append(h)
        }
        defer { for h in handles { try? h.close() } }
        let started = monotonicSeconds()
        let limit = requestLimit.map { started + $0 } ?? .infinity
        var instance = early == nil ? try probe(within: min(probeTimeout, limit - started)) : ""
        var id = early?.id ?? takeID()
        func submit() throws {
            try socket.send(try Message.json(.ask, request, requestID: id))
            for (i, h) in handles.enumerated() {
                try h.seek(toOffset: 0)
                try upload(h, index: sent.count + i, requestID: id)
            }
        }
        try submit()
        func abandon() throws -> Never {
            sendCancel(id)
            throw StageError.cancelled
        }
        struct Token: Codable { var id: Int; var text: String }
        var lastWord = monotonicSeconds()
        // While the coordinator is silent, a heartbeat every 0.5 s: an echo from another instance
        // means it restarted and lost this request, which is then asked again (its files sent
        // again); the tokens already streamed are not streamed twice.
        let pingID = takeID()
        var lastPing = lastWord, streamed = 0, skip = 0, resubmissions = 0
        while true {
            if cancelled() { try abandon() }
            let now = monotonicSeconds()
            if now >= limit {
                sendCancel(id)
                throw WireError.timeout("no answer from the coordinator at \(endpoint) within \(formatSeconds(limit - started)) s (the request's limit)")
            }
            if now - lastWord > 0.5 && now - lastPing > 0.5 {
                try socket.send(Message(.heartbeat, requestID: pingID))
                lastPing = now
            }
            guard let frames = try socket.receive(timeout: min(0.1, limit - now, max(0, timeout - (now - lastWord)))) else {
                if monotonicSeconds() - lastWord < timeout { continue }
                sendCancel(id)
                throw WireError.timeout("no word from the coordinator at \(endpoint) for \(Int(timeout)) s (is the pipeline running?)")
            }
            let m = try Message(frames: frames)
            if m.kind == .heartbeat && m.requestID == pingID {
                let echoed = m.payloadText
                guard !echoed.isEmpty, echoed != instance else { continue }
                if instance.isEmpty { instance = echoed; continue }  // first echo (no probe for early uploads)
                guard early == nil, resubmissions < 3 else {
                    throw StageError.stage("the coordinator at \(endpoint) restarted and lost this request")
                }
                instance = echoed
                resubmissions += 1
                id = takeID()
                skip = streamed
                lastWord = monotonicSeconds()
                try submit()
                continue
            }
            guard m.requestID == id else { continue }
            lastWord = monotonicSeconds()
            switch m.kind {
            case .token:
                let t = try m.decodePayload(Token.self)
                if skip > 0 { skip -= 1; continue }
                streamed += 1
                onToken(t.id, t.text)
            case .done: return try m.decodePayload(Answer.self)
            case .error:
                let text = m.payloadText
                if text.hasPrefix(StageError.busyPrefix) { throw StageError.busy(String(text.dropFirst(StageError.busyPrefix.count))) }
                throw StageError.stage(text)
            default: continue
            }
        }
    }

    /// Sends the coordinator a heartbeat and waits up to `seconds` for its echo, returning the
    /// coordinator's instance id (it changes when the coordinator restarts); throws
    /// `WireError.timeout` naming the endpoint when none comes (nothing listens there, or the
    /// coordinator is down or wedged). Replies to earlier requests that arrive meanwhile are dropped.
    @discardableResult
    public func probe(within seconds: Double) throws -> String {
        let id = takeID()
        try socket.send(Message(.heartbeat, requestID: id))
        let deadline = monotonicSeconds() + max(0, seconds)
        while true {
            let left = deadline - monotonicSeconds()
            guard left > 0, let frames = try socket.receive(timeout: left) else {
                throw WireError.timeout("no coordinator answers at \(endpoint) within \(formatSeconds(seconds)) s (is the pipeline running? `foreman start` starts it)")
            }
            if let m = try? Message(frames: frames), m.kind == .heartbeat, m.requestID == id { return m.payloadText }
        }
    }

    func takeID() -> UInt64 {
        defer { nextID &+= 1 }
        return nextID
    }

    /// Sends one media input in chunks of `chunkSize` read from `file`, LAST on the final one.
    func upload(_ file: FileHandle, index: Int, requestID id: UInt64) throws {
        var seq: UInt32 = 0
        var chunk = file.readData(ofLength: chunkSize)
        repeat {
            let next = file.readData(ofLength: chunkSize)
            try sendChunk(chunk, requestID: id, index: index, sequence: seq, last: next.isEmpty)
            seq += 1
            chunk = next
        } while !chunk.isEmpty
    }

    func sendChunk(_ bytes: Data, requestID: UInt64, index: Int, sequence: UInt32, last: Bool) throws {
        try socket.send(Message(.mediaChunk, requestID: requestID, sequence: sequence, layer: Int32(index), flags: last ? .last : [], payload: bytes))
    }

    /// Tells the coordinator to drop request `id`. A cancel is usually the last thing a client says
    /// before its socket closes, and with the socket's linger 0 ZeroMQ dropped it whenever its I/O
    /// thread had not sent it yet: under a loaded CI run the coordinator kept an HTTP client's
    /// abandoned upload alive (GatewayTests.aLargeBodyIsDecodedWhileItArrives). So the cancel may
    /// outlive the close by 2 s.
    func sendCancel(_ id: UInt64) {
        try? socket.setLinger(2)
        try? socket.send(Message(.cancel, requestID: id))
    }

    /// Starts a request whose media are sent before its question is known; finish it with
    /// `ask(_:files:after:…)` on this client, or `cancel()` it.
    public func begin() -> EarlyUploads { EarlyUploads(client: self, id: takeID()) }

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

/// Media of a request sent before its ASK (docs/PROTOCOL.md: MEDIA_OPEN from a client): the HTTP
/// gateway uploads each part while the body holding the question is still arriving. Each input is
/// announced (`open`), then its bytes follow (`send`), LAST on its final piece; one at a time.
public final class EarlyUploads {
    let client: AskClient
    public let id: UInt64
    /// The inputs announced so far, in order.
    public private(set) var announced: [MediaItem] = []
    private var sequence: UInt32 = 0
    private var open = false

    init(client: AskClient, id: UInt64) {
        self.client = client
        self.id = id
    }

    /// Announces the next input; its bytes follow with `send` (or all at once with `send(file:)`).
    public func open(_ item: MediaItem) throws {
        guard !open else { throw StageError.badRequest("\(announced.last?.name ?? "media"): still open when the next input began") }
        var m = try Message.json(.mediaOpen, item, requestID: id)
        m.layer = Int32(announced.count)
        try client.socket.send(m)
        announced.append(item)
        sequence = 0
        open = true
    }

    /// The next bytes of the input opened last; `last` ends it.
    public func send(_ bytes: Data, last: Bool) throws {
        guard open else { throw StageError.badRequest("media bytes with no open input") }
        try client.sendChunk(bytes, requestID: id, index: announced.count - 1, sequence: sequence, last: last)
        sequence += 1
        if last { open = false }
    }

    /// Sends a whole file as the input opened last.
    public func send(file path: String) throws {
        guard open else { throw StageError.badRequest("media bytes with no open input") }
        guard let h = FileHandle(forReadingAtPath: path) else { throw StageError.media(file: path, reason: "cannot open the file") }
        defer { try? h.close() }
        try client.upload(h, index: announced.count - 1, requestID: id)
        open = false
    }

    /// True while an input's bytes are still being sent.
    public var isOpen: Bool { open }

    /// Abandons the request (the coordinator drops its uploads).
    public func cancel() { client.sendCancel(id) }
}

/// `2`, `0.5`: seconds for a message, without trailing zeros.
func formatSeconds(_ s: Double) -> String {
    s == s.rounded() && abs(s) < 1e15 ? String(Int(s)) : String(format: "%.1f", s)
}
