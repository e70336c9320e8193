import XCTest
import Tensor
import TestSupport

/// The im2col convolutions and the vectorised math against torch and libm.
final class ConvTests: XCTestCase {
    func testConv1dMatchesTorch() throws {
        let f = try Fixtures.tensors("encoders/conv_io.safetensors")
        let x = try f.tensor("x")            // [5, 11] channels-first
        let xt = Tensor(zeros: [11, 5])
        Conv.transpose(x.floats, rows: 5, cols: 11, into: xt.floats)
        let y = try Conv.conv1d(xt.floats, length: 11, channels: 5, weight: try f.tensor("weight"), bias: try f.tensor("bias"),
                                stride: 2, padding: 1)
        XCTAssertEqual(y.shape, [6, 7])
        let ref = try f.tensor("y")          // [7, 6]
        let yt = Tensor(zeros: [7, 6])
        Conv.transpose(y.floats, rows: 6, cols: 7, into: yt.floats)
        XCTAssertLessThanOrEqual(relativeError(yt.toArray(), ref.toArray()), 1e-5)
    }

    func testPatchesOrderMatchesConv2dWeightLayout() throws {
        // One 2-channel 4×4 image, patch 2: patch (py, px) column (c, ky, kx) = x[c, 2py+ky, 2px+kx].
        let vals = (0..<32).map(Float.init)
        let x = try Tensor(shape: [1, 2, 4, 4], values: vals)
        let out = Tensor(zeros: [4, 8])
        Conv.patches(x.floats, images: 1, channels: 2, height: 4, width: 4, patch: 2, into: out.floats)
        for py in 0..<2 { for px in 0..<2 { for c in 0..<2 { for ky in 0..<2 { for kx in 0..<2 {
            XCTAssertEqual(out.floats[(py * 2 + px) * 8 + c * 4 + ky * 2 + kx], vals[c * 16 + (2 * py + ky) * 4 + 2 * px + kx])
        } } } } }
    }

    func testFastExpErfAndSoftmax() {
        var xs: [Float] = []
        var x: Float = -90
        while x < 89 { xs.append(x); x += 0.0137 }
        for chunk in stride(from: 0, to: xs.count - 16, by: 16) {
            let v = FastMath.V(xs[chunk..<(chunk + 16)])
            let e = FastMath.exp(v), r = FastMath.erf(v * 0.05)
            for i in 0..<16 {
                let ref = expf(v[i])
                if ref.isInfinite { XCTAssertEqual(e[i], ref); continue }
                XCTAssertLessThanOrEqual(abs(e[i] - ref), 4e-7 * max(ref, Float.leastNormalMagnitude) + 1e-37, "exp(\(v[i]))")
                XCTAssertLessThanOrEqual(abs(r[i] - erff(v[i] * 0.05)), 1e-6, "erf(\(v[i] * 0.05))")
            }
        }
        let rows = 3, cols = 37
        var a = (0..<(rows * cols)).map { Float(($0 * 7919) % 101) / 13 - 3 }
        var b = a
        var c = a
        a.withUnsafeMutableBufferPointer { FastMath.softmaxVectorised($0.baseAddress!, rows: rows, cols: cols, scale: 0.5, visible: { $0 + 30 }) }
        c.withUnsafeMutableBufferPointer { FastMath.softmax($0.baseAddress!, rows: rows, cols: cols, scale: 0.5, visible: { $0 + 30 }) }
        for r in 0..<rows {
            let n = r + 30
            let row = (0..<n).map { b[r * cols + $0] * 0.5 }
            let m = row.max()!
            let s = row.map { expf($0 - m) }.reduce(0, +)
            for j in 0..<cols { b[r * cols + j] = j < n ? expf(row[j] - m) / s : 0 }
        }
        XCTAssertLessThanOrEqual(relativeError(a, b), 1e-6)
        XCTAssertLessThanOrEqual(relativeError(c, b), 1e-6)
        // GELU / quick-GELU, vector form against libm.
        let g = FastMath.V((0..<16).map { Float($0) * 0.6 - 4.5 })
        let gv = 0.5 * g * (1 + FastMath.erf(g * 0.70710678118654752440))
        for i in 0..<16 { XCTAssertEqual(gv[i], 0.5 * g[i] * (1 + erff(g[i] * 0.70710678118654752440)), accuracy: 1e-6) }
    }
}
