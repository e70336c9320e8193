import Foundation
import Tensor
import TestSupport
import XCTest

final class NormActivationTests: XCTestCase {
    /// RMSNorm (transformers' LlamaRMSNorm) and LayerNorm (torch) with f32, bf16 and f16 weights.
    func testNormsMatchTorch() throws {
        let fx = try KernelFixture("norms")
        for c in fx.cases {
            let name = try c.string("name"), rows = try c.int("rows"), dim = try c.int("dim")
            let x = try fx.floats("\(name)/x"), w = try fx.tensor("\(name)/w"), want = try fx.floats("\(name)/y")
            let eps = Float(try c.double("eps"))
            var y = [Float](repeating: .nan, count: rows * dim)
            let b = try c.bool("bias") ? try fx.tensor("\(name)/b") : nil
            let kind = try c.string("kind")
            x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
                if kind == "rms" {
                    Norm.rms(xp.baseAddress!, rows: rows, dim: dim, weight: w, eps: eps, into: yp.baseAddress!)
                } else {
                    Norm.layer(xp.baseAddress!, rows: rows, dim: dim, weight: w, bias: b, eps: eps, into: yp.baseAddress!)
                }
            } }
            XCTAssertLessThanOrEqual(relativeError(y, want), kernelTolerance, name)
            // In place gives the same result.
            var z = x
            z.withUnsafeMutableBufferPointer { zp in
                if kind == "rms" {
                    Norm.rms(zp.baseAddress!, rows: rows, dim: dim, weight: w, eps: eps, into: zp.baseAddress!)
                } else {
                    Norm.layer(zp.baseAddress!, rows: rows, dim: dim, weight: w, bias: b, eps: eps, into: zp.baseAddress!)
                }
            }
            XCTAssertEqual(z, y, "\(name) in place")
        }
    }

    func testActivationsMatchTorch() throws {
        let fx = try KernelFixture("activations")
        let x = try fx.floats("x"), up = try fx.floats("up")
        let unary: [(String, (UnsafeMutablePointer<Float>, Int) -> Void)] = [
            ("silu", { Activations.silu($0, count: $1) }),
            ("gelu", { Activations.gelu($0, count: $1) }),
            ("gelu_tanh", { Activations.geluTanh($0, count: $1) }),
            ("quick_gelu", { Activations.quickGelu($0, count: $1) }),
        ]
        for (name, f) in unary {
            var y = x
            y.withUnsafeMutableBufferPointer { f($0.baseAddress!, $0.count) }
            XCTAssertLessThanOrEqual(relativeError(y, try fx.floats(name)), kernelTolerance, name)
        }
        // By config name, as models call them.
        for (cfg, ref) in [("silu", "silu"), ("gelu", "gelu"), ("gelu_pytorch_tanh", "gelu_tanh"), ("quick_gelu", "quick_gelu")] {
            var y = x
            try y.withUnsafeMutableBufferPointer { try Activations.apply(cfg, $0.baseAddress!, count: $0.count) }
            XCTAssertLessThanOrEqual(relativeError(y, try fx.floats(ref)), kernelTolerance, cfg)
        }
        var dummy: [Float] = [1]
        XCTAssertThrowsError(try dummy.withUnsafeMutableBufferPointer { try Activations.apply("swoosh", $0.baseAddress!, count: 1) })
        var g = x
        g.withUnsafeMutableBufferPointer { gp in up.withUnsafeBufferPointer { Activations.siluMul(gp.baseAddress!, $0.baseAddress!, count: gp.count) } }
        XCTAssertLessThanOrEqual(relativeError(g, try fx.floats("silu_mul")), kernelTolerance, "silu_mul")
    }

    /// The vector SiLU at the ends of the float range (where its e^x clamps) against Double math.
    func testSiluExtremes() {
        var x: [Float] = [-1000, -200, -100, -88.5, -87.5, -20, -1e-30, 0, 1e-30, 20, 87.5, 88.5, 100, 1000, 3e38, -3e38]
        let want = x.map { v -> Float in let d = Double(v); return Float(d / (1 + Foundation.exp(-d))) }
        x.withUnsafeMutableBufferPointer { Activations.silu($0.baseAddress!, count: $0.count) }
        for i in 0..<x.count {
            XCTAssertEqual(x[i], want[i], accuracy: max(1e-30, abs(want[i]) * 1e-6), "silu(\(want[i]))")
        }
    }

    /// Softmax stays exact for logits in the thousands and rows with masked (−∞) tails.
    func testSoftmaxMatchesTorch() throws {
        let fx = try KernelFixture("activations")
        for c in fx.cases {
            let name = try c.string("name"), rows = try c.int("rows"), cols = try c.int("cols")
            var y = try fx.floats("\(name)/x")
            y.withUnsafeMutableBufferPointer { Activations.softmax($0.baseAddress!, rows: rows, cols: cols) }
            XCTAssertLessThanOrEqual(relativeError(y, try fx.floats("\(name)/y")), kernelTolerance, name)
        }
    }
}
