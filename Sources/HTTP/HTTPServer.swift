import CMicroHTTPD
import Foundation

/// An HTTP/1.1 server on libmicrohttpd: MHD parses the protocol (headers, chunked bodies,
/// `Expect: 100-continue`, keep-alive) and runs one thread per connection; this class bridges its C
/// callbacks to an `HTTPHandler`. Per request it hands the body to the handler's `HTTPBodyConsumer`
/// as it arrives, or buffers it up to `limits.maxBody` (refusing
/// a larger declared length before reading any of it; a longer chunked body is dropped as it comes
/// and answered 413 at its end), then calls the handler on that connection's thread. Streamed
/// bodies are pulled from an `HTTPStreamSource` as the client takes them.
///
/// The C side reaches Swift objects only through `Unmanaged` context pointers that live exactly as
/// long as what they belong to: the server (until `stop()`), one request's `Exchange` (until MHD
/// reports the request completed) and one streamed response's `StreamBody` (until MHD frees the
/// response). `@unchecked Sendable`: after `start` the only mutable state is `daemon`, touched by
/// `stop()` alone; per-request state is confined to that request's connection thread.
public final class HTTPServer: @unchecked Sendable {
    public let handler: any HTTPHandler
    public let limits: HTTPLimits
    /// The port listened on (the one picked when started with port 0).
    public private(set) var port: UInt16 = 0
    private var daemon: OpaquePointer?

    /// Starts serving `host:port` (IPv4 address; port 0 picks a free one) right away.
    public init(host: String, port: UInt16, limits: HTTPLimits, handler: any HTTPHandler) throws {
        self.handler = handler
        self.limits = limits
        let me = Unmanaged.passUnretained(self).toOpaque()
        daemon = CMHD_start(host, port, UInt32(clamping: limits.maxConnections), UInt32(clamping: limits.idleTimeout),
                            limits.connectionMemory, accessHandler, me, requestCompleted, me)
        guard let daemon else {
            throw HTTPError.cannotStart(address: "\(host):\(port)", reason: String(cString: strerror(errno)))
        }
        self.port = CMHD_bound_port(daemon)
    }

    /// Closes the listening socket and every connection, waiting for their threads.
    public func stop() {
        if let d = daemon { MHD_stop_daemon(d) }
        daemon = nil
    }

    deinit { stop() }

    // MARK: - per request

    /// One request on its connection thread: its head, the body so far, whether it was answered.
    final class Exchange {
        var request: HTTPRequest
        var answered = false
        /// Set when the body broke a limit: the rest is dropped and this is the answer.
        var refusal: HTTPRefusal?
        /// Bytes of a refused body dropped so far.
        var discarded = 0
        /// Takes the body as it arrives when the handler asked for that; nil once it answered.
        var consumer: (any HTTPBodyConsumer)?
        var consumerStopped = false
        /// Body bytes seen by `consumer`.
        var received = 0
        init(_ request: HTTPRequest) { self.request = request }
        deinit { consumer?.abandon() }  // the connection ended before the body did
    }

    /// Handles one call of MHD's access handler (first call: head; then body pieces; last: done).
    fileprivate func access(_ connection: OpaquePointer, method: String, url: String,
                            upload: UnsafeRawBufferPointer?, uploadSize: UnsafeMutablePointer<Int>,
                            context: UnsafeMutablePointer<UnsafeMutableRawPointer?>) -> MHD_Result {
        guard let existing = context.pointee else {
            let path = String(url.prefix { $0 != "?" })
            let ex = Exchange(HTTPRequest(method: method, path: path, headers: HTTPServer.headers(of: connection)))
            context.pointee = Unmanaged.passRetained(ex).toOpaque()
            if let declared = ex.request.contentLength, declared > UInt64(limits.maxBody) {
                return answer(ex, handler.refused(ex.request, .tooLarge(limit: limits.maxBody)), on: connection)
            }
            if let early = handler.head(ex.request) { return answer(ex, early, on: connection) }
            ex.consumer = handler.consumer(for: ex.request)
            return mhdYes
        }
        let ex = Unmanaged<Exchange>.fromOpaque(existing).takeUnretainedValue()
        if uploadSize.pointee > 0 {
            let n = uploadSize.pointee
            uploadSize.pointee = 0
            if ex.answered { return mhdYes }
            if let consumer = ex.consumer {
                ex.received += n
                if ex.refusal == nil && ex.received > limits.maxBody { ex.refusal = .tooLarge(limit: limits.maxBody) }
                if ex.refusal == nil && !ex.consumerStopped, let upload {
                    ex.consumerStopped = !consumer.consume(UnsafeRawBufferPointer(rebasing: upload.prefix(n)))
                }
                return ex.received > 2 * limits.maxBody ? mhdNo : mhdYes  // as for a buffered body, below
            }
            if ex.refusal == nil && ex.request.body.count + n > limits.maxBody { ex.refusal = .tooLarge(limit: limits.maxBody) }
            if ex.refusal != nil {
                // MHD cannot answer in the middle of a body: drop it as it comes and answer at its
                // end — unless the client goes on for another `maxBody`, then hang up.
                ex.discarded += ex.request.body.count + n
                ex.request.body = Data()
                return ex.discarded > 2 * limits.maxBody ? mhdNo : mhdYes
            }
            if let upload { ex.request.body.append(contentsOf: upload.prefix(n)) }
            return mhdYes
        }
        if ex.answered { return mhdYes }
        if let consumer = ex.consumer {
            CMHD_set_timeout(connection, UInt32(clamping: limits.responseTimeout))
            ex.consumer = nil
            return answer(ex, consumer.finish(refusal: ex.refusal), on: connection)
        }
        if let why = ex.refusal { return answer(ex, handler.refused(ex.request, why), on: connection) }
        // The request is in: generation may be slow, so the short arrival timeout no longer applies.
        CMHD_set_timeout(connection, UInt32(clamping: limits.responseTimeout))
        return answer(ex, handler.handle(ex.request), on: connection)
    }

