import Foundation

/// Convolutions the encoders need, written as one large GEMM over unfolded input (im2col), never
/// as per-patch or per-position small products: CLIP's stride-p patch embedding and Whisper's two
/// 1-D convolutions.
public enum Conv {
    /// Non-overlapping p×p patches of images `[n, C, H, W]` → rows `[n·(H/p)·(W/p), C·p·p]`, rows in
    /// raster order of the patch grid, columns ordered (c, ky, kx) like Conv2d's weight `[out, C, p, p]`,
    /// so `Linear.forward(rows, weight: w.reshaped([out, C·p·p]))` is the convolution.
    public static func patches(_ x: UnsafePointer<Float>, images: Int, channels: Int, height: Int, width: Int,
                               patch p: Int, into out: UnsafeMutablePointer<Float>) {
        let gh = height / p, gw = width / p
        let rowLen = channels * p * p
        for n in 0..<images {
            for py in 0..<gh {
                for px in 0..<gw {
                    var dst = out + ((n * gh + py) * gw + px) * rowLen
                    for c in 0..<channels {
                        let plane = x + (n * channels + c) * height * width
                        for ky in 0..<p {
                            let src = plane + (py * p + ky) * width + px * p
                            dst.update(from: src, count: p)
                            dst += p
                        }
                    }
                }
            }
        }
    }

    /// Output length of a 1-D convolution (torch's formula, dilation 1).
    public static func outputLength(_ length: Int, kernel: Int, stride: Int, padding: Int) -> Int {
        (length + 2 * padding - kernel) / stride + 1
    }

    /// Conv1d over a channels-last sequence `x [length, Cin]` with torch's weight `[Cout, Cin, K]`
    /// (any dtype) and optional bias `[Cout]`: returns `[Lout, Cout]`, channels-last again, computed as
    /// im2col rows `[Lout, K·Cin]` times the weight permuted to `[Cout, K·Cin]`.
    public static func conv1d(_ x: UnsafePointer<Float>, length: Int, channels: Int, weight: Tensor, bias: Tensor?,
                              stride: Int, padding: Int) throws -> Tensor {
        guard weight.rank == 3, weight.shape[1] == channels, stride > 0, padding >= 0 else {
            throw TensorError.shapeMismatch("conv1d weight \(weight.shape) for \(channels) input channels, stride \(stride), padding \(padding)")
        }
        let cout = weight.shape[0], k = weight.shape[2]
        if let bias, bias.count != cout { throw TensorError.shapeMismatch("conv1d bias \(bias.shape) for \(cout) output channels") }
        let lout = outputLength(length, kernel: k, stride: stride, padding: padding)
        guard lout > 0 else { throw TensorError.shapeMismatch("conv1d over \(length) positions with kernel \(k) gives no output") }
        // Weight [Cout, Cin, K] → [Cout, K, Cin] so each kernel tap reads one contiguous input row.
        let w = weight.converted(to: .f32)
        let wp = Tensor(zeros: [cout, k * channels])
        for o in 0..<cout {
            for c in 0..<channels {
                for t in 0..<k { wp.floats[o * k * channels + t * channels + c] = w.floats[(o * channels + c) * k + t] }
            }
        }
        let cols = Tensor(zeros: [lout, k * channels])
        FastMath.parallel(lout, minChunk: 64) { range in
            for i in range {
                for t in 0..<k {
                    let src = i * stride - padding + t
                    let dst = cols.floats + (i * k + t) * channels
                    if src >= 0 && src < length { dst.update(from: x + src * channels, count: channels) }
                }
            }
        }
        let y = Tensor(zeros: [lout, cout])
        Linear.forward(cols.floats, rows: lout, weight: wp, bias: bias, into: y.floats)
        return y
    }

    /// `out[c, r] = x[r, c]` for `x [rows, cols]` (e.g. a mel spectrogram to channels-last).
    public static func transpose(_ x: UnsafePointer<Float>, rows: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
        let b = 32
        var r0 = 0
        while r0 < rows {
            var c0 = 0
            while c0 < cols {
                for r in r0..<min(rows, r0 + b) {
                    for c in c0..<min(cols, c0 + b) { out[c * rows + r] = x[r * cols + c] }
                }
                c0 += b
            }
            r0 += b
        }
    }
}
