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

/// A contiguous row-major n-dimensional array in one of the storage dtypes. Value semantics for the
/// shape; the bytes are shared by views (`rows`, `reshaped`) and written only by the code that
/// created them.
public struct Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let dtype: DType
    public let storage: TensorStorage
    /// Byte offset of element 0 inside `storage`.
    public let byteOffset: Int

    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }
    public var byteCount: Int { count * dtype.size }
    /// Number of rows when seen as a matrix `[count / lastDim, lastDim]`.
    public var rowCount: Int { shape.isEmpty ? 1 : (shape.last! == 0 ? 0 : count / shape.last!) }
    public var lastDim: Int { shape.last ?? 1 }

    public var raw: UnsafeMutableRawPointer { storage.base + byteOffset }

    public init(storage: TensorStorage, shape: [Int], dtype: DType, byteOffset: Int = 0) {
        self.storage = storage
        self.shape = shape
        self.dtype = dtype
        self.byteOffset = byteOffset
    }

    /// Zero-filled tensor.
    public init(zeros shape: [Int], dtype: DType = .f32) {
        let n = shape.reduce(1, *)
        self.init(storage: TensorStorage(byteCount: n * dtype.size), shape: shape, dtype: dtype)
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
            if n > 0 { Convert.toF32(UnsafeRawPointer(raw), dtype, count: n, into: buf.baseAddress!) }
            initialized = n
        }
    }

    /// This tensor in another dtype (self when already so).
    public func converted(to target: DType) -> Tensor {
        if target == dtype { return self }
        let out = Tensor(zeros: shape, dtype: target)
        let n = count
        if n == 0 { return out }
        if dtype == .f32 {
            Convert.fromF32(floats, count: n, to: target, into: out.raw)
        } else if target == .f32 {
            Convert.toF32(UnsafeRawPointer(raw), dtype, count: n, into: out.floats)
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
        return Tensor(storage: storage, shape: newShape, dtype: dtype, byteOffset: byteOffset)
    }

    /// A view of rows `range` along the first dimension (no copy).
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(!shape.isEmpty && range.lowerBound >= 0 && range.upperBound <= shape[0], "row range \(range) outside \(shape)")
        let rowElems = shape.dropFirst().reduce(1, *)
        var newShape = shape
        newShape[0] = range.count
        return Tensor(storage: storage, shape: newShape, dtype: dtype,
                      byteOffset: byteOffset + range.lowerBound * rowElems * dtype.size)
    }

    /// A fresh copy with its own storage.
    public func copy() -> Tensor {
        let out = Tensor(zeros: shape, dtype: dtype)
        if byteCount > 0 { out.raw.copyMemory(from: raw, byteCount: byteCount) }
        return out
    }
}
