import Tensor

/// A trainable 1-D convolution over channels-last windows, torch's `Conv1d` (weight `[Cout, Cin, K]`,
/// bias `[Cout]`, zero padding): each window's im2col rows `[Lout, K·Cin]` times the weight permuted
/// to `[Cout, K·Cin]`, as one GEMM over every window. The backward permutes the weight gradient back
/// and scatters the im2col gradient (col2im) into the input's.
final class Conv1dOp {
    let weight: Parameter
    let bias: Parameter
    let stride: Int
    let padding: Int
    private var cols: Tensor?
    private var permuted: Tensor?
    private var windows = 0, length = 0

    init(weight: Parameter, bias: Parameter, stride: Int, padding: Int) {
        self.weight = weight; self.bias = bias; self.stride = stride; self.padding = padding
    }

    var outChannels: Int { weight.shape[0] }
    var inChannels: Int { weight.shape[1] }
    var kernel: Int { weight.shape[2] }

    func outputLength(_ length: Int) -> Int { Conv.outputLength(length, kernel: kernel, stride: stride, padding: padding) }

    /// `x [windows · length, Cin]` → `[windows · Lout, Cout]`.
    func forward(_ x: Tensor, windows n: Int) -> Tensor {
        let cin = inChannels, cout = outChannels, k = kernel
        let l = x.rowCount / max(n, 1), lout = outputLength(l)
        windows = n; length = l
        let wp = Tensor(zeros: [cout, k * cin])
        let w = weight.floats, wpp = wp.floats
        for o in 0..<cout { for c in 0..<cin { for t in 0..<k { wpp[o * k * cin + t * cin + c] = w[(o * cin + c) * k + t] } } }
        let cl = Tensor(zeros: [n * lout, k * cin])
        for win in 0..<n {
            for i in 0..<lout {
                for t in 0..<k {
                    let src = i * stride - padding + t
                    if src >= 0 && src < l { Vec.copyRow(cl, (win * lout + i) * k + t, from: x, win * l + src, width: cin) }
                }
            }
        }
        let y = Tensor(zeros: [n * lout, cout])
        Matmul.xWt(cl, wp, into: y)
        for r in 0..<(n * lout) { Vec.addRow(y, r, bias.value, 0, width: cout) }
        cols = cl; permuted = wp
        return y
    }

    /// `dy [windows · Lout, Cout]` → `dx [windows · length, Cin]` (nil when `needInput` is false).
    func backward(_ dy: Tensor, needInput: Bool) -> Tensor? {
        guard let cl = cols, let wp = permuted else { preconditionFailure("conv1d backward before forward") }
        let cin = inChannels, cout = outChannels, k = kernel, n = windows, l = length, lout = outputLength(l)
        if weight.trainable {
            let dwp = Tensor(zeros: [cout, k * cin])
            Matmul.accumulateDyTx(dy, cl, into: dwp)
            let g = weight.grad.floats, d = dwp.floats
            for o in 0..<cout { for c in 0..<cin { for t in 0..<k { g[(o * cin + c) * k + t] += d[o * k * cin + t * cin + c] } } }
        }
        if bias.trainable { Vec.accumulateColumnSums(dy, into: bias.grad) }
        guard needInput else { return nil }
        let dcols = Tensor(zeros: [n * lout, k * cin])
        Matmul.dyW(dy, wp, into: dcols)
        let dx = Tensor(zeros: [n * l, cin])
        for win in 0..<n {
            for i in 0..<lout {
                for t in 0..<k {
                    let src = i * stride - padding + t
                    if src >= 0 && src < l { Vec.addRow(dx, win * l + src, dcols, (win * lout + i) * k + t, width: cin) }
                }
            }
        }
        return dx
    }

    func release() { cols = nil; permuted = nil }
}
