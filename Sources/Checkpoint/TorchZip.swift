import Foundation

/// Everything that can be wrong with a PyTorch (`torch.save`) checkpoint file: its ZIP container,
/// its pickle, or the tensors the pickle describes. Every message is one line naming the file and
/// the entry, opcode or global at fault.
public enum TorchFileError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The ZIP container is broken (truncated, offsets outside the file, overlapping entries, …).
    case zip(path: String, reason: String)
    /// An entry is compressed; only stored entries (what `torch.save` writes) are read.
    case compressedEntry(path: String, entry: String, method: Int)
    /// The pickle stream is broken (truncated, stack underflow, wrong operand types, …).
    case pickle(path: String, reason: String)
    /// An opcode outside the small set a state dict needs.
    case unsupportedOpcode(path: String, opcode: UInt8, offset: Int)
    /// A global outside the allow-list (nothing is ever imported or called).
    case forbiddenGlobal(path: String, name: String)
    /// A tensor whose storage, offset, shape, strides or dtype cannot be read.
    case tensor(path: String, name: String, reason: String)

    public var description: String {
        switch self {
        case .zip(let path, let reason): return "\(path): malformed PyTorch zip: \(reason)"
        case .compressedEntry(let path, let entry, let method):
            return "\(path): zip entry '\(entry)' is compressed (method \(method)); compressed entries are unsupported (torch.save stores them uncompressed)"
        case .pickle(let path, let reason): return "\(path): malformed pickle: \(reason)"
        case .unsupportedOpcode(let path, let opcode, let offset):
            let printable = (0x21...0x7E).contains(opcode) ? " '\(Character(UnicodeScalar(opcode)))'" : ""
            return "\(path): pickle opcode 0x\(String(opcode, radix: 16, uppercase: false))\(printable) at byte \(offset) is not supported by the safe unpickler"
        case .forbiddenGlobal(let path, let name):
            return "\(path): pickle refers to global '\(name)', which is not allowed (only tensor rebuilders, storages and OrderedDict are)"
        case .tensor(let path, let name, let reason): return "\(path): tensor '\(name)': \(reason)"
        }
    }
}

/// A read-only view of the stored entries of a ZIP archive, parsed from its central directory with
/// every offset and size checked against the file: entries must lie inside the file, before the
/// central directory, and must not overlap; compressed or encrypted entries are refused, so no
/// declared size can make us allocate or read more than the file holds.
public final class ZipArchive: @unchecked Sendable {
    public struct Entry: Sendable {
        public let name: String
        /// Absolute byte range of the entry's data in the file.
        public let range: Range<Int>
    }

    /// The most entries accepted (a state dict of a 20B model has a few thousand storages).
    public static let maxEntries = 200_000

    public let path: String
    public let file: MappedFile
    /// Entries in central-directory order.
    public let entries: [Entry]
    private let byName: [String: Int]

    public init(path: String) throws {
        let file = try MappedFile(path: path)
        self.path = path
        self.file = file
        func bad(_ reason: String) -> TorchFileError { .zip(path: path, reason: reason) }
        let size = file.size
        guard size >= 22, let base = file.base else { throw bad("file is \(size) bytes, too short for a zip end record") }
        let bytes = UnsafeRawBufferPointer(start: base, count: size)
        func u16(_ o: Int) -> Int { Int(bytes[o]) | Int(bytes[o + 1]) << 8 }
        func u32(_ o: Int) -> Int { u16(o) | u16(o + 2) << 16 }
        func u64(_ o: Int) -> UInt64 { UInt64(u32(o)) | UInt64(u32(o + 4)) << 32 }

        // End of central directory: the last signature whose comment runs exactly to the end.
        var eocd = -1
        var o = size - 22
        let lowest = max(0, size - 22 - 0xFFFF)
        while o >= lowest {
            if u32(o) == 0x0605_4B50 && o + 22 + u16(o + 20) == size { eocd = o; break }
            o -= 1
        }
        guard eocd >= 0 else { throw bad("no end-of-central-directory record (truncated or not a zip file)") }
        guard u16(eocd + 4) == 0 && u16(eocd + 6) == 0 else { throw bad("multi-disk archives are not supported") }
        var count = UInt64(u16(eocd + 10))
        var cdSize = UInt64(u32(eocd + 12))
        var cdOffset = UInt64(u32(eocd + 16))
        if u16(eocd + 8) != u16(eocd + 10) { throw bad("end record disagrees about the entry count") }
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            // Zip64: a locator just before the end record points at the zip64 end record.
            let loc = eocd - 20
            guard loc >= 56, u32(loc) == 0x0706_4B50 else { throw bad("zip64 sizes without a zip64 locator") }
            let rec = u64(loc + 8)
            guard rec <= UInt64(loc - 56), u32(Int(rec)) == 0x0606_4B50 else {
                throw bad("zip64 end record offset \(rec) does not point at a zip64 end record")
            }
            let r = Int(rec)
            count = u64(r + 32)
            cdSize = u64(r + 40)
            cdOffset = u64(r + 48)
        }
        guard count <= UInt64(Self.maxEntries) else { throw bad("declares \(count) entries, more than the \(Self.maxEntries) accepted") }
        guard cdOffset <= UInt64(size), cdSize <= UInt64(size) - cdOffset, cdOffset + cdSize <= UInt64(eocd) else {
            throw bad("central directory [\(cdOffset), +\(cdSize)) lies outside the \(size)-byte file")
        }
        let cdStart = Int(cdOffset), cdEnd = Int(cdOffset + cdSize)

