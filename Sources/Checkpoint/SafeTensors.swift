import Foundation
import JSON
import Tensor

/// A read-only memory mapping of a whole file; tensors borrow from it and keep it alive. The file
/// stays open too, so that ranges can be read (`read`) without touching the mapping's pages.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeMutableRawPointer?
    public let size: Int
    private let fd: Int32

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw CheckpointError.io(path: path, reason: String(cString: strerror(errno))) }
        func fail(_ reason: String) -> CheckpointError { close(fd); return .io(path: path, reason: reason) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw fail(String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) != S_IFDIR else { throw fail("is a directory, expected a file") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw fail("not a regular file") }
        size = Int(st.st_size)
        self.fd = fd
        if size == 0 { base = nil; return }
        // MAP_PRIVATE + PROT_READ|PROT_WRITE would allow in-place edits; we only read.
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw fail("mmap failed: \(String(cString: strerror(errno)))")
        }
        base = p
    }

    /// Copies the bytes of `range` (inside the file) to `destination` with `pread`: from the page
    /// cache straight into the destination's pages, with no page-table entries made for the mapping.
    /// False when the file cannot be read (the caller copies from the mapping instead).
    public func read(_ range: Range<Int>, into destination: UnsafeMutableRawPointer) -> Bool {
        var done = 0
        while done < range.count {
            let n = pread(fd, destination + done, min(range.count - done, 1 << 30), off_t(range.lowerBound + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            done += n
        }
        return true
    }

    deinit {
        if let base { munmap(base, size) }
        close(fd)
    }
}

/// One `.safetensors` file: an 8-byte little-endian header length, a JSON header mapping names to
/// `{dtype, shape, data_offsets}`, then the data. Tensors are views into the mapping (no copy).
/// The header is untrusted input: it is parsed by the strict `JSONValue.parse` (duplicate names rejected) and every
/// entry is checked against the file before any tensor byte is touched.
public final class SafeTensorsFile: @unchecked Sendable {
    /// Where one tensor lies in the file, already checked against the file's size.
    public struct Entry: Sendable {
        public let dtype: DType
        public let shape: [Int]
        /// Absolute byte range in the file (q8_0: of the int8 quants).
        public let range: Range<Int>
        /// q8_0 only: absolute byte range of the F16 block scales (`NAME.q8_scales`).
        public var scales: Range<Int>? = nil
    }

    /// Name suffix of a q8_0 tensor's block scales: `NAME` (I8 `[rows, cols]`) + this (F16 `[rows, cols / 32]`).
    public static let q8ScalesSuffix = ".q8_scales"

    /// Element sizes of every dtype the safetensors format defines (we compute only with F32/F16/BF16,
    /// and with I8 quants paired with `.q8_scales` as q8_0; the others are validated and may be
    /// ignored, but `tensor` refuses them).
    static let formatDTypeSizes: [String: Int] = [
        "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
        "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
        "I32": 4, "U32": 4, "F32": 4,
        "I64": 8, "U64": 8, "F64": 8, "C64": 8,
    ]

    /// The largest header accepted (the reference implementation's limit).
    public static let maxHeaderLength = 100_000_000

    public let path: String
    /// Tensors in a dtype we compute with.
    public let entries: [String: Entry]
    /// Valid tensors in another safetensors dtype (e.g. I64 buffers): name → dtype.
    public let unsupported: [String: String]
    public let metadata: [String: String]
    private let file: MappedFile
    /// Byte ranges of the `unsupported` tensors (integer buffers can still be read with `integers`).
    private let otherRanges: [String: Range<Int>]

    /// Every tensor name in the file, sorted.
    public var names: [String] { (Array(entries.keys) + Array(unsupported.keys)).sorted() }

    /// The whole mapped file (tensors in place point inside it).
    public var mapping: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: file.base, count: file.base == nil ? 0 : file.size) }

    public func contains(_ name: String) -> Bool { entries[name] != nil || unsupported[name] != nil }

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
        guard headerLen <= UInt64(Self.maxHeaderLength) else {
            throw bad("header length \(headerLen) exceeds the \(Self.maxHeaderLength)-byte limit")
        }
        let dataStart = 8 + Int(headerLen)
        let dataSize = file.size - dataStart
        let header = UnsafeRawBufferPointer(start: base + 8, count: Int(headerLen))
        guard String(validating: header, as: UTF8.self) != nil else { throw bad("header is not valid UTF-8") }
        let json: JSONValue
        do { json = try JSONValue.parse(header) } catch {
            if case .duplicateKey(let key, let path, _) = error {
                if path.isEmpty { throw bad("header names tensor '\(key)' more than once") }
                throw bad("header entry '\(JSONError.describe(path: path))' has key '\(key)' more than once")
            }
            throw bad("header is not valid JSON (\(error))")
        }
        guard case .object(let dict) = json else { throw bad("header is not a JSON object") }

        var entries: [String: Entry] = [:]
        var unsupported: [String: String] = [:]
        var otherRanges: [String: Range<Int>] = [:]
        var otherShapes: [String: [Int]] = [:]
        var metadata: [String: String] = [:]
        var ranges: [(name: String, range: Range<Int>)] = []
        for (name, value) in dict {
            if name == "__metadata__" {
                guard case .object(let m) = value else { throw bad("__metadata__ is not an object") }
                for (k, v) in m {
                    guard case .string(let s) = v else { throw bad("__metadata__ value '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard case .object(let obj) = value else { throw bad("entry '\(name)' is not an object") }
            guard let dtValue = obj["dtype"] else { throw bad("entry '\(name)' has no dtype") }
            guard case .string(let dt) = dtValue else { throw bad("entry '\(name)' has a dtype that is not a string") }
            guard let elementSize = Self.formatDTypeSizes[dt] else {
                throw bad("entry '\(name)' has unknown dtype '\(dt)'")
            }
            guard case .array(let shapeValues)? = obj["shape"] else { throw bad("entry '\(name)' has no shape list") }
            var shape: [Int] = []
            for d in shapeValues {
                guard case .int(let v) = d, v >= 0 else {
                    throw bad("entry '\(name)' has shape entry \(d), not a non-negative integer")
                }
                shape.append(v)
            }
            guard case .array(let offs)? = obj["data_offsets"], offs.count == 2 else {
                throw bad("entry '\(name)' has no [begin, end] data_offsets")
            }
            guard case .int(let b) = offs[0], case .int(let e) = offs[1] else {
                throw bad("entry '\(name)' data_offsets \(JSONValue.array(offs)) are not integers")
            }
            guard b >= 0, e >= b, e <= dataSize else {
                throw bad("entry '\(name)' data_offsets [\(b), \(e)] lie outside the \(dataSize)-byte data section")
            }
            var elements = 1
            for d in shape {
                let (m, o) = elements.multipliedReportingOverflow(by: d)
                guard !o else { throw bad("entry '\(name)' shape \(shape) overflows") }
                elements = m
            }
            let (bytes, o) = elements.multipliedReportingOverflow(by: elementSize)
            guard !o else { throw bad("entry '\(name)' shape \(shape) overflows") }
            guard bytes == e - b else {
                throw bad("entry '\(name)' holds \(e - b) bytes but shape \(shape) of \(dt) needs \(bytes)")
            }
            let range = (dataStart + b)..<(dataStart + e)
            if let dtype = DType(rawValue: dt) {
                entries[name] = Entry(dtype: dtype, shape: shape, range: range)
            } else {
                unsupported[name] = dt
                otherRanges[name] = range
                otherShapes[name] = shape
            }
            if !range.isEmpty { ranges.append((name, range)) }
        }
        try Self.foldQ8(&entries, &unsupported, &otherRanges, otherShapes, bad)
        // Overlap check over the non-empty ranges sorted by start: each must begin at or after the
        // furthest end seen so far.
        ranges.sort { $0.range.lowerBound < $1.range.lowerBound || ($0.range.lowerBound == $1.range.lowerBound && $0.name < $1.name) }
        var furthest: (name: String, end: Int)?
        for r in ranges {
            if let f = furthest, r.range.lowerBound < f.end {
                throw bad("tensors '\(f.name)' and '\(r.name)' overlap")
            }
            if r.range.upperBound > (furthest?.end ?? 0) { furthest = (r.name, r.range.upperBound) }
        }
        self.entries = entries
        self.unsupported = unsupported
        self.otherRanges = otherRanges
        self.metadata = metadata
    }

    /// Pairs every `NAME.q8_scales` with its I8 `NAME` into one q8_0 entry (docs/MODEL-DIRECTORY.md,
    /// "Quantised directories"): quants `[rows, cols]` with cols divisible by 32, scales F16
    /// `[rows, cols / 32]`. An I8 tensor without scales stays unsupported (`tensor` then names the
    /// missing scales).
    private static func foldQ8(_ entries: inout [String: Entry], _ unsupported: inout [String: String],
                               _ otherRanges: inout [String: Range<Int>], _ shapes: [String: [Int]],
                               _ bad: (String) -> CheckpointError) throws {
        for (name, e) in entries.sorted(by: { $0.key < $1.key }) where name.hasSuffix(q8ScalesSuffix) {
            let base = String(name.dropLast(q8ScalesSuffix.count))
            guard unsupported[base] == "I8", let quants = otherRanges[base], let shape = shapes[base] else {
                throw bad("q8_0 scales '\(name)' have no I8 quants '\(base)' beside them")
            }
            guard shape.count == 2 else { throw bad("q8_0 tensor '\(base)' has shape \(shape); q8_0 tensors are matrices [rows, cols]") }
            guard shape[1] % Q8.block == 0 else {
                throw bad("q8_0 tensor '\(base)' has \(shape[1]) columns, not a multiple of the \(Q8.block)-element block")
            }
            guard e.dtype == .f16 else { throw bad("q8_0 scales '\(name)' are \(e.dtype.rawValue), expected F16") }
            let expected = [shape[0], shape[1] / Q8.block]
            guard e.shape == expected else {
                throw bad("q8_0 scales '\(name)' have shape \(e.shape), expected \(expected) for quants \(shape)")
            }
            entries[name] = nil
            unsupported[base] = nil
            otherRanges[base] = nil
            entries[base] = Entry(dtype: .q8_0, shape: shape, range: quants, scales: e.range)
        }
    }

    /// The elements of an I64 or I32 tensor (token ids, labels), flattened.
    public func integers(_ name: String) throws -> [Int] {
        guard let dt = unsupported[name], let range = otherRanges[name] else {
            if let e = entries[name] { throw CheckpointError.unsupportedDType(name: name, dtype: e.dtype.rawValue) }
            throw CheckpointError.missingTensor(name)
        }
        guard dt == "I64" || dt == "I32", let base = file.base else {
            if range.isEmpty { return [] }
            throw CheckpointError.unsupportedDType(name: name, dtype: dt)
        }
        let size = dt == "I64" ? 8 : 4
        return (0..<(range.count / size)).map { i in
            let p = UnsafeRawPointer(base) + range.lowerBound + i * size
            return size == 8 ? Int(Int64(littleEndian: p.loadUnaligned(as: Int64.self))) : Int(Int32(littleEndian: p.loadUnaligned(as: Int32.self)))
        }
    }

    /// The named tensor as a view into the mapping (a copy only when the file misaligns it), or,
    /// given an `arena`, with its bytes copied there when they are at least `residentMinimum` long.
    public func tensor(_ name: String, arena: HugePageArena? = nil) throws -> Tensor {
        guard let e = entries[name] else {
            if unsupported[name] == "I8" {
                throw CheckpointError.malformed(path: path, reason: "I8 tensor '\(name)' has no q8_0 scales '\(name)\(Self.q8ScalesSuffix)' (F16 [rows, cols / \(Q8.block)]); plain I8 tensors are not supported")
            }
            if let dt = unsupported[name] { throw CheckpointError.unsupportedDType(name: name, dtype: dt) }
            throw CheckpointError.missingTensor(name)
        }
        guard let base = file.base else { return Tensor(zeros: e.shape, dtype: e.dtype) }
        // Kernels read elements through typed pointers, which must be aligned: a misaligned range
        // is copied once (q8_0 quants are bytes; their f16 scales need 2).
        func storage(_ range: Range<Int>, alignment: Int) -> TensorStorage {
            let start = base + range.lowerBound
            if let arena, range.count >= Self.residentMinimum, let s = arena.allocate(byteCount: range.count, fill: { dst in
                if !file.read(range, into: dst) { dst.copyMemory(from: start, byteCount: range.count) }
            }) { return s }
            if Int(bitPattern: start) % alignment == 0 { return TensorStorage(borrowing: start, byteCount: range.count, owner: file) }
            let s = TensorStorage(byteCount: range.count)
            if !range.isEmpty { s.base.copyMemory(from: start, byteCount: range.count) }
            return s
        }
        if let scales = e.scales {
            return Tensor(storage: storage(e.range, alignment: 1), shape: e.shape, dtype: .q8_0,
                          scales: BlockScales(storage: storage(scales, alignment: 2)))
        }
        return Tensor(storage: storage(e.range, alignment: e.dtype.size), shape: e.shape, dtype: e.dtype)
    }

    /// Tensors shorter than this stay views even with an arena: the TLB misses that copying saves
    /// are per 4 KiB streamed, and small tensors are few bytes of a token's reads.
    public static let residentMinimum = 256 << 10
}
