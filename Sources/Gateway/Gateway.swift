import Foundation
import HTTP
import Stages
import Wire

/// The OpenAI-compatible front door (docs/HTTP.md): `POST /v1/chat/completions` (JSON or
/// Server-Sent Events), `GET /v1/models`, `GET /health`, in front of the coordinator. Each request
/// is checked (bearer key, content type, body, parts) before anything reaches the pipeline, then
/// asked through its own `AskClient`; errors are OpenAI error objects with their HTTP status.
///
/// `@unchecked Sendable`: called on many connection threads at once; the only mutable state,
/// `active`, is guarded by `lock`.
public final class Gateway: HTTPHandler, @unchecked Sendable {
    /// The coordinator's client endpoint.
    public let endpoint: String
    public let settings: GatewaySettings
    /// The id `GET /v1/models` lists and completions carry: the model directory's name.
    public let model: String
    /// Longest silence from the coordinator before a request fails with 504.
    public let timeout: Double
    private let apiKeys: [String]
    private let started = Int(Date().timeIntervalSince1970)
    private let lock = NSLock()
    private var active = 0

    public init(config: PipelineConfig, settings: GatewaySettings) {
        endpoint = config.frontend
        self.settings = settings
        model = URL(fileURLWithPath: config.model).lastPathComponent
        timeout = config.requestTimeout + 5
        apiKeys = config.apiKeys ?? []
    }

    /// Limits for the HTTP server that match these settings.
    public var limits: HTTPLimits {
        HTTPLimits(maxBody: settings.maxBody, idleTimeout: settings.idleTimeout, responseTimeout: Int(timeout) + 30,
                   maxConnections: settings.maxConnections)
    }

    // MARK: - HTTPHandler

    public func head(_ r: HTTPRequest) -> HTTPResponse? {
        let allowed: String
        switch r.path {
        case "/health", "/v1/models": allowed = "GET"
        case "/v1/chat/completions": allowed = "POST"
        default: return error(.notFound(r.path))
        }
        guard r.method == allowed else { return error(.methodNotAllowed("\(r.path) takes \(allowed), not \(r.method)"), headers: ["Allow": allowed]) }
        if r.path != "/health" && !authorized(r.headers["authorization"]) {
            return error(.unauthorized, headers: ["WWW-Authenticate": "Bearer"])
        }
        if r.method == "POST" {
            let type = r.headers["content-type"] ?? ""
            guard type.lowercased().split(separator: ";").first?.trimmingCharacters(in: .whitespaces) == "application/json" else {
                return error(.unsupportedContentType(type))
            }
            // Refuse before the body's media start uploading (checked again when it is in).
            lock.lock()
            let full = active >= settings.maxRequests
            lock.unlock()
            if full { return error(.busy(limit: settings.maxRequests)) }
        }
        return nil
    }

    /// A chat body is read as it arrives: its media go to the pipeline at once (`ChatBody`).
    public func consumer(for r: HTTPRequest) -> (any HTTPBodyConsumer)? {
        r.path == "/v1/chat/completions" ? ChatBody(self) : nil
    }

    public func handle(_ r: HTTPRequest) -> HTTPResponse {
        if let refused = head(r) { return refused }
        switch r.path {
        case "/health": return health()
        case "/v1/models":
            return json(200, ["object": "list", "data": [["id": model, "object": "model", "created": started, "owned_by": "unimoe"]]])
        default:
            // A chat body that was buffered after all: read it in one piece.
            let body = ChatBody(self)
            _ = r.body.withUnsafeBytes { body.consume($0) }
            return body.finish(refusal: nil)
        }
    }

    public func refused(_ r: HTTPRequest, _ why: HTTPRefusal) -> HTTPResponse {
        switch why {
        case .tooLarge(let limit): return error(.tooLarge(limit: limit))
        }
    }

    // MARK: - endpoints

    private func health() -> HTTPResponse {
        do {
            let stats = try AskClient(endpoint: endpoint, timeout: 2).stats()
            return json(200, ["status": "ok", "model": model, "live_requests": stats["live_requests"] ?? 0])
        } catch {
            return self.error(.unavailable("the coordinator at \(endpoint) does not answer (\(error))"))
        }
    }

