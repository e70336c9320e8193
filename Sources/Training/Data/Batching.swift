import Foundation
import Models

/// Modality-grouped batches, as the reference's sampler: samples are grouped by the modalities they
/// carry, shuffled within each group, cut into batches of `batchSize` (a group's last batch may be
/// smaller), and the batches shuffled; every batch holds one modality group. The order of an epoch
/// depends only on (seed, epoch), so a resumed run sees exactly the batches an uninterrupted one does.
/// Groups in `skipping` (`--media-words-only` skips "text") are shuffled as usual and then left out,
/// so the other groups' batches come in the order they would have without the skip.
public struct ModalityBatcher: Sendable {
    public let groups: [String: [Int]]
    public let batchSize: Int
    public let seed: UInt64
    public let skipping: Set<String>

    public init(samples: [RawSample], batchSize: Int, seed: UInt64, skipping: Set<String> = []) {
        var g: [String: [Int]] = [:]
        for (i, s) in samples.enumerated() { g[s.modalityGroup, default: []].append(i) }
        groups = g
        self.batchSize = max(1, batchSize)
        self.seed = seed
        self.skipping = skipping
    }

    /// Batches (sample indices) of one epoch.
    public func batches(epoch: Int) -> [[Int]] {
        var rng = Xoshiro256(seed: seed &+ UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15)
        var out: [[Int]] = []
        for key in groups.keys.sorted() {
            var idx = groups[key] ?? []
            Self.shuffle(&idx, &rng)
            var i = 0
            while i < idx.count { out.append(Array(idx[i..<min(i + batchSize, idx.count)])); i += batchSize }
        }
        Self.shuffle(&out, &rng)
        guard !skipping.isEmpty else { return out }
        let skipped = Set(skipping.flatMap { groups[$0] ?? [] })
        return out.filter { !skipped.contains($0[0]) }
    }

    /// Fisher–Yates with our own generator (the standard library's shuffle may change between releases).
    static func shuffle<T>(_ a: inout [T], _ rng: inout Xoshiro256) {
        guard a.count > 1 else { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) {
            let j = Int(rng.next() % UInt64(i + 1))
            a.swapAt(i, j)
        }
    }
}
