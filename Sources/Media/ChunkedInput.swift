import Foundation

/// Bytes of an upload fed in chunks as they arrive, so decoding can start before the upload ends.
/// A producer thread calls `append` and finally `finish` (or `fail`); the decoder reads through a
/// custom AVIOContext, blocking until the bytes it needs are there. All bytes are kept, so the
/// demuxer may seek backwards freely; a forward seek or a size query (MP4 with its index at the end)
/// waits until the bytes arrive — such formats effectively buffer the whole upload first.
///
/// `@unchecked Sendable`: every stored property is read and written only under `condition`'s lock.
public final class ChunkedInput: @unchecked Sendable {
    /// Shown in errors in place of a path (e.g. "upload.mp4").
    public let name: String
    private let condition = NSCondition()
    private var bytes: [UInt8] = []
    /// End offsets of the chunks appended so far; a read never crosses one, as a network read would not.
    private var chunkEnds: [Int] = []
    private var finished = false
    private var failure: String?

    public init(name: String) { self.name = name }

    /// Convenience: an already complete input cut into chunks of `chunkSize` bytes.
    public convenience init(name: String, data: [UInt8], chunkSize: Int) {
        self.init(name: name)
        var i = 0
        while i < data.count {
            let j = min(data.count, i + max(1, chunkSize))
            append(data[i..<j])
            i = j
        }
        finish()
    }

    /// Adds the next chunk. Ignored after `finish` or `fail`.
    public func append<C: Collection>(_ chunk: C) where C.Element == UInt8 {
        condition.lock()
        defer { condition.unlock() }
        guard !finished, failure == nil, !chunk.isEmpty else { return }
        bytes.append(contentsOf: chunk)
        chunkEnds.append(bytes.count)
        condition.broadcast()
    }

    /// Marks the end of the input: readers waiting past the end now see end of file.
    public func finish() {
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    /// The producer gives up (connection lost, upload cancelled): readers fail with `reason`.
    public func fail(_ reason: String) {
        condition.lock()
        failure = reason
        condition.broadcast()
        condition.unlock()
    }

    /// True once `finish` was called.
    var isFinished: Bool {
        condition.lock()
        defer { condition.unlock() }
        return finished
    }

    /// The reason given to `fail`, if it was called.
    var failureReason: String? {
        condition.lock()
        defer { condition.unlock() }
        return failure
    }

    /// Outcome of one read.
    enum ReadResult { case bytes(Int), endOfFile, failed(String), tooLarge }

    /// Copies up to `count` bytes at `offset` into `dest`, waiting until at least one is available,
    /// the input is finished or it failed. Never crosses a chunk boundary.
    func read(at offset: Int, into dest: UnsafeMutablePointer<UInt8>, count: Int, maxBytes: Int) -> ReadResult {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let failure { return .failed(failure) }
            if bytes.count > maxBytes { return .tooLarge }
            if offset < bytes.count {
                let end = chunkEnd(after: offset)
                let n = min(count, end - offset)
                bytes.withUnsafeBufferPointer { src in
                    dest.update(from: src.baseAddress! + offset, count: n)
                }
                return .bytes(n)
            }
            if finished { return .endOfFile }
            condition.wait()
        }
    }

    /// End of the chunk holding `offset` (binary search over `chunkEnds`); caller holds the lock.
    private func chunkEnd(after offset: Int) -> Int {
        var lo = 0, hi = chunkEnds.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if chunkEnds[mid] > offset { hi = mid } else { lo = mid + 1 }
        }
        return lo < chunkEnds.count ? chunkEnds[lo] : bytes.count
    }

    /// Total size once known: waits until the input is finished (or failed; then nil).
    func totalSize() -> Int? {
        condition.lock()
        defer { condition.unlock() }
        while !finished && failure == nil { condition.wait() }
        return failure == nil ? bytes.count : nil
    }

    /// Waits until `offset` bytes are present or the input ends; false when it ended before.
    func waitFor(offset: Int) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while bytes.count < offset && !finished && failure == nil { condition.wait() }
        return bytes.count >= offset
    }
}
