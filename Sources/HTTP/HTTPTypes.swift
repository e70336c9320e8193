import Foundation

/// One HTTP request as a handler sees it: method, path (query string removed), headers (names
/// lower-cased; a repeated header keeps its last value) and the body received so far — empty when
/// the handler is asked to judge the request by its head alone.
public struct HTTPRequest: Sendable {
    public var method: String
    public var path: String
    public var headers: [String: String]
    public var body: Data

    public init(method: String, path: String, headers: [String: String] = [:], body: Data = Data()) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
    }

    /// The declared body length, when the client sent a well-formed `Content-Length`.
    public var contentLength: UInt64? { headers["content-length"].flatMap { UInt64($0.trimmingCharacters(in: .whitespaces)) } }
}

/// What a handler answers: a complete body, or a body produced while it is sent (chunked).
public enum HTTPResponse: Sendable {
    case full(status: Int, headers: [String: String], body: Data)
    case stream(status: Int, headers: [String: String], source: any HTTPStreamSource)
}

/// A response body written as it is produced (Server-Sent Events). The server calls `next()` on
/// the connection's thread whenever the client can take more, and `close()` exactly once when the
/// response ends — after `next()` returned nil, or earlier when the client went away or the
/// connection failed (the source then abandons its work).
public protocol HTTPStreamSource: AnyObject, Sendable {
    /// The next bytes to send, blocking until there are some; nil ends the body.
    func next() -> Data?
    /// The response is over; the source releases what it holds.
    func close()
}

/// Answers requests. Called on the connection's own thread; may block.
public protocol HTTPHandler: Sendable {
    /// Judges a request by its head (method, path, headers) before its body is read: a response
    /// refuses it at once (401, 404, 415…, the body is never read); nil lets the body come.
    func head(_ request: HTTPRequest) -> HTTPResponse?
    /// Answers a request whose body has fully arrived.
    func handle(_ request: HTTPRequest) -> HTTPResponse
    /// The response for a request the server refused by its limits, in the handler's error format.
    func refused(_ request: HTTPRequest, _ why: HTTPRefusal) -> HTTPResponse
    /// A consumer that takes this request's body as it arrives, instead of the server buffering
    /// it for `handle`; nil (the default) buffers.
    func consumer(for request: HTTPRequest) -> (any HTTPBodyConsumer)?
}

extension HTTPHandler {
    public func consumer(for request: HTTPRequest) -> (any HTTPBodyConsumer)? { nil }
}

/// Takes a request body piece by piece on the connection's thread while it arrives (the server
/// keeps none of it), then answers. Exactly one of `finish` or `abandon` is called.
public protocol HTTPBodyConsumer: AnyObject {
    /// The next piece, readable only during the call; false refuses the rest (it is dropped and
    /// `finish` answers).
    func consume(_ bytes: UnsafeRawBufferPointer) -> Bool
    /// The body is complete — or was cut short by the server's limits (`refusal`): the answer.
    func finish(refusal: HTTPRefusal?) -> HTTPResponse
    /// The connection ended before the body did.
    func abandon()
}

/// Why the server refused a request before the handler saw it.
public enum HTTPRefusal: Sendable, Equatable {
    /// The body is (or declares to be) larger than `HTTPLimits.maxBody` (HTTP 413).
    case tooLarge(limit: Int)
}

/// Bounds that keep one client from exhausting the server.
public struct HTTPLimits: Sendable {
    /// Largest request body (bytes), buffered or consumed; a larger declared or received body is refused.
    public var maxBody: Int
    /// Seconds of silence allowed while a request arrives (slow-loris clients are disconnected).
    public var idleTimeout: Int
    /// Seconds of silence allowed once the request is in and the answer is being produced (0: none).
    public var responseTimeout: Int
    /// Connections open at once at most.
    public var maxConnections: Int
    /// Bytes per connection for its header and read buffers (larger headers are refused by MHD).
    public var connectionMemory: Int

    public init(maxBody: Int = 64 << 20, idleTimeout: Int = 15, responseTimeout: Int = 0, maxConnections: Int = 256,
                connectionMemory: Int = 64 << 10) {
        self.maxBody = maxBody
        self.idleTimeout = idleTimeout
        self.responseTimeout = responseTimeout
        self.maxConnections = maxConnections
        self.connectionMemory = connectionMemory
    }
}

/// Errors of the HTTP server, each saying what to change.
public enum HTTPError: Error, CustomStringConvertible, Sendable {
    case cannotStart(address: String, reason: String)

    public var description: String {
        switch self {
        case .cannotStart(let address, let reason):
            return "cannot listen on \(address): \(reason) (is another process using the port? give another with --listen or \"gateway\": {\"listen\": …})"
        }
    }
}