        var entries: [Entry] = []
        var byName: [String: Int] = [:]
        var spans: [(name: String, range: Range<Int>)] = []
        var p = cdStart
        for i in 0..<Int(count) {
            guard p + 46 <= cdEnd, u32(p) == 0x0201_4B50 else { throw bad("central directory entry \(i) at byte \(p) is truncated or has no signature") }
            let flags = u16(p + 8), method = u16(p + 10)
            var csize = UInt64(u32(p + 20)), usize = UInt64(u32(p + 24))
            let nameLen = u16(p + 28), extraLen = u16(p + 30), commentLen = u16(p + 32)
            var localOffset = UInt64(u32(p + 42))
            let next = p + 46 + nameLen + extraLen + commentLen
            guard next <= cdEnd else { throw bad("central directory entry \(i) runs past the directory's end") }
            guard let name = String(validating: UnsafeRawBufferPointer(rebasing: bytes[(p + 46)..<(p + 46 + nameLen)]), as: UTF8.self),
                  !name.isEmpty, !name.contains("\0") else {
                throw bad("central directory entry \(i) has an empty or non-UTF-8 name")
            }
            // Zip64 extra field: the 0xFFFFFFFF fields, in order usize, csize, offset.
            var e = p + 46 + nameLen
            let extraEnd = e + extraLen
            while e + 4 <= extraEnd {
                let tag = u16(e), len = u16(e + 2)
                guard e + 4 + len <= extraEnd else { throw bad("entry '\(name)' has a truncated extra field") }
                if tag == 0x0001 {
                    var f = e + 4
                    func take() throws -> UInt64 {
                        guard f + 8 <= e + 4 + len else { throw bad("entry '\(name)' has a short zip64 extra field") }
                        defer { f += 8 }
                        return u64(f)
                    }
                    if usize == 0xFFFF_FFFF { usize = try take() }
                    if csize == 0xFFFF_FFFF { csize = try take() }
                    if localOffset == 0xFFFF_FFFF { localOffset = try take() }
                }
                e += 4 + len
            }
            guard flags & 1 == 0 else { throw bad("entry '\(name)' is encrypted") }
            guard method == 0 else { throw TorchFileError.compressedEntry(path: path, entry: name, method: method) }
            guard csize == usize else {
                throw bad("stored entry '\(name)' declares \(usize) bytes uncompressed but \(csize) stored")
            }
            guard localOffset <= UInt64(cdStart), UInt64(cdStart) - localOffset >= 30 else {
                throw bad("entry '\(name)' has its local header at \(localOffset), outside the data area [0, \(cdStart))")
            }
            let lh = Int(localOffset)
            guard u32(lh) == 0x0403_4B50 else { throw bad("entry '\(name)' has no local header signature at byte \(lh)") }
            let lNameLen = u16(lh + 26), lExtraLen = u16(lh + 28)
            let dataStart = lh + 30 + lNameLen + lExtraLen
            guard dataStart <= cdStart, csize <= UInt64(cdStart - dataStart) else {
                throw bad("entry '\(name)' declares \(csize) bytes at byte \(dataStart), past the end of the data area (\(cdStart) bytes)")
            }
            guard lNameLen == nameLen,
                  bytes[(lh + 30)..<(lh + 30 + lNameLen)].elementsEqual(bytes[(p + 46)..<(p + 46 + nameLen)]) else {
                throw bad("entry '\(name)' has a different name in its local header")
            }
            guard byName[name] == nil else { throw bad("entry '\(name)' appears more than once") }
            let range = dataStart..<(dataStart + Int(csize))
            byName[name] = entries.count
            entries.append(Entry(name: name, range: range))
            spans.append((name, lh..<range.upperBound))
            p = next
        }
        spans.sort { $0.range.lowerBound < $1.range.lowerBound }
        for (a, b) in zip(spans, spans.dropFirst()) where b.range.lowerBound < a.range.upperBound {
            throw bad("entries '\(a.name)' and '\(b.name)' overlap")
        }
        self.entries = entries
        self.byName = byName
    }

    public func entry(_ name: String) -> Entry? { byName[name].map { entries[$0] } }

    /// The bytes of an entry, in place in the mapping.
    public func bytes(of entry: Entry) -> UnsafeRawBufferPointer {
        guard let base = file.base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + entry.range.lowerBound, count: entry.range.count)
    }
}
