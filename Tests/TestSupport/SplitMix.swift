/// SplitMix64 for test values: deterministic, seedable, floats uniform in [-1, 1).
public struct SplitMix {
    public var state: UInt64
    public init(_ seed: UInt64) { state = seed }
    public mutating func next() -> Float {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Float(z >> 40) / Float(1 << 23) - 1
    }
}
