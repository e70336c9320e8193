import Foundation
import JSON
import Tensor

/// Writes `.safetensors` files the way the reference implementation lays them out (tensors packed in
/// the given order, header padded with spaces to a multiple of 8 so the data stays aligned), for
/// tests and tools that produce checkpoints. The file appears atomically (written aside, renamed).
/// A q8_0 tensor `NAME` becomes two entries: I8 `NAME` and F16 `NAME.q8_scales` (see `SafeTensorsFile`).
public enum SafeTensorsWriter {
    public static func write(path: String, tensors: [(String, Tensor)], metadata: [String: String] = [:]) throws {
        try write(path: path, lazy: tensors.map { t in (t.0, t.1.dtype, t.1.shape, { t.1 }) }, metadata: metadata)
    }

    /// The same, with each tensor produced only when its bytes are written (its dtype and shape
    /// declared up front), so a converter holds one converted tensor at a time.
    public static func write(path: String, lazy tensors: [(String, DType, [Int], () throws -> Tensor)],
                             metadata: [String: String] = [:]) throws {
        func fail(_ reason: String) -> CheckpointError { .io(path: path, reason: reason) }
        var seen = Set<String>()
        var fields: [String] = []
        if !metadata.isEmpty {
            let m = metadata.keys.sorted().map { "\(quote($0)):\(quote(metadata[$0] ?? ""))" }.joined(separator: ",")
            fields.append("\"__metadata__\":{\(m)}")
        }
        var offset = 0
        func field(_ name: String, _ dtype: String, _ shape: [Int], bytes: Int) throws {
            guard name != "__metadata__" else { throw fail("'__metadata__' cannot be a tensor name") }
            guard seen.insert(name).inserted else { throw fail("tensor '\(name)' is given twice") }
            fields.append("\(quote(name)):{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        for (name, dtype, shape, _) in tensors {
            let count = shape.reduce(1, *)
            if dtype == .q8_0 {
                // Stored as two safetensors entries: I8 quants, then F16 block scales.
                guard shape.count == 2, shape[1] % Q8.block == 0 else {
                    throw fail("q8_0 tensor '\(name)' has shape \(shape); q8_0 needs [rows, cols] with cols divisible by \(Q8.block)")
                }
                try field(name, "I8", shape, bytes: count)
                try field(name + SafeTensorsFile.q8ScalesSuffix, "F16", [shape[0], shape[1] / Q8.block], bytes: count / Q8.block * 2)
            } else {
                try field(name, dtype.rawValue, shape, bytes: count * dtype.size)
            }
        }
        var header = Array(("{" + fields.joined(separator: ",") + "}").utf8)
        while header.count % 8 != 0 { header.append(0x20) }

        let tmp = path + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw fail(String(cString: strerror(errno))) }
        var closed = false
        defer { if !closed { close(fd); unlink(tmp) } }
        func put(_ p: UnsafeRawPointer, _ count: Int) throws {
            var done = 0
            while done < count {
                let n = Foundation.write(fd, p + done, count - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw fail("write failed: \(String(cString: strerror(errno)))") }
                done += n
            }
        }
        var len = UInt64(header.count).littleEndian
        try withUnsafeBytes(of: &len) { try put($0.baseAddress!, 8) }
        try header.withUnsafeBytes { try put($0.baseAddress!, $0.count) }
        for (name, dtype, shape, make) in tensors {
            let t = try make()
            guard t.dtype == dtype, t.shape == shape else {
                throw fail("tensor '\(name)' was declared \(dtype.rawValue) \(shape) but produced \(t.dtype.rawValue) \(t.shape)")
            }
            if t.byteCount > 0 { try put(t.raw, t.byteCount) }
            if t.blockCount > 0 { try t.withQ8 { _, d in try put(d, t.blockCount * 2) } }
        }
        guard close(fd) == 0 else { throw fail("close failed: \(String(cString: strerror(errno)))") }
        closed = true
        guard rename(tmp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw fail("cannot rename into place: \(reason)")
        }
    }

    /// A JSON string literal.
    static func quote(_ s: String) -> String { JSONValue.quote(s) }
}
