import Foundation
import Tensor

/// The project's own seeded random generator, so a seed gives the same tokens on every platform
/// and Swift version: xoshiro256** (Blackman & Vigna 2018) with its state filled from the seed by
/// SplitMix64, as the authors recommend. Not cryptographic.
public struct Xoshiro256: RandomNumberGenerator, Sendable, Equatable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var z = seed
        func splitMix() -> UInt64 {
            z &+= 0x9E37_79B9_7F4A_7C15
            var x = z
            x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
            x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
            return x ^ (x >> 31)
        }
        s = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    public mutating func next() -> UInt64 {
        let result = rotl(s.1 &* 5, 7) &* 9
        let t = s.1 << 17
        s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3
        s.2 ^= t
        s.3 = rotl(s.3, 45)
        return result
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextUnit() -> Double { Double(next() >> 11) * (1.0 / 9007199254740992.0) }

    /// Uniform in the open interval (0, 1) (safe under `log`).
    public mutating func nextOpenUnit() -> Double { (Double(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0) }

    @inline(__always) private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    public static func == (a: Xoshiro256, b: Xoshiro256) -> Bool {
        a.s.0 == b.s.0 && a.s.1 == b.s.1 && a.s.2 == b.s.2 && a.s.3 == b.s.3
    }
}

/// How the next token is chosen from the logits. Temperature 0 is greedy (argmax, lowest id on
/// ties, as torch.argmax); otherwise the logits are divided by the temperature, cut to the `topK`
/// highest (0 = no cut; ties with the k-th value kept, as transformers), then to the smallest set
/// whose probability reaches `topP` (1 = no cut), and one id is drawn with the seeded generator.
public struct SamplingParameters: Sendable, Equatable {
    public var temperature: Float
    public var topK: Int
    public var topP: Float
    public var seed: UInt64

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
    }

    public var isGreedy: Bool { temperature <= 0 }
}

/// Picks token ids from logits under `SamplingParameters`, keeping its random state across calls
/// (one sampler per sequence) and its work buffers across steps: greedy, temperature and top-k
/// allocate nothing per token once the vocabulary size has been seen; top-p sorts its candidates
/// in one temporary array.
public final class Sampler {
    public let parameters: SamplingParameters
    public private(set) var rng: Xoshiro256
    private var order: [Int32] = []
    private var probs: [Float] = []

    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        rng = Xoshiro256(seed: parameters.seed)
    }

    /// Index of the largest value; the lowest index wins ties.
    public static func argmax(_ x: UnsafePointer<Float>, count: Int) -> Int {
        var best = 0
        var bv = x[0]
        for i in 1..<max(count, 1) where x[i] > bv { bv = x[i]; best = i }
        return best
    }

    /// The next token for one row of logits (`count` = vocabulary size).
    public func sample(_ logits: UnsafePointer<Float>, count: Int) -> Int {
        precondition(count > 0, "empty logits")
        let p = parameters
        if p.isGreedy { return Self.argmax(logits, count: count) }
        if order.count < count {
            order = [Int32](repeating: 0, count: count)
            probs = [Float](repeating: 0, count: count)
        }
        return order.withUnsafeMutableBufferPointer { ob in
            probs.withUnsafeMutableBufferPointer { pb in
                draw(logits, count: count, order: ob.baseAddress!, probs: pb.baseAddress!)
            }
        }
    }

    /// The next token for the last row of a `[rows, vocab]` logits tensor (f32).
    public func sample(_ logits: Tensor) -> Int {
        let vocab = logits.lastDim
        return sample(logits.floats + (logits.rowCount - 1) * vocab, count: vocab)
    }

    private func draw(_ logits: UnsafePointer<Float>, count: Int, order: UnsafeMutablePointer<Int32>,
                      probs: UnsafeMutablePointer<Float>) -> Int {
        let p = parameters
        let invT = 1 / p.temperature
        // Candidates: all ids, or those ≥ the k-th largest value (ties kept).
        var n = 0
        if p.topK > 0 && p.topK < count {
            let kth = kthLargest(logits, count: count, k: p.topK, scratch: probs)
            for i in 0..<count where logits[i] >= kth { order[n] = Int32(i); n += 1 }
        } else {
            for i in 0..<count { order[i] = Int32(i) }
            n = count
        }
        // Softmax over the candidates at temperature T, in the candidates' order.
        var m = -Float.infinity
        for j in 0..<n { m = max(m, logits[Int(order[j])] * invT) }
        var total: Double = 0
        for j in 0..<n {
            let e = expf(logits[Int(order[j])] * invT - m)
            probs[j] = e
            total += Double(e)
        }
        if p.topP < 1 {
            // Smallest highest-probability prefix whose mass reaches topP (at least one id).
            let ob = UnsafeMutableBufferPointer(start: order, count: n)
            var pairs = (0..<n).map { (probs[$0], ob[$0]) }
            pairs.sort { $0.0 > $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
            let target = Double(p.topP) * total
            var kept = 0
            var mass: Double = 0
            while kept < n {
                mass += Double(pairs[kept].0)
                kept += 1
                if mass >= target { break }
            }
            for j in 0..<kept { probs[j] = pairs[j].0; order[j] = pairs[j].1 }
            n = kept
            total = mass
        }
        var u = rng.nextUnit() * total
        for j in 0..<n {
            u -= Double(probs[j])
            if u < 0 { return Int(order[j]) }
        }
        return Int(order[n - 1])
    }

    /// The k-th largest value (k ≥ 1), via a copy and partial selection.
    private func kthLargest(_ x: UnsafePointer<Float>, count: Int, k: Int, scratch: UnsafeMutablePointer<Float>) -> Float {
        scratch.update(from: x, count: count)
        let buf = UnsafeMutableBufferPointer(start: scratch, count: count)
        // Quickselect for position k-1 in descending order.
        var lo = 0, hi = count - 1
        let target = k - 1
        while lo < hi {
            let pivot = buf[(lo + hi) / 2]
            var i = lo, j = hi
            while i <= j {
                while buf[i] > pivot { i += 1 }
                while buf[j] < pivot { j -= 1 }
                if i <= j { buf.swapAt(i, j); i += 1; j -= 1 }
            }
            if target <= j { hi = j } else if target >= i { lo = i } else { break }
        }
        return buf[target]
    }
}
