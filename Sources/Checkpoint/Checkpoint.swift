import Foundation
import Tensor

/// All the tensors of a model directory: one `model.safetensors`, or shards listed by
/// `model.safetensors.index.json`. Loading is strict: `take` marks each tensor as used and
/// `finishLoading()` fails naming every tensor nobody took.
public final class Checkpoint: @unchecked Sendable {
    public let directory: String
    private var files: [String: SafeTensorsFile] = [:]
    private var location: [String: String] = [:]   // tensor name → file name
    private var used: Set<String> = []
    private let lock = NSLock()

    public var names: [String] { location.keys.sorted() }

    public init(directory: String) throws {
        self.directory = directory
        let fm = FileManager.default
        let index = (directory as NSString).appendingPathComponent("model.safetensors.index.json")
        let single = (directory as NSString).appendingPathComponent("model.safetensors")
        if fm.fileExists(atPath: index) {
            guard let data = fm.contents(atPath: index) else { throw CheckpointError.io(path: index, reason: "cannot read") }
            guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                  let map = obj["weight_map"] as? [String: Any] else {
                throw CheckpointError.malformed(path: index, reason: "no weight_map object")
            }
            for (name, fileAny) in map {
                guard let file = fileAny as? String, !file.contains("/"), !file.hasPrefix(".") else {
                    throw CheckpointError.malformed(path: index, reason: "weight_map entry '\(name)' is not a file name in the directory")
                }
                if files[file] == nil {
                    files[file] = try SafeTensorsFile(path: (directory as NSString).appendingPathComponent(file))
                }
                guard files[file]!.entries[name] != nil else {
                    throw CheckpointError.malformed(path: index, reason: "'\(name)' is listed in \(file) but that shard does not hold it")
                }
                location[name] = file
            }
        } else if fm.fileExists(atPath: single) {
            let f = try SafeTensorsFile(path: single)
            files["model.safetensors"] = f
            for n in f.entries.keys { location[n] = "model.safetensors" }
        } else {
            throw CheckpointError.io(path: directory, reason: "no model.safetensors or model.safetensors.index.json")
        }
    }

    /// Opens a single safetensors file as a checkpoint.
    public init(file: String) throws {
        directory = (file as NSString).deletingLastPathComponent
        let f = try SafeTensorsFile(path: file)
        let name = (file as NSString).lastPathComponent
        files[name] = f
        for n in f.entries.keys { location[n] = name }
    }

    public func contains(_ name: String) -> Bool { location[name] != nil }

    /// Shape of a tensor without marking it used.
    public func shape(_ name: String) -> [Int]? {
        guard let f = location[name] else { return nil }
        return files[f]?.entries[name]?.shape
    }

    /// The named tensor (a view into the mapped file), marked as used; checks the shape when given.
    public func take(_ name: String, shape: [Int]? = nil) throws -> Tensor {
        guard let f = location[name], let file = files[f] else { throw CheckpointError.missingTensor(name) }
        let t = try file.tensor(name)
        if let shape, shape != t.shape { throw CheckpointError.shapeMismatch(name: name, expected: shape, actual: t.shape) }
        lock.lock(); used.insert(name); lock.unlock()
        return t
    }

    /// `take` for an optional tensor: nil when absent.
    public func takeIfPresent(_ name: String, shape: [Int]? = nil) throws -> Tensor? {
        contains(name) ? try take(name, shape: shape) : nil
    }

    /// Marks tensors as deliberately unused (e.g. rotary caches some exporters save).
    public func ignore(where predicate: (String) -> Bool) {
        lock.lock(); for n in location.keys where predicate(n) { used.insert(n) }; lock.unlock()
    }

    /// Throws `unusedTensors` when any tensor was never taken.
    public func finishLoading() throws {
        let unused = location.keys.filter { !used.contains($0) }.sorted()
        if !unused.isEmpty { throw CheckpointError.unusedTensors(unused) }
    }
}
