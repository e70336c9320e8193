import Foundation

/// A command-line usage mistake: printed with the usage line, exit code 64 (EX_USAGE).
public struct UsageError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Parsed `--name value`, `--name=value`, `--flag` and positional arguments, checked against the
/// options a command declares. One small parser shared by every executable (we cannot depend on
/// swift-argument-parser); each command wraps it in its own `Options` struct.
public struct Arguments: Sendable {
    public private(set) var values: [String: [String]] = [:]
    public private(set) var flags: Set<String> = []
    public private(set) var positional: [String] = []

    /// - valued: option names (without `--`) that take a value; may repeat.
    /// - flags: option names that take none.
    public init(_ args: [String], valued: Set<String>, flags allowedFlags: Set<String> = []) throws {
        var i = 0
        var onlyPositional = false
        while i < args.count {
            let a = args[i]
            i += 1
            if onlyPositional || !a.hasPrefix("--") || a == "-" {
                positional.append(a); continue
            }
            if a == "--" { onlyPositional = true; continue }
            var name = String(a.dropFirst(2))
            var inline: String?
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            if valued.contains(name) {
                if let inline { values[name, default: []].append(inline); continue }
                guard i < args.count else { throw UsageError("option --\(name) needs a value") }
                // `--model --verbose` is a forgotten value, not a value; `--x=--y` passes one on purpose.
                if args[i].hasPrefix("--") && args[i].count > 2 {
                    throw UsageError("option --\(name) needs a value, got option \(args[i]) (write --\(name)=\(args[i]) if that is the value)")
                }
                values[name, default: []].append(args[i])
                i += 1
            } else if allowedFlags.contains(name) {
                guard inline == nil else { throw UsageError("option --\(name) takes no value") }
                flags.insert(name)
            } else {
                throw UsageError("unknown option --\(name)")
            }
        }
    }

    public func has(_ flag: String) -> Bool { flags.contains(flag) }

    /// Last value given for an option, if any.
    public func value(_ name: String) -> String? { values[name]?.last }

    /// Every value given for a repeatable option, in order.
    public func all(_ name: String) -> [String] { values[name] ?? [] }

    public func required(_ name: String) throws -> String {
        guard let v = value(name) else { throw UsageError("missing required option --\(name)") }
        return v
    }

    public func int(_ name: String, default def: Int? = nil, range: ClosedRange<Int>? = nil) throws -> Int? {
        guard let s = value(name) else { return def }
        guard let v = Int(s) else { throw UsageError("--\(name) needs an integer, got '\(s)'") }
        if let range, !range.contains(v) { throw UsageError("--\(name) must be in \(range.lowerBound)...\(range.upperBound), got \(v)") }
        return v
    }

    public func double(_ name: String, default def: Double? = nil, range: ClosedRange<Double>? = nil) throws -> Double? {
        guard let s = value(name) else { return def }
        guard let v = Double(s), v.isFinite else { throw UsageError("--\(name) needs a number, got '\(s)'") }
        if let range, !range.contains(v) { throw UsageError("--\(name) must be in \(range.lowerBound)...\(range.upperBound), got \(v)") }
        return v
    }

    /// Comma-separated integers, e.g. `--ids 1,5,9`.
    public func intList(_ name: String) throws -> [Int]? {
        guard let s = value(name) else { return nil }
        let parts = s.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        var out: [Int] = []
        for p in parts {
            guard let v = Int(p) else { throw UsageError("--\(name) needs comma-separated integers, got '\(p)'") }
            out.append(v)
        }
        return out
    }
}