    /// Generates the answer to `chat`, whose media `early` uploaded through `client`.
    func complete(_ chat: ChatRequest, client: AskClient, early: EarlyUploads) -> HTTPResponse {
        guard acquire() else {
            early.cancel()
            return error(.busy(limit: settings.maxRequests))
        }
        let gen = Generation(client: client, early: early, request: chat) { [self] in release() }
        let id = Completion(id: "chatcmpl-" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased(),
                            created: Int(Date().timeIntervalSince1970), model: model, request: chat)
        // The status line goes out with the first bytes: wait for the first event, so a request the
        // pipeline refuses (an undecodable part) gets its error status, streaming or not.
        var first: Generation.Event?
        while first == nil { first = gen.next(timeout: 1) }
        if case .failed(let e)? = first { return error(e) }
        if chat.stream {
            return .stream(status: 200, headers: ["Content-Type": "text/event-stream", "Cache-Control": "no-cache"],
                           source: EventStream(gen, first: first!, completion: id))
        }
        var matcher = StopMatcher(chat.stop)
        var text = ""
        var event = first!
        while true {
            switch event {
            case .token(_, let piece): text += matcher.feed(piece)
            case .done(let answer):
                text += matcher.finish()
                return .full(status: 200, headers: ["Content-Type": "application/json"], body: id.body(text: text, answer: answer, stopped: matcher.stopped))
            case .failed(let e): return error(e)
            }
            event = gen.next(timeout: 3600) ?? .failed(.timeout("no event from the generation thread"))
        }
    }

    // MARK: - helpers

    private func authorized(_ header: String?) -> Bool {
        if apiKeys.isEmpty { return true }
        guard let header, header.hasPrefix("Bearer ") else { return false }
        let given = Array(header.dropFirst(7).trimmingCharacters(in: .whitespaces).utf8)
        // Compare every key in full, so the time taken does not reveal how much of one matched.
        var ok = false
        for k in apiKeys {
            let key = Array(k.utf8)
            var diff = key.count ^ given.count
            for i in 0..<key.count { diff |= Int(key[i] ^ (i < given.count ? given[i] : 0)) }
            ok = ok || diff == 0
        }
        return ok
    }

    private func acquire() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard active < settings.maxRequests else { return false }
        active += 1
        return true
    }

    private func release() {
        lock.lock()
        active -= 1
        lock.unlock()
    }

    func error(_ e: GatewayError, headers: [String: String] = [:]) -> HTTPResponse {
        wireLog("gateway", "\(e.status) \(e.code): \(e.description.prefix(300))")
        return .full(status: e.status, headers: headers.merging(["Content-Type": "application/json"]) { a, _ in a }, body: e.body)
    }

    private func json(_ status: Int, _ object: [String: Any]) -> HTTPResponse {
        let body = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return .full(status: status, headers: ["Content-Type": "application/json"], body: body)
    }
}

/// One chat-completions body read as it arrives (`HTTPBodyConsumer`): a `BodyScanner` uploads its
/// media to the pipeline on the way, then the rest is parsed and answered by `Gateway.complete`.
/// Any refusal cancels the uploads, so the coordinator drops them.
final class ChatBody: HTTPBodyConsumer {
    let gateway: Gateway
    private var client: AskClient?
    private var scanner: BodyScanner?
    private var setupFailure: GatewayError?

    init(_ gateway: Gateway) {
        self.gateway = gateway
        do {
            let c = try AskClient(endpoint: gateway.endpoint, timeout: gateway.timeout)
            client = c
            // The non-media JSON is buffered: a conversation's text, not its media.
            scanner = BodyScanner(uploads: c.begin(), fileRoots: gateway.settings.fileRoots, maxSkeleton: min(gateway.settings.maxBody, 8 << 20))
        } catch {
            setupFailure = .unavailable("cannot reach the coordinator at \(gateway.endpoint): \(error)")
        }
    }

    func consume(_ bytes: UnsafeRawBufferPointer) -> Bool { scanner?.feed(bytes) ?? false }

    func finish(refusal: HTTPRefusal?) -> HTTPResponse {
        guard var scanner, let client else { return gateway.error(setupFailure ?? .unavailable("no coordinator client")) }
        scanner.finish()
        self.scanner = nil
        func refuse(_ e: GatewayError) -> HTTPResponse {
            scanner.uploads.cancel()
            return gateway.error(e)
        }
        if let refusal { scanner.uploads.cancel(); return gateway.refused(HTTPRequest(method: "POST", path: "/v1/chat/completions"), refusal) }
        if let f = scanner.failure { return refuse(f) }
        let chat: ChatRequest
        do { chat = try ChatRequest(body: Data(scanner.skeleton), fileRoots: gateway.settings.fileRoots, streamed: scanner.streamed) } catch {
            return refuse(error)
        }
        guard chat.ask.media == scanner.uploads.announced else {
            return refuse(.invalidRequest("the media parts read at the end differ from those uploaded as they arrived"))
        }
        return gateway.complete(chat, client: client, early: scanner.uploads)
    }

    func abandon() { scanner?.uploads.cancel() }
}
