import Foundation
import Wire

/// Wall-clock time a stage spent per named step (count and total seconds), so every stage can say
/// where its time went and a slow hop is visible. Reported in stats replies and `--json` answers.
public struct StageTimings: Codable, Sendable, Equatable {
    public struct Entry: Codable, Sendable, Equatable {
        public var count = 0
        public var seconds = 0.0
    }

    public private(set) var entries: [String: Entry] = [:]

    public init() {}

    public mutating func add(_ name: String, seconds: Double, count: Int = 1) {
        entries[name, default: Entry()].count += count
        entries[name, default: Entry()].seconds += seconds
    }

    /// Runs `body`, adding its duration under `name`.
    public mutating func measure<R>(_ name: String, _ body: () throws -> R) rethrows -> R {
        let t0 = monotonicSeconds()
        defer { add(name, seconds: monotonicSeconds() - t0) }
        return try body()
    }

    public mutating func merge(_ other: StageTimings, prefix: String = "") {
        for (k, v) in other.entries { add(prefix + k, seconds: v.seconds, count: v.count) }
    }

    /// Milliseconds per entry, for JSON output.
    public var milliseconds: [String: Double] { entries.mapValues { ($0.seconds * 1e5).rounded() / 100 } }
}
