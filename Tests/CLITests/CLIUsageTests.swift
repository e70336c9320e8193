import XCTest
import Foundation
import Options
import UnimoeCLI
import TestSupport

/// The `unimoe` binary's usage contract, checked on the real executable: usage errors exit 64 with
/// the usage on stderr, help exits 0, and every registered command honours `--help` and rejects an
/// unknown option the same way.
final class CLIUsageTests: XCTestCase {
    func unimoe(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let r = try Binaries.unimoe(args, timeout: 60)
        XCTAssertFalse(r.timedOut, "unimoe \(args) timed out", file: file, line: line)
        return r
    }

    func testNoArgumentsIsUsageError() throws {
        let r = try unimoe([])
        XCTAssertEqual(r.status, 64)
        XCTAssertTrue(r.stderr.hasPrefix("usage: unimoe <command> [options]"), r.stderr)
        XCTAssertEqual(r.stdout, "")
    }

    func testHelpExitsZeroAndListsEveryCommand() throws {
        for spelling in ["help", "--help", "-h"] {
            let r = try unimoe([spelling])
            XCTAssertEqual(r.status, 0, spelling)
            XCTAssertTrue(r.stdout.hasPrefix("usage: unimoe <command> [options]\ncommands:\n"), r.stdout)
            XCTAssertEqual(r.stderr, "")
            for cmd in allCommands {
                XCTAssertTrue(r.stdout.contains("  " + cmd.usage + "\n"), "help should list '\(cmd.usage)'")
            }
        }
    }

    func testUnknownCommand() throws {
        let r = try unimoe(["frobnicate", "--x"])
        XCTAssertEqual(r.status, 64)
        XCTAssertTrue(r.stderr.hasPrefix("unimoe: unknown command 'frobnicate'\nusage: unimoe"), r.stderr)
        XCTAssertEqual(r.stdout, "")
    }

    func testEveryCommandHasHelp() throws {
        for cmd in allCommands {
            let r = try unimoe([cmd.name, "--help"])
            XCTAssertEqual(r.status, 0, cmd.name)
            XCTAssertEqual(r.stdout, "usage: unimoe \(cmd.usage)\n")
        }
    }

    func testEveryCommandRejectsUnknownOption() throws {
        for cmd in allCommands {
            let r = try unimoe([cmd.name, "--no-such-option-xyz"])
            XCTAssertEqual(r.status, 64, "\(cmd.name): \(r.stderr)")
            XCTAssertTrue(r.stderr.hasPrefix("unimoe \(cmd.name): "), r.stderr)
            XCTAssertTrue(r.stderr.hasSuffix("\nusage: unimoe \(cmd.usage)\n"), r.stderr)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1 + cmd.usage.split(separator: "\n").count, r.stderr)
            XCTAssertEqual(r.stdout, "", cmd.name)
        }
    }

    // MARK: The runner helper itself

    func testRunProcessFeedsStdinAndSeparatesStreams() throws {
        let big = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 % 251) })
        let r = try runProcess("/bin/sh", ["-c", "cat; echo err >&2; exit 3"], stdin: big)
        XCTAssertEqual(r.status, 3)
        XCTAssertEqual(r.stdoutData, big)
        XCTAssertEqual(r.stderr, "err\n")
        XCTAssertFalse(r.timedOut)
        let env = try runProcess("/bin/sh", ["-c", "echo $UNIMOE_TEST_VALUE"], environment: ["UNIMOE_TEST_VALUE": "v1"])
        XCTAssertEqual(env.stdoutLines, ["v1"])
    }

    func testRunProcessTimesOut() throws {
        let start = Date()
        let r = try runProcess("/bin/sleep", ["30"], timeout: 0.5)
        XCTAssertTrue(r.timedOut)
        XCTAssertEqual(r.status, 128 + SIGTERM)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
    }

    func testRunProcessMissingBinary() {
        XCTAssertThrowsError(try runProcess("/nonexistent/unimoe", [])) { e in
            XCTAssertTrue("\(e)".contains("not an executable file"), "\(e)")
        }
    }
}

/// Exit-code mapping of `CLI.main`, in process, with commands made for the test.
final class CLIDispatchTests: XCTestCase {
    enum Fails: Command {
        static let name = "fails"
        static let usage = "fails [--mode usage|error]"
        struct Boom: Error, CustomStringConvertible { var description: String { "boom happened" } }
        static func run(_ args: [String]) throws {
            let a = try Arguments(args, valued: ["mode"])
            switch a.value("mode") {
            case "usage": throw UsageError("bad mode")
            case "error": throw Boom()
            default: return
            }
        }
    }

    func testExitCodes() {
        let cmds: [any Command.Type] = [Fails.self]
        XCTAssertEqual(CLI.main(["unimoe", "fails"], commands: cmds), 0)
        XCTAssertEqual(CLI.main(["unimoe", "fails", "--mode", "usage"], commands: cmds), 64)
        XCTAssertEqual(CLI.main(["unimoe", "fails", "--mode"], commands: cmds), 64)
        XCTAssertEqual(CLI.main(["unimoe", "fails", "--bogus"], commands: cmds), 64)
        XCTAssertEqual(CLI.main(["unimoe", "fails", "--mode", "error"], commands: cmds), 1)
        XCTAssertEqual(CLI.main(["unimoe", "fails", "--help"], commands: cmds), 0)
        XCTAssertEqual(CLI.main(["unimoe"], commands: cmds), 64)
        XCTAssertEqual(CLI.main(["unimoe", "other"], commands: cmds), 64)
        XCTAssertEqual(CLI.main(["unimoe", "help"], commands: cmds), 0)
    }
}
