import Foundation

/// Owns (or borrows, keeping its owner alive) the bytes behind one or more tensors. Heap storage is
/// 64-byte aligned so kernels can use aligned vector loads; borrowed storage points into a mapped
/// checkpoint file and keeps the mapping alive through `owner`.
///
/// `@unchecked Sendable`: the pointer is never reallocated; writers (kernels filling a fresh
/// output) finish before the tensor is shared, and shared weights are read-only.
public final class TensorStorage: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let byteCount: Int
    private let owner: AnyObject?
    private let ownsMemory: Bool

    /// Fresh zero-filled heap storage.
    public init(byteCount: Int) {
        let n = max(byteCount, 1)
        base = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: n)
        self.byteCount = byteCount
        owner = nil
        ownsMemory = true
    }

    /// Borrowed storage: `base` stays valid as long as `owner` lives (e.g. a memory-mapped file).
    public init(borrowing base: UnsafeMutableRawPointer, byteCount: Int, owner: AnyObject) {
        self.base = base
        self.byteCount = byteCount
        self.owner = owner
        ownsMemory = false
    }

    deinit {
        if ownsMemory { base.deallocate() }
    }
}

/// Where a q8_0 tensor's block scales lie: one f16 per 32 consecutive elements (row-major), block
/// `i / 32` scaling element `i`.
public struct BlockScales: @unchecked Sendable {
    public let storage: TensorStorage
    /// Byte offset of the first block's scale inside `storage`.
    public let byteOffset: Int

    public init(storage: TensorStorage, byteOffset: Int = 0) {
        self.storage = storage
        self.byteOffset = byteOffset
    }

    /// The scales from block `first` on.
    func advanced(blocks first: Int) -> BlockScales {
        BlockScales(storage: storage, byteOffset: byteOffset + first * 2)
    }
}

