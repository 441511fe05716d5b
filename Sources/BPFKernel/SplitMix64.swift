// SplitMix64.swift — a small seedable random generator for the lab's random testing.
//
// Mirrors no kernel file (the kernel's prandom is lib/random32.c); it exists so that a
// random-operation run or a fuzzed file can be replayed from the seed it printed.

/// SplitMix64 (Steele, Lea, Flood 2014): reproducible from its seed, good enough to drive
/// tests, never for keys.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
