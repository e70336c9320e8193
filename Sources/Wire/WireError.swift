/// Everything that can go wrong on the wire, each case saying what happened and where, so a log line
/// or an error reply is enough to act on.
public enum WireError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A ZeroMQ call returned -1: the function, errno and `zmq_strerror` text.
    case zmq(function: String, code: Int32, message: String)
    /// A wait ran past its deadline.
    case timeout(String)
    /// A received message failed validation (bad magic, version, kind, frame count, sizes, limits).
    case malformed(String)
    /// The peer answered with an error reply; the text is the peer's message.
    case remote(String)
    /// No live worker can take the job (none announced this service before the deadline).
    case unavailable(String)
    /// The socket was already closed.
    case closed

    public var description: String {
        switch self {
        case .zmq(let f, let code, let m): return "\(f) failed: \(m) (errno \(code))"
        case .timeout(let what): return "timed out: \(what)"
        case .malformed(let what): return "malformed message: \(what)"
        case .remote(let m): return m
        case .unavailable(let what): return "no worker available: \(what)"
        case .closed: return "socket already closed"
        }
    }
}
