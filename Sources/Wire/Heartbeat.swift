import Foundation

/// How often both sides of a dispatcher/worker link say they are alive, and how many silent
/// intervals make a peer dead (the ZeroMQ guide's "Paranoid Pirate" liveness).
public struct HeartbeatPolicy: Sendable, Codable, Equatable {
    /// Seconds between heartbeats.
    public var interval: Double
    /// Intervals of silence after which the peer counts as dead.
    public var liveness: Int

    public init(interval: Double = 1.0, liveness: Int = 4) {
        self.interval = interval
        self.liveness = liveness
    }

    public static let standard = HeartbeatPolicy()

    /// Silence (seconds) that makes a peer dead.
    public var expiry: Double { interval * Double(liveness) }
}

/// What a worker says when it joins: its role and the services it offers. Services are strings such
/// as `expert/3/1` (layer 3, expert 1), `decode`, `encode/image`, `connect/audio`, `router`.
public struct WorkerAnnouncement: Codable, Sendable, Equatable {
    public var role: String
    public var services: [String]
    public var name: String
    public var pid: Int32

    public init(role: String, services: [String], name: String? = nil) {
        self.role = role
        self.services = services
        self.pid = ProcessInfo.processInfo.processIdentifier
        self.name = name ?? "\(role)-\(ProcessInfo.processInfo.processIdentifier)"
    }

    /// The service name of one expert of one layer.
    public static func expertService(layer: Int, expert: Int) -> String { "expert/\(layer)/\(expert)" }
}

/// Monotonic seconds, for deadlines and liveness.
@inline(__always) public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Writes one log line to stderr, prefixed with the process role, so foreman shows who said it.
public func wireLog(_ who: String, _ text: String) {
    FileHandle.standardError.write(Data("[\(who)] \(text)\n".utf8))
}

/// A flag a signal handler (or another thread) sets to ask loops to stop.
///
/// `@unchecked Sendable`: a single word written/read with relaxed atomics semantics via a lock.
public final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    public init() {}
    public var isSet: Bool { lock.lock(); defer { lock.unlock() }; return stopped }
    public func set() { lock.lock(); stopped = true; lock.unlock() }

    /// A flag set by SIGTERM or SIGINT (the signals are otherwise ignored so loops exit cleanly).
    public static func onTerminationSignals() -> StopFlag {
        let flag = StopFlag()
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { flag.set() }
            source.resume()
            flag.sources.append(source)
        }
        return flag
    }
    private var sources: [any DispatchSourceSignal] = []
}
