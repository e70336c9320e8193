import Foundation

/// What a finished subprocess left behind.
public struct ProcessResult: Sendable {
    /// Exit status, or 128 + signal number when a signal ended it (as a shell reports it).
    public let status: Int32
    public let stdoutData: Data
    public let stderrData: Data
    /// True when the timeout ran out and the process was killed.
    public let timedOut: Bool

    public var stdout: String { String(decoding: stdoutData, as: UTF8.self) }
    public var stderr: String { String(decoding: stderrData, as: UTF8.self) }
    /// Non-empty stdout lines.
    public var stdoutLines: [String] { stdout.split(separator: "\n").map(String.init) }
}

/// Failures of the helper itself (not of the process it runs).
public enum ProcessRunError: Error, CustomStringConvertible {
    case notExecutable(String)
    case launchFailed(String, String)

    public var description: String {
        switch self {
        case .notExecutable(let p): return "\(p) is not an executable file (build it first, or set UNIMOE_BIN)"
        case .launchFailed(let p, let why): return "cannot start \(p): \(why)"
        }
    }
}

/// Finds and runs the project's executables for end-to-end tests, so every test that starts a
/// binary does it the same way: pipes drained concurrently (no deadlock on large output), stdin
/// fed from a background thread, and a hard timeout that kills a hung process.
public enum Binaries {
    /// The directory holding the built executables: `$UNIMOE_BIN` (a directory, as scripts/test sets
    /// it, or the `unimoe` binary itself), else the directory of the running test bundle.
    public static var directory: String {
        if let env = ProcessInfo.processInfo.environment["UNIMOE_BIN"], !env.isEmpty {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: env, isDirectory: &isDir), !isDir.boolValue {
                return (env as NSString).deletingLastPathComponent
            }
            return env
        }
        let exe = Bundle.main.executablePath ?? CommandLine.arguments[0]
        var dir = (exe as NSString).deletingLastPathComponent
        // macOS runs tests from inside `X.xctest/Contents/MacOS`; the binaries sit beside the bundle.
        while dir.contains(".xctest") { dir = (dir as NSString).deletingLastPathComponent }
        return dir
    }

    /// Path of a built executable (default `unimoe`).
    public static func path(_ name: String = "unimoe") -> String {
        (directory as NSString).appendingPathComponent(name)
    }

    /// Runs the built `unimoe` with `args`.
    public static func unimoe(_ args: [String], stdin: Data? = nil, environment: [String: String]? = nil,
                              timeout: TimeInterval = 60) throws -> ProcessResult {
        try runProcess(path(), args, stdin: stdin, environment: environment, timeout: timeout)
    }
}

/// Runs `executable` with `args`, optional `stdin` bytes (stdin is closed either way) and extra
/// `environment` entries, waiting at most `timeout` seconds (then SIGTERM, and SIGKILL 2 s later).
public func runProcess(_ executable: String, _ args: [String], stdin: Data? = nil,
                       environment: [String: String]? = nil, currentDirectory: String? = nil,
                       timeout: TimeInterval = 60) throws -> ProcessResult {
    guard FileManager.default.isExecutableFile(atPath: executable) else { throw ProcessRunError.notExecutable(executable) }
    // A child that exits without reading its input must not kill the test runner with SIGPIPE.
    signal(SIGPIPE, SIG_IGN)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    if let environment {
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    }
    if let currentDirectory { p.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
    let inPipe = Pipe(), outPipe = Pipe(), errPipe = Pipe()
    p.standardInput = inPipe
    p.standardOutput = outPipe
    p.standardError = errPipe
    let done = DispatchSemaphore(value: 0)
    p.terminationHandler = { _ in done.signal() }
    do { try p.run() } catch { throw ProcessRunError.launchFailed(executable, "\(error)") }

    // Drain both pipes and feed stdin on their own threads.
    let group = DispatchGroup()
    let outBox = DataBox(), errBox = DataBox()
    for (pipe, box) in [(outPipe, outBox), (errPipe, errBox)] {
        group.enter()
        Thread.detachNewThread {
            box.data = pipe.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
    }
    let input = stdin ?? Data()
    Thread.detachNewThread {
        try? inPipe.fileHandleForWriting.write(contentsOf: input)
        try? inPipe.fileHandleForWriting.close()
    }

    var timedOut = false
    if done.wait(timeout: .now() + timeout) == .timedOut {
        timedOut = true
        p.terminate()
        if done.wait(timeout: .now() + 2) == .timedOut {
            kill(p.processIdentifier, SIGKILL)
            done.wait()
        }
    }
    // A child that forked helpers holding the pipes open must not hang the test forever.
    _ = group.wait(timeout: .now() + 5)
    let status = p.terminationReason == .uncaughtSignal ? 128 + p.terminationStatus : p.terminationStatus
    return ProcessResult(status: status, stdoutData: outBox.data, stderrData: errBox.data, timedOut: timedOut)
}

/// A reader thread's result. `@unchecked Sendable`: every access goes through the lock.
private final class DataBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value = Data()
    var data: Data {
        get { lock.lock(); defer { lock.unlock() }; return value }
        set { lock.lock(); value = newValue; lock.unlock() }
    }
}
