import CZeroMQ
import Foundation

#if _endian(big)
#error("the wire format is little-endian and tensors are sent as raw bytes; big-endian hosts need byte swapping")
#endif

/// Turns a ZeroMQ `-1` return into a `WireError.zmq` carrying the function name and `zmq_strerror`,
/// reading `zmq_errno` right after the failing call.
@discardableResult
func check(_ rc: Int32, _ function: String) throws -> Int32 {
    if rc == -1 {
        let code = CZeroMQ_errno()
        let text = zmq_strerror(code).map { String(cString: $0) } ?? "unknown error"
        throw WireError.zmq(function: function, code: code, message: text)
    }
    return rc
}

/// The text in a NUL-terminated C buffer libzmq filled (an endpoint, a Z85 key).
func string(fromCString chars: [CChar]) -> String {
    String(decoding: chars.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The process's ZeroMQ context (I/O threads shared by every socket).
///
/// `@unchecked Sendable`: ZeroMQ contexts are documented as thread-safe; the pointer never changes.
public final class WireContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    /// One per process; never terminated (sockets close with linger 0, so exit does not block).
    public static let shared = WireContext()

    private init() {
        // zmq_ctx_new only fails on out-of-memory, which we cannot recover from anyway.
        handle = zmq_ctx_new()
    }
}

/// One ZeroMQ socket. Not thread-safe (as ZeroMQ sockets are not): create it on, and use it from,
/// one thread. Closed with linger 0 so a dying peer never blocks shutdown; `deinit` closes it too.
public final class Socket {
    /// The socket patterns this project uses.
    public enum Kind: Sendable {
        case router, dealer, req, rep, pub, sub, pair

        var zmqType: Int32 {
            switch self {
            case .router: return ZMQ_ROUTER
            case .dealer: return ZMQ_DEALER
            case .req: return ZMQ_REQ
            case .rep: return ZMQ_REP
            case .pub: return ZMQ_PUB
            case .sub: return ZMQ_SUB
            case .pair: return ZMQ_PAIR
            }
        }
    }

    public let kind: Kind
    private var handle: UnsafeMutableRawPointer?
    /// Longest a send may block on a full queue before it throws `timeout` (seconds).
    public var sendTimeout: Double = 30 {
        didSet { try? setInt(ZMQ_SNDTIMEO, Int32(sendTimeout * 1000), "ZMQ_SNDTIMEO") }
    }

    public init(_ kind: Kind, context: WireContext = .shared) throws {
        self.kind = kind
        guard let h = zmq_socket(context.handle, kind.zmqType) else {
            try check(-1, "zmq_socket")
            throw WireError.closed
        }
        handle = h
        try setInt(ZMQ_LINGER, 0, "ZMQ_LINGER")
        if kind == .router {
            // Unroutable sends fail (EHOSTUNREACH) instead of vanishing: the dispatcher must know.
            try setInt(ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY")
        }
        if kind == .sub { try setBytes(ZMQ_SUBSCRIBE, [], "ZMQ_SUBSCRIBE") }
        try setInt(ZMQ_SNDTIMEO, Int32(sendTimeout * 1000), "ZMQ_SNDTIMEO")
    }

    deinit { close() }

    /// Gives the raw `void *` to code that needs it (polling); nil after `close`.
    public func withUnsafeHandle<R>(_ body: (UnsafeMutableRawPointer) throws -> R) throws -> R {
        guard let h = handle else { throw WireError.closed }
        return try body(h)
    }

    public var isClosed: Bool { handle == nil }

    public func close() {
        if let h = handle {
            zmq_close(h)
            handle = nil
        }
    }

    public func bind(_ endpoint: String) throws {
        try WireSecurity.secure(self, endpoint: endpoint, server: true)
        try withUnsafeHandle { h in _ = try check(zmq_bind(h, endpoint), "zmq_bind(\(endpoint))") }
    }

    public func connect(_ endpoint: String) throws {
        try WireSecurity.secure(self, endpoint: endpoint, server: false)
        try withUnsafeHandle { h in _ = try check(zmq_connect(h, endpoint), "zmq_connect(\(endpoint))") }
    }

    /// The endpoint actually bound (resolves `tcp://127.0.0.1:*` to the chosen port).
    public func lastEndpoint() throws -> String {
        var buf = [CChar](repeating: 0, count: 256)
        var len = buf.count
        try withUnsafeHandle { h in
            _ = try check(zmq_getsockopt(h, ZMQ_LAST_ENDPOINT, &buf, &len), "zmq_getsockopt(ZMQ_LAST_ENDPOINT)")
        }
        return string(fromCString: buf)
    }

    /// Routing id this socket announces (DEALER) — set before `connect`.
    public func setIdentity(_ id: [UInt8]) throws { try setBytes(ZMQ_ROUTING_ID, id, "ZMQ_ROUTING_ID") }

    /// Largest inbound message ZeroMQ accepts; bigger ones drop the connection before we see them.
    public func setMaxMessageSize(_ bytes: Int64) throws {
        var v = bytes
        try withUnsafeHandle { h in
            _ = try check(zmq_setsockopt(h, ZMQ_MAXMSGSIZE, &v, MemoryLayout<Int64>.size), "zmq_setsockopt(ZMQ_MAXMSGSIZE)")
        }
    }

    /// How long messages still queued when this socket closes go on being sent (seconds; from
    /// `init`, 0: dropped at once). `zmq_close` never waits for them, and the context is never
    /// terminated, so nothing blocks on it.
    public func setLinger(_ seconds: Double) throws {
        try setInt(ZMQ_LINGER, Int32(clamping: Int((seconds * 1000).rounded())), "ZMQ_LINGER")
    }

    public func setInt(_ option: Int32, _ value: Int32, _ name: String) throws {
        var v = value
        try withUnsafeHandle { h in
            _ = try check(zmq_setsockopt(h, option, &v, MemoryLayout<Int32>.size), "zmq_setsockopt(\(name))")
        }
    }

    public func setBytes(_ option: Int32, _ value: [UInt8], _ name: String) throws {
        try withUnsafeHandle { h in
            _ = try value.withUnsafeBytes { b in
                try check(zmq_setsockopt(h, option, b.baseAddress, b.count), "zmq_setsockopt(\(name))")
            }
        }
    }

    /// Sends the frames as one multipart message. Blocks at most `sendTimeout` on a full queue.
    public func send(_ frames: [OutFrame]) throws {
        guard !frames.isEmpty else { return }
        try withUnsafeHandle { h in
            for (i, f) in frames.enumerated() {
                let more = i < frames.count - 1
                var msg = zmq_msg_t()
                try f.initMessage(&msg)
                let rc = zmq_msg_send(&msg, h, more ? ZMQ_SNDMORE : 0)
                if rc == -1 {
                    let code = CZeroMQ_errno()
                    zmq_msg_close(&msg)
                    if code == EAGAIN { throw WireError.timeout("send did not complete within \(sendTimeout) s (peer not reading)") }
                    try check(-1, "zmq_msg_send")
                }
            }
        }
    }

    /// Receives one whole multipart message, waiting at most `timeout` seconds (nil: forever).
    /// Returns nil when the deadline passes first.
    public func receive(timeout: Double?) throws -> [InFrame]? {
        if let timeout {
            guard try Poller.wait([self], timeout: timeout).first == true else { return nil }
        }
        return try receiveNow()
    }

    /// Receives one message that `poll` said is ready (or blocks until one is).
    public func receiveNow() throws -> [InFrame] {
        try withUnsafeHandle { h in
            var frames: [InFrame] = []
            while true {
                let frame = InFrame()
                let rc = zmq_msg_recv(frame.msg, h, 0)
                if rc == -1 {
                    if CZeroMQ_errno() == EINTR { continue }
                    try check(-1, "zmq_msg_recv")
                }
                frames.append(frame)
                if zmq_msg_more(frame.msg) == 0 { break }
            }
            return frames
        }
    }
}

/// Waits on several sockets at once (`zmq_poll`).
public enum Poller {
    /// Which of `sockets` have a message ready, after waiting at most `timeout` seconds for any.
    /// An interrupted wait (a signal arrived) returns all false so the caller can check its stop flag.
    public static func wait(_ sockets: [Socket], timeout: Double) throws -> [Bool] {
        var items = try sockets.map { s in
            try s.withUnsafeHandle { h in zmq_pollitem_t(socket: h, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0) }
        }
        let ms = timeout <= 0 ? 0 : max(1, Int(timeout * 1000))
        let rc = zmq_poll(&items, Int32(items.count), ms)
        if rc == -1 {
            if CZeroMQ_errno() == EINTR { return Array(repeating: false, count: sockets.count) }
            try check(-1, "zmq_poll")
        }
        return items.map { ($0.revents & Int16(ZMQ_POLLIN)) != 0 }
    }
}
