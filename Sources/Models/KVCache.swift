import Tensor

/// The keys and values one sequence has produced so far, per decoder layer, stored as f32
/// `[capacity, kvHeads · headDim]` rows after RoPE. Owned by whoever holds the sequence (the
/// generator, or the router process per live request); the trunk appends to it during `forward`.
///
/// `@unchecked Sendable`: a cache may move between threads with its sequence, but it is used by
/// one `forward` at a time (the owner's responsibility; the trunk never shares one).
public final class KVCache: @unchecked Sendable {
    public let layers: Int
    /// Floats per position per layer (kvHeads · headDim).
    public let width: Int
    /// Positions stored (also the position of the next token).
    public private(set) var count: Int = 0
    public private(set) var capacity: Int = 0
    private var keys: [UnsafeMutablePointer<Float>] = []
    private var values: [UnsafeMutablePointer<Float>] = []

    public init(layers: Int, width: Int, capacity: Int = 0) {
        self.layers = layers
        self.width = width
        reserve(capacity)
    }

    deinit {
        for p in keys { p.deallocate() }
        for p in values { p.deallocate() }
    }

    /// Makes room for `positions` in total without further allocation (generation reserves
    /// prompt + max new tokens up front).
    public func reserve(_ positions: Int) {
        guard positions > capacity else { return }
        let newCap = max(positions, 16)
        var nk: [UnsafeMutablePointer<Float>] = [], nv: [UnsafeMutablePointer<Float>] = []
        for l in 0..<layers {
            let k = UnsafeMutablePointer<Float>.allocate(capacity: newCap * width)
            let v = UnsafeMutablePointer<Float>.allocate(capacity: newCap * width)
            if capacity > 0 {
                k.update(from: keys[l], count: count * width)
                v.update(from: values[l], count: count * width)
                keys[l].deallocate(); values[l].deallocate()
            }
            nk.append(k); nv.append(v)
        }
        keys = nk; values = nv
        capacity = newCap
    }

    /// Grows geometrically so a sequence growing one token at a time reallocates rarely.
    func ensure(_ positions: Int) {
        if positions > capacity { reserve(max(positions, capacity + capacity / 2)) }
    }

    /// Keys of `layer`, `[count, width]` (plus any rows written by the forward in progress).
    public func keys(layer: Int) -> UnsafeMutablePointer<Float> { keys[layer] }
    public func values(layer: Int) -> UnsafeMutablePointer<Float> { values[layer] }

    /// Marks `n` more positions as filled (the trunk, after every layer has written them).
    func advance(by n: Int) { count += n }

    /// Forgets positions from `length` on (e.g. to rewind a sequence); keeps the memory.
    public func truncate(to length: Int) {
        count = max(0, min(count, length))
    }

    /// Forgets every position; keeps the memory for the next sequence.
    public func reset() { count = 0 }
}
