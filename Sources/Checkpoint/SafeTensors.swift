import Foundation
import Tensor

/// A read-only memory mapping of a whole file; tensors borrow from it and keep it alive.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeMutableRawPointer?
    public let size: Int

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw CheckpointError.io(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw CheckpointError.io(path: path, reason: String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw CheckpointError.io(path: path, reason: "not a regular file") }
        size = Int(st.st_size)
        if size == 0 { base = nil; return }
        // MAP_PRIVATE + PROT_READ|PROT_WRITE would allow in-place edits; we only read.
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw CheckpointError.io(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        base = p
    }

    deinit {
        if let base { munmap(base, size) }
    }
}

/// One `.safetensors` file: an 8-byte little-endian header length, a JSON header mapping names to
/// `{dtype, shape, data_offsets}`, then the data. Tensors are views into the mapping (no copy).
public final class SafeTensorsFile: @unchecked Sendable {
    public struct Entry: Sendable {
        public let dtype: DType
        public let shape: [Int]
        /// Absolute byte range in the file.
        public let range: Range<Int>
    }

    public let path: String
    public let entries: [String: Entry]
    public let metadata: [String: String]
    private let file: MappedFile

    public var names: [String] { entries.keys.sorted() }

    public init(path: String) throws {
        let file = try MappedFile(path: path)
        self.file = file
        self.path = path
        func bad(_ reason: String) -> CheckpointError { .malformed(path: path, reason: reason) }
        guard file.size >= 8, let base = file.base else { throw bad("file is \(file.size) bytes, shorter than the 8-byte header length") }
        let headerLen = base.loadUnaligned(as: UInt64.self).littleEndian
        guard headerLen <= UInt64(file.size - 8) else {
            throw bad("header length \(headerLen) runs past the end of the \(file.size)-byte file")
        }
        let dataStart = 8 + Int(headerLen)
        let headerData = Data(bytes: base + 8, count: Int(headerLen))
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: headerData) } catch {
            throw bad("header is not valid JSON")
        }
        guard let dict = json as? [String: Any] else { throw bad("header is not a JSON object") }
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in dict {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw bad("__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw bad("__metadata__ value '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let obj = value as? [String: Any] else { throw bad("entry '\(name)' is not an object") }
            guard let dt = obj["dtype"] as? String else { throw bad("entry '\(name)' has no dtype") }
            guard let dtype = DType(rawValue: dt) else { throw CheckpointError.unsupportedDType(name: name, dtype: dt) }
            guard let shapeAny = obj["shape"] as? [Any] else { throw bad("entry '\(name)' has no shape list") }
            var shape: [Int] = []
            for d in shapeAny {
                guard let n = d as? NSNumber, let v = Int(exactly: n.doubleValue), v >= 0 else {
                    throw bad("entry '\(name)' has a shape entry that is not a non-negative integer")
                }
                shape.append(v)
            }
            guard let offs = obj["data_offsets"] as? [Any], offs.count == 2,
                  let b = (offs[0] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }),
                  let e = (offs[1] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }) else {
                throw bad("entry '\(name)' has no [begin, end] data_offsets")
            }
            guard b >= 0, e >= b, e <= file.size - dataStart else {
                throw bad("entry '\(name)' data_offsets [\(b), \(e)] lie outside the \(file.size - dataStart)-byte data section")
            }
            var elements = 1
            for d in shape {
                let (m, o) = elements.multipliedReportingOverflow(by: d)
                guard !o else { throw bad("entry '\(name)' shape \(shape) overflows") }
                elements = m
            }
            let (bytes, o) = elements.multipliedReportingOverflow(by: dtype.size)
            guard !o, bytes == e - b else {
                throw bad("entry '\(name)' holds \(e - b) bytes but shape \(shape) of \(dt) needs \(o ? -1 : bytes)")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, range: (dataStart + b)..<(dataStart + e))
        }
        // Overlap check: sort by start.
        let sorted = entries.sorted { $0.value.range.lowerBound < $1.value.range.lowerBound }
        for i in sorted.indices.dropFirst() {
            let prev = sorted[i - 1], cur = sorted[i]
            if cur.value.range.lowerBound < prev.value.range.upperBound && !cur.value.range.isEmpty && !prev.value.range.isEmpty {
                throw bad("tensors '\(prev.key)' and '\(cur.key)' overlap")
            }
        }
        self.entries = entries
        self.metadata = metadata
    }

    /// The named tensor as a view into the mapping.
    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entries[name] else { throw CheckpointError.missingTensor(name) }
        guard let base = file.base else {
            return Tensor(zeros: e.shape, dtype: e.dtype)
        }
        if e.dtype == .f32 && (e.range.lowerBound % 4 != 0) {
            // Misaligned f32 data cannot be read in place; copy once.
            let t = Tensor(zeros: e.shape, dtype: e.dtype)
            if !e.range.isEmpty { t.raw.copyMemory(from: base + e.range.lowerBound, byteCount: e.range.count) }
            return t
        }
        let storage = TensorStorage(borrowing: base + e.range.lowerBound, byteCount: e.range.count, owner: file)
        return Tensor(storage: storage, shape: e.shape, dtype: e.dtype)
    }
}
