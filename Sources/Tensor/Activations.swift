import Foundation

/// Element-wise and row-wise kernels, in place over f32 buffers, matching PyTorch's formulas.
public enum Activations {
    /// x · σ(x). Vectorised with `FastMath.exp` (~2 ulp): it runs on every MLP row of every token,
    /// and a libm `expf` per element costs ~10% of a prefill.
    public static func silu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        let r = UnsafeMutableRawPointer(x)
        while i + 16 <= count {
            let v = r.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            r.storeBytes(of: v / (1 + FastMath.exp(-v)), toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < count { let v = x[i]; x[i] = v / (1 + expf(-v)); i += 1 }
    }

    /// SwiGLU gate: gate[i] = silu(gate[i]) · up[i] (vectorised like `silu`).
    public static func siluMul(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        var i = 0
        let r = UnsafeMutableRawPointer(gate), u = UnsafeRawPointer(up)
        while i + 16 <= count {
            let v = r.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            let w = u.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            r.storeBytes(of: v / (1 + FastMath.exp(-v)) * w, toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < count { let v = gate[i]; gate[i] = v / (1 + expf(-v)) * up[i]; i += 1 }
    }

    /// Exact GELU, 0.5·x·(1 + erf(x/√2)) (torch `gelu`, approximate='none').
    public static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        let r: Float = 0.70710678118654752440
        for i in 0..<count { let v = x[i]; x[i] = 0.5 * v * (1 + erff(v * r)) }
    }

    /// tanh GELU (torch `gelu`, approximate='tanh'; HF `gelu_new` / `gelu_pytorch_tanh`).
    public static func geluTanh(_ x: UnsafeMutablePointer<Float>, count: Int) {
        let c: Float = 0.7978845608028654
        for i in 0..<count { let v = x[i]; x[i] = 0.5 * v * (1 + tanhf(c * (v + 0.044715 * v * v * v))) }
    }

    /// x · σ(1.702·x) (CLIP's quick_gelu).
    public static func quickGelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { let v = x[i]; x[i] = v / (1 + expf(-1.702 * v)) }
    }

    /// Numerically stable softmax over each row of `[rows, cols]`.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        for r in 0..<rows {
            let row = x + r * cols
            var m = -Float.infinity
            for i in 0..<cols { m = max(m, row[i]) }
            if m == -Float.infinity { for i in 0..<cols { row[i] = 0 }; continue }
            var s: Float = 0
            for i in 0..<cols { let e = expf(row[i] - m); row[i] = e; s += e }
            let inv = 1 / s
            for i in 0..<cols { row[i] *= inv }
        }
    }

    /// Applies an activation named as in Hugging Face configs (`hidden_act`).
    public static func apply(_ name: String, _ x: UnsafeMutablePointer<Float>, count: Int) throws {
        switch name {
        case "silu", "swish": silu(x, count: count)
        case "gelu": gelu(x, count: count)
        case "gelu_new", "gelu_pytorch_tanh", "gelu_fast": geluTanh(x, count: count)
        case "quick_gelu": quickGelu(x, count: count)
        case "relu": for i in 0..<count { x[i] = max(0, x[i]) }
        default: throw TensorError.unsupported("activation '\(name)'")
        }
    }
}