    private func answer(_ ex: Exchange, _ response: HTTPResponse, on connection: OpaquePointer) -> MHD_Result {
        ex.answered = true
        let made: OpaquePointer?
        let status: Int
        let headers: [String: String]
        switch response {
        case .full(let s, let h, let body):
            status = s
            headers = h
            made = body.withUnsafeBytes { b in
                MHD_create_response_from_buffer(b.count, UnsafeMutableRawPointer(mutating: b.baseAddress), MHD_ResponseMemoryMode(rawValue: 2)!)
            }
        case .stream(let s, let h, let source):
            status = s
            headers = h
            let box = Unmanaged.passRetained(StreamBody(source)).toOpaque()
            made = MHD_create_response_from_callback(CMHD_size_unknown(), 16 << 10, streamRead, box, streamFree)
            if made == nil { streamFree(box) }
        }
        guard let r = made else { return mhdNo }
        defer { MHD_destroy_response(r) }
        for (k, v) in headers { _ = MHD_add_response_header(r, k, v) }
        return MHD_queue_response(connection, UInt32(status), r)
    }

    /// Request headers, names lower-cased.
    static func headers(of connection: OpaquePointer) -> [String: String] {
        let box = HeaderBox()
        withExtendedLifetime(box) {
            _ = MHD_get_connection_values(connection, MHD_ValueKind(rawValue: 1)!, collectHeader, Unmanaged.passUnretained(box).toOpaque())
        }
        return box.values
    }

    final class HeaderBox { var values: [String: String] = [:] }
}

/// A streamed response's source and the bytes of its current piece not yet taken by MHD.
final class StreamBody {
    let source: any HTTPStreamSource
    var pending = Data()
    var ended = false
    init(_ source: any HTTPStreamSource) { self.source = source }
}

// MHD's closed C enums, by value (MHD_YES = 1, MHD_RESPMEM_MUST_COPY = 2, MHD_HEADER_KIND = 1).
private let mhdYes = MHD_Result(rawValue: 1)!
private let mhdNo = MHD_Result(rawValue: 0)!

// MARK: - C callbacks (no captures: they find their objects through the context pointers)

private let accessHandler: MHD_AccessHandlerCallback = { cls, connection, url, method, _, upload, uploadSize, context in
    guard let cls, let connection, let url, let method, let uploadSize, let context else { return mhdNo }
    let server = Unmanaged<HTTPServer>.fromOpaque(cls).takeUnretainedValue()
    let bytes = upload.map { UnsafeRawBufferPointer(start: $0, count: uploadSize.pointee) }
    return server.access(connection, method: String(cString: method), url: String(cString: url),
                         upload: bytes, uploadSize: uploadSize, context: context)
}

private let requestCompleted: MHD_RequestCompletedCallback = { _, _, context, _ in
    guard let context, let ex = context.pointee else { return }
    Unmanaged<HTTPServer.Exchange>.fromOpaque(ex).release()
    context.pointee = nil
}

private let collectHeader: MHD_KeyValueIterator = { cls, _, key, value in
    guard let cls, let key else { return mhdYes }
    let box = Unmanaged<HTTPServer.HeaderBox>.fromOpaque(cls).takeUnretainedValue()
    box.values[String(cString: key).lowercased()] = value.map { String(cString: $0) } ?? ""
    return mhdYes
}

private let streamRead: MHD_ContentReaderCallback = { cls, _, buf, max in
    guard let cls, let buf, max > 0 else { return CMHD_end_with_error() }
    let body = Unmanaged<StreamBody>.fromOpaque(cls).takeUnretainedValue()
    while body.pending.isEmpty {
        if body.ended { return CMHD_end_of_stream() }
        guard let next = body.source.next() else {
            body.ended = true
            return CMHD_end_of_stream()
        }
        body.pending = next
    }
    let n = min(max, body.pending.count)
    body.pending.withUnsafeBytes { src in UnsafeMutableRawPointer(buf).copyMemory(from: src.baseAddress!, byteCount: n) }
    body.pending.removeFirst(n)
    return n
}

private let streamFree: MHD_ContentReaderFreeCallback = { cls in
    guard let cls else { return }
    let body = Unmanaged<StreamBody>.fromOpaque(cls).takeRetainedValue()
    body.source.close()
}
