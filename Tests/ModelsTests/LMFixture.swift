import Foundation
import XCTest
import Tensor
import Checkpoint
import TestSupport
@testable import Models

/// One of the language-model fixtures of `scripts/fixtures/lm.py`: an HF model directory plus the
/// logits PyTorch computed for `ids` and the 32 greedy tokens transformers generated after `prompt`.
struct LMFixture {
    let name: String
    let tolerance: Float
    var directory: String { Fixtures.path("lm/\(name)") }

    static let all: [LMFixture] = [
        LMFixture(name: "llama-gqa", tolerance: 1e-4),
        LMFixture(name: "tied", tolerance: 1e-4),
        LMFixture(name: "mixtral", tolerance: 1e-4),
        LMFixture(name: "mixtral-bf16", tolerance: 1e-2),
        LMFixture(name: "unimoe", tolerance: 1e-4),
        LMFixture(name: "qwen2-moe", tolerance: 1e-4),
        LMFixture(name: "qwen2-moe-norm", tolerance: 1e-4),
    ]

    var expected: [String: Any] {
        get throws {
            guard let o = try Fixtures.json("lm/\(name)/expected.json") as? [String: Any] else {
                throw ModelError.invalidInput("expected.json of \(name) is not an object")
            }
            return o
        }
    }

    func ints(_ key: String) throws -> [Int] {
        guard let a = try expected[key] as? [Int] else { throw ModelError.invalidInput("\(name): no \(key) list") }
        return a
    }

    var ids: [Int] { get throws { try ints("ids") } }
    var promptIds: [Int] { get throws { try ints("prompt_ids") } }
    var greedy: [Int] { get throws { try ints("greedy") } }

    var logits: [Float] {
        get throws { try Fixtures.tensors("lm/\(name)/expected.safetensors").tensor("logits").toArray() }
    }

    func load(_ placement: ExpertPlacement = .local) throws -> LanguageModel {
        try LanguageModel.load(directory: directory, experts: placement)
    }
}

/// A scratch copy of a fixture directory that tests may damage.
final class TempModelDir {
    let path: String

    init(copying source: String) throws {
        path = NSTemporaryDirectory() + "/lm-test-\(UUID().uuidString)"
        try FileManager.default.copyItem(atPath: source, toPath: path)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// Rewrites `model.safetensors` with `edit` applied to its (name, tensor) list.
    func editTensors(_ edit: (inout [(String, Tensor)]) throws -> Void) throws {
        let f = try SafeTensorsFile(path: file("model.safetensors"))
        var list = try f.names.map { ($0, try f.tensor($0).copy()) }
        try edit(&list)
        try SafeTensorsWriter.write(path: file("model.safetensors"), tensors: list)
    }
}

/// Max relative error between every row of two `[rows, vocab]` logits.
func assertClose(_ got: [Float], _ want: [Float], _ tol: Float, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(got.count, want.count, "\(what): element count", file: file, line: line)
    guard got.count == want.count else { return }
    let err = relativeError(got, want)
    XCTAssertLessThanOrEqual(err, tol, "\(what): relative error \(err)", file: file, line: line)
}
