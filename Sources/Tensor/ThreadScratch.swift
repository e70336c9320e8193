import Foundation

/// Per-thread growable float buffers, so kernels on the hot path never allocate per call.
///
/// Why thread-local: the same kernel may run on the caller thread and on pool workers at once, and
/// a process may call kernels from several threads; a buffer owned by the running thread needs no
/// lock. A buffer grows (allocates) only when a larger size is asked for than ever before on that
/// thread, so steady-state decode allocates nothing. Slots let one kernel hold several buffers.
public enum ThreadScratch {
    /// Distinct buffers a kernel may hold at the same time on one thread.
    public enum Slot: Int, CaseIterable, Sendable {
        /// Inputs prepared by the caller before a parallel job (e.g. a re-laid-out activation).
        case input
        /// Per-task working memory inside a parallel job (e.g. attention scores, widened weights).
        case work
        /// A second per-task buffer.
        case work2
    }

    /// A buffer of at least `count` floats, valid until the next request for the same slot on this thread.
    public static func floats(_ slot: Slot, count: Int) -> UnsafeMutablePointer<Float> {
        Buffers.current().get(slot.rawValue, count)
    }

    /// Owns one thread's buffers; freed by the pthread key destructor when the thread ends.
    final class Buffers {
        var pointers: [UnsafeMutablePointer<Float>]
        var sizes: [Int]

        init() {
            pointers = Slot.allCases.map { _ in UnsafeMutablePointer<Float>.allocate(capacity: 64) }
            sizes = Slot.allCases.map { _ in 64 }
        }

        deinit { for p in pointers { p.deallocate() } }

        @inline(__always) func get(_ slot: Int, _ count: Int) -> UnsafeMutablePointer<Float> {
            if sizes[slot] < count { grow(slot, count) }
            return pointers[slot]
        }

        private func grow(_ slot: Int, _ count: Int) {
            pointers[slot].deallocate()
            // Round up to 64 bytes so vector loads past a tail stay inside the buffer.
            let n = (max(count, sizes[slot] + sizes[slot] / 2) + 15) & ~15
            let raw = UnsafeMutableRawPointer.allocate(byteCount: n * 4, alignment: 64)
            pointers[slot] = raw.bindMemory(to: Float.self, capacity: n)
            sizes[slot] = n
        }

        private static let key: pthread_key_t = {
            var k = pthread_key_t()
            pthread_key_create(&k) { p in
                guard let p else { return }
                Unmanaged<Buffers>.fromOpaque(p).release()
            }
            return k
        }()

        static func current() -> Buffers {
            if let p = pthread_getspecific(key) { return Unmanaged<Buffers>.fromOpaque(p).takeUnretainedValue() }
            let b = Buffers()
            pthread_setspecific(key, Unmanaged.passRetained(b).toOpaque())
            return b
        }
    }
}
