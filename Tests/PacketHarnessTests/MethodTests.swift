// The bench's arithmetic on synthetic windows with a known answer: a design costing
// 1.0 ns at the fast speed (baseline 2.2 ns) and 1.0 × 4.0 / 2.2 ns at the slow one
// (baseline 4.0 ns), the VM switching speed in runs of windows, noise of known spread.
// The speed states are found, each state's overhead is recovered, the relative overhead
// is the same in both, and the intervals (windows, blocks) cover the truth.
import XCTest
import BPFKernel
@testable import PacketHarness

final class MethodTests: XCTestCase {
    private func window(_ d: DesignID, ns: Double, trial: Int, window: Int, block: Int, baseline: Double?) -> TrialResult {
        var r = TrialResult(design: d, trial: trial, mpps: 1000 / ns, mppsPerWorker: 1000 / ns, nsPerPacket: ns, cyclesPerPacket: ns * 2.6,
                            counters: .zero, perQueue: [], churnRate: nil, gracePeriodMeanNs: nil)
        r.window = window
        r.block = block
        r.baselineNs = baseline
        return r
    }

    /// trials × (B d B) with the speed switching every `run` trials.
    private func synthetic(trials: Int, blocks: Int, seed: UInt64) -> [TrialResult] {
        var rng = SplitMix64(seed: seed)
        func noise() -> Double { (Double(rng.next() % 10_000) / 10_000 - 0.5) * 0.2 }  // ±0.1 ns
        var out: [TrialResult] = []
        for t in 0..<trials {
            let slow = (t / 12) % 2 == 1  // the speed changes every 12 trials: between blocks
            let base = slow ? 4.0 : 2.2
            let b0 = base + noise(), b1 = base + noise()
            let cost = 1.0 * base / 2.2
            let block = t * blocks / trials
            out.append(window(.baseline, ns: b0, trial: t, window: 0, block: block, baseline: nil))
            out.append(window(.chainPass, ns: base + cost + noise(), trial: t, window: 1, block: block, baseline: (b0 + b1) / 2))
            out.append(window(.baseline, ns: b1, trial: t, window: 2, block: block, baseline: nil))
        }
        return out
    }

    func testSpeedStatesAndPerStateOverheadsAreRecovered() throws {
        let rs = synthetic(trials: 60, blocks: 5, seed: 7)
        let st = try XCTUnwrap(SpeedStates.classify(rs.filter { $0.design == .baseline }.map(\.nsPerPacket)))
        XCTAssertEqual(st.fastNs, 2.2, accuracy: 0.05)
        XCTAssertEqual(st.slowNs, 4.0, accuracy: 0.05)
        let s = Bench.summarize(rs, designs: [.baseline, .chainPass], blocks: 5)[1]
        XCTAssertEqual(s.fastOverheadNs!, 1.0, accuracy: s.fastOverheadCI95! + 0.01)
        XCTAssertEqual(s.slowOverheadNs!, 4.0 / 2.2, accuracy: s.slowOverheadCI95! + 0.01)
        XCTAssertEqual(s.fastWindows! + s.slowWindows!, 60)
        XCTAssertEqual(s.overheadPct!, 100 / 2.2, accuracy: 2, "relative to the baseline, the cost is the same at both speeds")
        // The truth over this run's mix of speeds lies inside both intervals.
        let truth = (1.0 * Double(s.fastWindows!) + 4.0 / 2.2 * Double(s.slowWindows!)) / 60
        XCTAssertEqual(s.overheadNs!, truth, accuracy: s.overheadCI95!)
        XCTAssertEqual(s.blockOverheadNs!, truth, accuracy: s.blockCI95!)
    }

    func testOneSpeedIsOneState() {
        let rs = synthetic(trials: 60, blocks: 1, seed: 9).map { r -> TrialResult in
            guard r.design == .baseline, r.nsPerPacket > 3 else { return r }
            return window(.baseline, ns: r.nsPerPacket - 1.8, trial: r.trial, window: r.window, block: 0, baseline: nil)
        }
        XCTAssertNil(SpeedStates.classify(rs.filter { $0.design == .baseline }.map(\.nsPerPacket)))
        XCTAssertNil(Bench.summarize(rs, designs: [.chainPass])[0].fastOverheadNs)
    }

    /// Blocks at different speeds: the interval over block means is wider than the one
    /// over windows — it carries the between-block variation the windows' interval misses.
    func testTheBlockIntervalCarriesVariationBetweenBlocks() {
        let rs = synthetic(trials: 60, blocks: 5, seed: 11)
        let s = Bench.summarize(rs, designs: [.chainPass], blocks: 5)[0]
        XCTAssertGreaterThan(s.blockCI95!, s.overheadCI95!)
    }
}
