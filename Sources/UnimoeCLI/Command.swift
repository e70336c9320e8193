import Foundation
import Options

/// One `unimoe` subcommand. `run` gets the arguments after the subcommand name; it throws
/// `UsageError` for misuse (exit 64) and anything else for failure (exit 1).
public protocol Command: Sendable {
    static var name: String { get }
    /// One-line usage, shown by `unimoe help` and with usage errors.
    static var usage: String { get }
    static func run(_ args: [String]) throws
}

/// Writes to standard error.
public func printError(_ s: String) {
    FileHandle.standardError.write((s + "\n").data(using: .utf8)!)
}

/// Writes one line to standard output and flushes, so streamed output appears as produced.
public func printLine(_ s: String) {
    FileHandle.standardOutput.write((s + "\n").data(using: .utf8)!)
}

/// Serialises a JSON value the way the CLI contract prints it (compact, keys sorted).
public func jsonLine(_ object: Any) -> String {
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]),
          let s = String(data: data, encoding: .utf8) else { return "{}" }
    return s
}

/// The `unimoe` entry point: dispatches to a subcommand and maps errors to exit codes.
public enum CLI {
    public static func main(_ argv: [String], commands: [Command.Type]) -> Int32 {
        let args = Array(argv.dropFirst())
        let usageAll = "usage: unimoe <command> [options]\ncommands:\n" + commands.map { "  " + $0.usage }.joined(separator: "\n")
        guard let name = args.first else { printError(usageAll); return 64 }
        if name == "help" || name == "--help" || name == "-h" { printLine(usageAll); return 0 }
        guard let cmd = commands.first(where: { $0.name == name }) else {
            printError("unimoe: unknown command '\(name)'\n" + usageAll)
            return 64
        }
        let rest = Array(args.dropFirst())
        if rest.contains("--help") { printLine("usage: unimoe " + cmd.usage); return 0 }
        do {
            try cmd.run(rest)
            return 0
        } catch let e as UsageError {
            printError("unimoe \(name): \(e.message)\nusage: unimoe \(cmd.usage)")
            return 64
        } catch {
            printError("unimoe \(name): \(error)")
            return 1
        }
    }
}
