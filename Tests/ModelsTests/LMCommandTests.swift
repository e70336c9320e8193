import Foundation
import XCTest
import Tensor
import TestSupport
@testable import Models

/// Runs the real `unimoe` executable (from `$UNIMOE_BIN`, else the build folder of this test
/// bundle) and captures its exit status and output.
enum UnimoeProcess {
    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    static func binary() throws -> String {
        var candidates: [String] = []
        if let dir = ProcessInfo.processInfo.environment["UNIMOE_BIN"] { candidates.append(dir + "/unimoe") }
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        candidates.append(me.appendingPathComponent("unimoe").path)
        candidates.append(Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("unimoe").path)
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw ModelError.invalidInput("no unimoe executable in \(candidates); build it (swift build) or set UNIMOE_BIN")
        }
        return found
    }

    static func run(_ args: [String]) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try binary())
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }
}

/// `unimoe logits` and `unimoe generate` against the transformers fixtures, and their error exits.
final class LMCommandTests: XCTestCase {
    func testLogitsCommandMatchesTransformers() throws {
        for f in LMFixture.all {
            let out = NSTemporaryDirectory() + "/logits-\(UUID().uuidString).f32"
            defer { try? FileManager.default.removeItem(atPath: out) }
            let ids = try f.ids
            let r = try UnimoeProcess.run(["logits", "--model", f.directory, "--ids", ids.map(String.init).joined(separator: ","), "--out", out])
            XCTAssertEqual(r.status, 0, "\(f.name): \(r.stderr)")
            let data = try Data(contentsOf: URL(fileURLWithPath: out))
            let got = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            assertClose(got, try f.logits, f.tolerance, "\(f.name) CLI logits")
        }
    }

    func testGenerateCommandGreedyMatchesTransformers() throws {
        for f in LMFixture.all {
            let r = try UnimoeProcess.run(["generate", "--model", f.directory, "--ids", try f.promptIds.map(String.init).joined(separator: ","),
                                           "--max-new-tokens", "32", "--json"])
            XCTAssertEqual(r.status, 0, "\(f.name): \(r.stderr)")
            let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            XCTAssertEqual(obj?["ids"] as? [Int], try f.greedy, f.name)
        }
    }

    func testGeneratePromptTextAndStreaming() throws {
        let f = LMFixture.all[4]
        let exp = try f.expected
        let prompt = try XCTUnwrap(exp["prompt_text"] as? String), text = try XCTUnwrap(exp["greedy_text"] as? String)
        let base = ["generate", "--model", f.directory, "--prompt", prompt, "--max-new-tokens", "32"]
        let j = try UnimoeProcess.run(base + ["--json"])
        XCTAssertEqual(j.status, 0, j.stderr)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(obj["ids"] as? [Int], try f.greedy)
        XCTAssertEqual(obj["text"] as? String, text)
        XCTAssertEqual(j.stdout.split(separator: "\n").count, 1)
        let s = try UnimoeProcess.run(base)
        XCTAssertEqual(s.status, 0, s.stderr)
        XCTAssertEqual(s.stdout, text + "\n")
        // Seeded sampling: same seed, same ids.
        let sample = base + ["--json", "--temperature", "0.9", "--top-p", "0.9", "--top-k", "40", "--seed", "11"]
        XCTAssertEqual(try UnimoeProcess.run(sample).stdout, try UnimoeProcess.run(sample).stdout)
    }

    func testUsageErrorsExit64() throws {
        let d = LMFixture.all[0].directory
        for args in [["logits", "--model", d, "--out", "/tmp/x"],
                     ["logits", "--model", d, "--ids", "1,x", "--out", "/tmp/x"],
                     ["generate", "--model", d, "--max-new-tokens", "3"],
                     ["generate", "--model", d, "--ids", "1", "--prompt", "hi", "--max-new-tokens", "3"],
                     ["generate", "--model", d, "--ids", "1"],
                     ["generate", "--model", d, "--ids", "1", "--max-new-tokens", "3", "--top-p", "0"]] {
            let r = try UnimoeProcess.run(args)
            XCTAssertEqual(r.status, 64, "\(args): \(r.stderr)")
        }
    }

    /// Broken model directories: exit 1 with exactly one line on stderr naming the problem.
    func testModelErrorsExit1WithOneLine() throws {
        let src = LMFixture.all[4].directory
        func check(_ dir: TempModelDir, _ needle: String, logits: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws {
            let all = [["logits", "--model", dir.path, "--ids", "1,2", "--out", dir.file("out.f32")],
                       ["generate", "--model", dir.path, "--ids", "1,2", "--max-new-tokens", "2"]]
            for cmd in logits ? all : [all[1]] {
                let r = try UnimoeProcess.run(cmd)
                XCTAssertEqual(r.status, 1, "\(cmd[0]): \(r.stderr)", file: file, line: line)
                let lines = r.stderr.split(separator: "\n")
                XCTAssertEqual(lines.count, 1, "\(cmd[0]) stderr: \(r.stderr)", file: file, line: line)
                XCTAssertTrue(r.stderr.contains(needle), "\(cmd[0]) stderr \(r.stderr) lacks \(needle)", file: file, line: line)
                XCTAssertEqual(r.stdout, "", file: file, line: line)
            }
        }
        let malformed = try TempModelDir(copying: src)
        try "{\"model_type\": \"unimoe\",".write(toFile: malformed.file("config.json"), atomically: true, encoding: .utf8)
        try check(malformed, "config.json")
        let badValue = try TempModelDir(copying: src)
        var cfg = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: badValue.file("config.json")))) as? [String: Any])
        cfg["num_attention_heads"] = 5
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: badValue.file("config.json")))
        try check(badValue, "num_attention_heads")
        let missing = try TempModelDir(copying: src)
        try missing.editTensors { $0.removeAll { $0.0 == "model.norm.weight" } }
        try check(missing, "model.norm.weight")
        let extra = try TempModelDir(copying: src)
        try extra.editTensors { $0.append(("model.extra.weight", Tensor(zeros: [2]))) }
        try check(extra, "model.extra.weight")
        let shape = try TempModelDir(copying: src)
        try shape.editTensors { l in
            if let i = l.firstIndex(where: { $0.0 == "lm_head.weight" }) { l[i].1 = Tensor(zeros: [10, 64]) }
        }
        try check(shape, "lm_head.weight")
        let badTok = try TempModelDir(copying: src)
        try "{\"model\": 3}".write(toFile: badTok.file("tokenizer.json"), atomically: true, encoding: .utf8)
        try check(badTok, "tokenizer.json", logits: false)   // logits needs no tokenizer
    }
}
