import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Anonymous memory in 2 MiB-aligned chunks backed by transparent huge pages, that a checkpoint's
/// large weights are copied into once at load instead of being read through the file mapping.
///
/// Why: decode streams every weight once per token, and through a file mapping's 4 KiB pages that
/// is a TLB miss every 4 KiB (file pages are not mapped huge here: `MADV_COLLAPSE` on the mapping
/// answers EINVAL). Measured on the 1B bench model, 2 threads, f32 decode, interleaved runs: mapped
/// 17.0–18.6 tokens/s, copied 19.3–22.7, llama.cpp 18.3–22.9 (docs/MODEL-DIRECTORY.md has bf16 and
/// q8_0). The price is the copy (~0.35 s per GB at load, from the page cache) and the weights
/// counted as the process's memory rather than shared page cache.
///
/// Tensors are placed one after another (64-byte aligned) in the newest chunk while they fit; a
/// tensor that does not fit gets a new chunk of its own size rounded up to 2 MiB, whose tail the
/// next smaller tensors fill. Each chunk is unmapped when the last tensor in it goes.
///
/// `@unchecked Sendable`: the placement state is guarded by `lock`; each tensor's bytes are written
/// once, by `allocate`'s `fill`, before the tensor is handed out.
public final class HugePageArena: @unchecked Sendable {
    /// One anonymous mapping; tensors borrow from it and keep it alive.
    final class Chunk {
        let mapping: UnsafeMutableRawPointer
        let mappingSize: Int
        let base: UnsafeMutableRawPointer
        let size: Int
        var used = 0

        init?(size wanted: Int) {
            let huge = HugePageArena.hugePage
            let size = (wanted + huge - 1) / huge * huge
            // One huge page more than needed, so that the usable part can start on a 2 MiB boundary.
            let total = size + huge
            guard let p = mmap(nil, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
                return nil
            }
            mapping = p
            mappingSize = total
            let aligned = (Int(bitPattern: p) + huge - 1) / huge * huge
            base = p + (aligned - Int(bitPattern: p))
            self.size = size
            #if os(Linux)
            _ = madvise(base, size, MADV_HUGEPAGE)  // needed when THP is in "madvise" mode; harmless otherwise
            #endif
        }

        deinit { munmap(mapping, mappingSize) }
    }

    static let hugePage = 2 << 20
    private let lock = NSLock()
    private var newest: Chunk?

    public init() {}

    /// `byteCount` bytes of huge-page memory that `fill` writes once (nil when no memory could be
    /// mapped: the caller keeps what it had).
    public func allocate(byteCount: Int, fill: (UnsafeMutableRawPointer) -> Void) -> TensorStorage? {
        lock.lock(); defer { lock.unlock() }
        let start: Int
        let chunk: Chunk
        if let c = newest, ((c.used + 63) & ~63) + byteCount <= c.size {
            chunk = c
            start = (c.used + 63) & ~63  // 64-byte aligned, as heap tensors are
        } else {
            guard let c = Chunk(size: byteCount) else { return nil }
            // The chunk with more room left stays the one later tensors go to.
            if newest == nil || c.size - byteCount > newest!.size - newest!.used { newest = c }
            chunk = c
            start = 0
        }
        chunk.used = start + byteCount
        let p = chunk.base + start
        fill(p)
        return TensorStorage(borrowing: p, byteCount: byteCount, owner: chunk)
    }
}
