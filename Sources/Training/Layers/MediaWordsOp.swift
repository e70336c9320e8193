import Foundation
import Models
import Tensor

/// An auxiliary objective for towers that start from random weights (stage 0, `--media-words W`):
/// each medium's rows, exactly as the trunk receives them, are max-pooled over rows and a linear
/// head predicts the words of the sample's answers — a softmax cross-entropy over a small
/// vocabulary (the words of the media samples' answers), each of an answer's k words weighted 1/k
/// (per-word logistic losses learned far slower: docs/TRAINING.md). The trunk's answer loss reaches a tower
/// only through attention over 64 rows; this gives every medium a direct signal for what its
/// answers name (a shape, a count, a direction), and max-pooling rewards a row that detects it
/// wherever it is. The head is training scaffolding: it is never written to the model.
final class MediaWordsOp {
    static let weightName = "media_words_head.weight"
    static let biasName = "media_words_head.bias"

    let weight: Parameter   // [V, h]
    let bias: Parameter     // [V]
    var vocabulary: Int { weight.shape[0] }
    var width: Int { weight.shape[1] }

    /// Weights uniform in ±1/√width from `seed` (as torch's `nn.Linear`), bias 0. Not zero: a zero
    /// head sends the same gradient to every feature and the max-pool's choice of row means nothing
    /// (measured: learning direction took twice the epochs).
    init(vocabulary: Int, width: Int, seed: UInt64) {
        let w = Tensor(zeros: [vocabulary, width])
        var rng = Xoshiro256(seed: seed ^ 0x0057_04D5)
        let bound = 1 / Float(width).squareRoot()
        for i in 0..<w.count { w.floats[i] = Float.random(in: -bound..<bound, using: &rng) }
        weight = Parameter(name: Self.weightName, value: w, trainable: true)
        bias = Parameter(name: Self.biasName, value: Tensor(zeros: [vocabulary]), trainable: true)
    }

    /// One medium: rows `start..<start+count` of the media rows and the vocabulary indices of its words.
    struct Segment {
        var start: Int
        var count: Int
        var words: [Int]
    }

    /// Summed loss Σ_segments −Σ_v t_v log softmax(z)_v with z = W·maxpool(rows) + b and t the
    /// segment's words, 1/k each; adds `scale` × its gradient (softmax(z) − t) to the head's
    /// gradients and to `mediaGrad` (same shape as `media`). A segment without words adds nothing.
    func accumulate(media: Tensor, segments: [Segment], scale: Float, mediaGrad: Tensor?) -> Double {
        let h = width, v = vocabulary
        precondition(media.lastDim == h, "media rows of width \(media.lastDim), head of width \(h)")
        let m = media.floats, w = weight.value.floats, b = bias.value.floats
        let dw = weight.grad.floats, db = bias.grad.floats
        var pooled = [Float](repeating: 0, count: h), argmax = [Int](repeating: 0, count: h)
        var target = [Float](repeating: 0, count: v), dz = [Float](repeating: 0, count: v)
        var total = 0.0
        for s in segments where s.count > 0 && !s.words.isEmpty {
            for c in 0..<h { pooled[c] = m[s.start * h + c]; argmax[c] = s.start }
            for r in (s.start + 1)..<(s.start + s.count) {
                let row = m + r * h
                for c in 0..<h where row[c] > pooled[c] { pooled[c] = row[c]; argmax[c] = r }
            }
            for i in 0..<v { target[i] = 0 }
            for word in s.words { target[word] += 1 / Float(s.words.count) }
            var zmax = -Float.infinity
            for i in 0..<v {
                var z = b[i]
                let wr = w + i * h
                for c in 0..<h { z += wr[c] * pooled[c] }
                dz[i] = z
                zmax = max(zmax, z)
            }
            var sum = 0.0
            for i in 0..<v { sum += exp(Double(dz[i] - zmax)) }
            let logSum = log(sum)
            for i in 0..<v {
                let logP = Double(dz[i] - zmax) - logSum
                total -= Double(target[i]) * logP
                dz[i] = (Float(exp(logP)) - target[i]) * scale
                db[i] += dz[i]
                let dwr = dw + i * h
                for c in 0..<h { dwr[c] += dz[i] * pooled[c] }
            }
            guard let g = mediaGrad?.floats else { continue }
            for c in 0..<h {
                var d: Float = 0
                for i in 0..<v { d += dz[i] * w[i * h + c] }
                g[argmax[c] * h + c] += d
            }
        }
        return total
    }

    /// The words a vocabulary is made of: lower-case runs of letters.
    static func words(_ text: String) -> [String] {
        text.lowercased().split { !$0.isLetter }.map(String.init)
    }
}