/// A contiguous row-major n-dimensional array in one of the storage dtypes. Value semantics for the
/// shape; the bytes are shared by views (`rows`, `reshaped`) and written only by the code that
/// created them.
public struct Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let dtype: DType
    public let storage: TensorStorage
    /// Byte offset of element 0 inside `storage`.
    public let byteOffset: Int
    /// q8_0 only (nil otherwise): the block scales beside the int8 quants in `storage`.
    public let scales: BlockScales?

    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }
    /// Bytes of the elements in `storage` (q8_0: the quants; the scales add `blockCount · 2`).
    public var byteCount: Int { count * dtype.size }
    /// Number of rows when seen as a matrix `[count / lastDim, lastDim]`.
    public var rowCount: Int { shape.isEmpty ? 1 : (shape.last! == 0 ? 0 : count / shape.last!) }
    public var lastDim: Int { shape.last ?? 1 }

    public var raw: UnsafeMutableRawPointer { storage.base + byteOffset }

    /// A tensor over `storage`; q8_0 needs `scales` (and a last dimension divisible by 32), the
    /// other dtypes none.
    public init(storage: TensorStorage, shape: [Int], dtype: DType, byteOffset: Int = 0, scales: BlockScales? = nil) {
        precondition((dtype == .q8_0) == (scales != nil), "q8_0 tensors, and only they, carry block scales")
        precondition(dtype != .q8_0 || (shape.last ?? 0) % Q8.block == 0, "q8_0 needs a last dimension divisible by \(Q8.block), got \(shape)")
        self.storage = storage
        self.shape = shape
        self.dtype = dtype
        self.byteOffset = byteOffset
        self.scales = scales
    }

    /// Zero-filled tensor (q8_0: zero quants and zero scales).
    public init(zeros shape: [Int], dtype: DType = .f32) {
        let n = shape.reduce(1, *)
        let scales = dtype == .q8_0 ? BlockScales(storage: TensorStorage(byteCount: n / Q8.block * 2)) : nil
        self.init(storage: TensorStorage(byteCount: n * dtype.size), shape: shape, dtype: dtype, scales: scales)
    }

    /// Number of q8_0 blocks (count / 32; 0 for other dtypes).
    public var blockCount: Int { dtype == .q8_0 ? count / Q8.block : 0 }
    /// Bytes the tensor occupies where it is stored (q8_0: quants plus f16 block scales), what a
    /// kernel streaming it reads.
    public var storedBytes: Int { byteCount + blockCount * 2 }

    /// Runs `body` with the int8 quants and f16 scales of a q8_0 tensor (precondition: q8_0).
    public func withQ8<R>(_ body: (UnsafePointer<Int8>, UnsafePointer<Float16>) throws -> R) rethrows -> R {
        guard let scales else { preconditionFailure("withQ8 needs a q8_0 tensor, this one is \(dtype)") }
        return try body(UnsafePointer(raw.assumingMemoryBound(to: Int8.self)),
                        UnsafePointer((scales.storage.base + scales.byteOffset).assumingMemoryBound(to: Float16.self)))
    }

    /// Widens rows `first ..< first + n` of the matrix view `[rowCount, lastDim]` into f32 `out`,
    /// whatever the dtype (q8_0 rows are dequantised block by block).
    public func widenRows(_ first: Int, _ n: Int, into out: UnsafeMutablePointer<Float>) {
        let dim = lastDim
        if dtype == .q8_0 {
            let b0 = first * dim / Q8.block
            withQ8 { q, d in Q8.dequantize(quants: q + b0 * Q8.block, scales: d + b0, blocks: n * dim / Q8.block, into: out) }
        } else {
            Convert.toF32(UnsafeRawPointer(raw) + first * dim * dtype.size, dtype, count: n * dim, into: out)
        }
    }

    /// f32 tensor holding `values` (count must match the shape).
    public init(shape: [Int], values: [Float]) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else { throw TensorError.invalidShape(shape) }
        let n = shape.reduce(1, *)
        guard n == values.count else { throw TensorError.countMismatch(expected: n, actual: values.count) }
        self.init(zeros: shape, dtype: .f32)
        values.withUnsafeBufferPointer { src in
            if n > 0 { floats.update(from: src.baseAddress!, count: n) }
        }
    }

    /// The elements as f32 (f32 storage only; use `converted(to: .f32)` first otherwise).
    public var floats: UnsafeMutablePointer<Float> {
        precondition(dtype == .f32, "floats needs f32 storage, this tensor is \(dtype)")
        return raw.assumingMemoryBound(to: Float.self)
    }

    /// A copy of the elements widened to f32.
    public func toArray() -> [Float] {
        let n = count
        return [Float](unsafeUninitializedCapacity: n) { buf, initialized in
            if n > 0 { widenRows(0, rowCount, into: buf.baseAddress!) }
            initialized = n
        }
    }

    /// This tensor in another dtype (self when already so); to q8_0 it is quantised as ggml does
    /// (`Q8`; the last dimension must be divisible by 32).
    public func converted(to target: DType) -> Tensor {
        if target == dtype { return self }
        let out = Tensor(zeros: shape, dtype: target)
        let n = count
        if n == 0 { return out }
        if target == .q8_0 {
            let src = converted(to: .f32)
            out.withQ8 { q, d in
                Q8.quantize(src.floats, blocks: n / Q8.block, quants: UnsafeMutablePointer(mutating: q),
                            scales: UnsafeMutablePointer(mutating: d))
            }
        } else if dtype == .f32 {
            Convert.fromF32(floats, count: n, to: target, into: out.raw)
        } else if target == .f32 {
            widenRows(0, rowCount, into: out.floats)
        } else {
            let tmp = converted(to: .f32)
            Convert.fromF32(tmp.floats, count: n, to: target, into: out.raw)
        }
        return out
    }

    /// Same bytes, another shape of the same element count.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        let n = newShape.reduce(1, *)
        guard n == count, newShape.allSatisfy({ $0 >= 0 }) else {
            throw TensorError.shapeMismatch("cannot reshape \(shape) to \(newShape)")
        }
        if dtype == .q8_0, (newShape.last ?? 0) % Q8.block != 0 {
            throw TensorError.shapeMismatch("cannot reshape q8_0 \(shape) to \(newShape): rows would split 32-element blocks")
        }
        return Tensor(storage: storage, shape: newShape, dtype: dtype, byteOffset: byteOffset, scales: scales)
    }

    /// A view of rows `range` along the first dimension (no copy).
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(!shape.isEmpty && range.lowerBound >= 0 && range.upperBound <= shape[0], "row range \(range) outside \(shape)")
        let rowElems = shape.dropFirst().reduce(1, *)
        precondition(dtype != .q8_0 || range.lowerBound * rowElems % Q8.block == 0, "q8_0 view \(range) of \(shape) splits a block")
        var newShape = shape
        newShape[0] = range.count
        return Tensor(storage: storage, shape: newShape, dtype: dtype,
                      byteOffset: byteOffset + range.lowerBound * rowElems * dtype.size,
                      scales: scales?.advanced(blocks: range.lowerBound * rowElems / Q8.block))
    }

    /// A fresh copy with its own storage.
    public func copy() -> Tensor {
        let out = Tensor(zeros: shape, dtype: dtype)
        if byteCount > 0 { out.raw.copyMemory(from: raw, byteCount: byteCount) }
        if let s = scales, let o = out.scales, blockCount > 0 {
            (o.storage.base + o.byteOffset).copyMemory(from: s.storage.base + s.byteOffset, byteCount: blockCount * 2)
        }
        return out
    }
}
