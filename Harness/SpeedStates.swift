// SpeedStates.swift — this VM runs at two speeds, switching every few seconds (the
// baseline at ~2.2 or ~4.0 ns per packet). Overheads in ns scale with the speed, so a run
// that happened to spend more time slow reports larger ones. The baseline windows show
// which state each moment was in: they fall into two clusters, split here by 1-D 2-means;
// each design window takes the state of the baseline windows around it. Overheads per
// state (and relative to the baseline, in %) are what compare between runs.
import Foundation

public struct SpeedStates: Sendable, Codable, Equatable {
    /// Baseline ns per packet below which a window is in the fast state.
    public let threshold: Double
    /// The two clusters' centres (ns per packet of the baseline).
    public let fastNs: Double, slowNs: Double

    /// Two states when the baseline windows form two clusters whose centres differ by
    /// more than 20% and each holds at least 10% of the windows; nil otherwise (one state).
    public static func classify(_ baseline: [Double]) -> SpeedStates? {
        let xs = baseline.filter(\.isFinite).sorted()
        guard xs.count >= 10 else { return nil }
        var lo = xs[xs.count / 10], hi = xs[xs.count * 9 / 10]
        guard hi > lo * 1.2 else { return nil }
        var cut = (lo + hi) / 2
        for _ in 0..<50 {  // Lloyd's iterations in one dimension
            let a = xs.filter { $0 < cut }, b = xs.filter { $0 >= cut }
            guard !a.isEmpty, !b.isEmpty else { return nil }
            lo = a.reduce(0, +) / Double(a.count)
            hi = b.reduce(0, +) / Double(b.count)
            let next = (lo + hi) / 2
            if abs(next - cut) < 1e-12 { break }
            cut = next
        }
        let fastShare = Double(xs.filter { $0 < cut }.count) / Double(xs.count)
        guard hi > lo * 1.2, fastShare >= 0.1, fastShare <= 0.9 else { return nil }
        return SpeedStates(threshold: cut, fastNs: lo, slowNs: hi)
    }

    public func isFast(baselineNs: Double) -> Bool { baselineNs < threshold }
}
