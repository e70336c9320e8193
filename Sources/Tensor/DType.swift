/// Storage element types a checkpoint may hold. Compute is always f32; narrower types are widened
/// inside the kernels that read them (bf16→f32 is exact, f32→bf16 rounds to nearest even).
///
/// `q8_0` is GGUF's block quantisation: blocks of 32 consecutive elements (row-major), each stored
/// as 32 int8 quants `q` and one f16 scale `d`, the value being `Float(q) · d`. A q8_0 tensor keeps
/// its int8 quants in its storage (`size` 1) and the scales beside them (`Tensor.scales`); only
/// `Tensor` methods and the q8_0 kernels read it (`Convert` cannot: it has no scales).
public enum DType: String, Sendable, CaseIterable {
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"
    case q8_0 = "Q8_0"

    /// Bytes per element (q8_0: of the int8 quants; the f16 scales add 2 bytes per 32 elements).
    public var size: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q8_0: return 1
        }
    }
}

/// Element conversions between the storage types. Hot loops call the buffer forms, which the
/// optimiser vectorises.
public enum Convert {
    @inline(__always) public static func bf16ToF32(_ x: UInt16) -> Float {
        Float(bitPattern: UInt32(x) << 16)
    }

    /// Round to nearest even; NaN stays NaN (quiet).
    @inline(__always) public static func f32ToBF16(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: (bits >> 16) | 0x40) }
        let rounding = UInt32(0x7FFF) &+ ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }

    @inline(__always) public static func f16ToF32(_ x: UInt16) -> Float {
        Float(Float16(bitPattern: x))
    }

    @inline(__always) public static func f32ToF16(_ x: Float) -> UInt16 {
        Float16(x).bitPattern
    }

    /// Widens `count` elements of `dtype` at `src` into f32 at `dst`.
    public static func toF32(_ src: UnsafeRawPointer, _ dtype: DType, count: Int, into dst: UnsafeMutablePointer<Float>) {
        switch dtype {
        case .f32:
            dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
        case .bf16:
            let s = src.assumingMemoryBound(to: UInt16.self)
            let d = UnsafeMutableRawPointer(dst).assumingMemoryBound(to: UInt32.self)
            for i in 0..<count { d[i] = UInt32(s[i]) << 16 }
        case .f16:
            let s = src.assumingMemoryBound(to: Float16.self)
            for i in 0..<count { dst[i] = Float(s[i]) }
        case .q8_0:
            preconditionFailure("q8_0 needs its block scales: widen through Tensor (widenRows, converted)")
        }
    }

    /// Narrows `count` f32 elements at `src` into `dtype` at `dst`.
    public static func fromF32(_ src: UnsafePointer<Float>, count: Int, to dtype: DType, into dst: UnsafeMutableRawPointer) {
        switch dtype {
        case .f32:
            dst.assumingMemoryBound(to: Float.self).update(from: src, count: count)
        case .bf16:
            let d = dst.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { d[i] = f32ToBF16(src[i]) }
        case .f16:
            let d = dst.assumingMemoryBound(to: Float16.self)
            for i in 0..<count { d[i] = Float16(src[i]) }
        case .q8_0:
            preconditionFailure("q8_0 needs block scales: quantise through Tensor.converted(to: .q8_0)")
        }
    }
}
