// The interval's arithmetic: Student's t quantiles for any degrees of freedom (the old
// table stopped at 30 and clamped 31–60 at 2.000), checked against published values.
import XCTest
import Foundation
@testable import PacketHarness

final class StatisticsTests: XCTestCase {
    func testStudentT975MatchesPublishedQuantilesForAnyDegreesOfFreedom() {
        let published: [(Int, Double)] = [(1, 12.7062), (2, 4.3027), (5, 2.5706), (10, 2.2281), (30, 2.0423),
                                          (31, 2.0395), (40, 2.0211), (59, 2.0010), (60, 2.0003), (120, 1.9799), (1000, 1.9623)]
        for (dof, t) in published {
            XCTAssertEqual(studentT975(dof), t, accuracy: 1e-4, "dof \(dof)")
        }
        XCTAssertTrue(studentT975(0).isNaN)
        XCTAssertEqual(studentTQuantile(0.995, dof: 10), 3.1693, accuracy: 1e-4)
    }

    func testMeanCI95OnSyntheticWindowsWithAKnownAnswer() {
        // 41 windows: 1.0 ± 0.1 alternating around 1.0 → sd = 0.1 (n−1 denominator ≈ 0.10124).
        let xs = (0..<41).map { 1.0 + ($0 % 2 == 0 ? 0.1 : -0.1) * ($0 == 40 ? 0 : 1) }
        let (m, h) = meanCI95(xs)
        let n = Double(xs.count)
        let mean = xs.reduce(0, +) / n
        let sd = (xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / (n - 1)).squareRoot()
        XCTAssertEqual(m, mean, accuracy: 1e-12)
        XCTAssertEqual(h, 2.0211 * sd / n.squareRoot(), accuracy: 1e-4, "t(40) = 2.0211, not the old 2.000")
    }

    func testMoreWorkersThanCPUsNeedsOversubscribeAndIsFlagged() throws {
        var c = BenchConfig()
        c.threads = ProcessInfo.processInfo.activeProcessorCount + 1
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains("--oversubscribe"), "\($0)") }
        c.oversubscribe = true
        XCTAssertNoThrow(try c.validate())
        c.designs = [.baseline]
        c.trials = 2
        c.targetCI = 0
        let report = try Bench(c).run()
        XCTAssertTrue(report.oversubscribed)
        XCTAssertTrue(report.table().contains("OVERSUBSCRIBED"))
        XCTAssertTrue(report.table().contains("TSC ticks/pkt"))
        XCTAssertTrue(report.machine.line(workers: 1).contains("steps of"))
        XCTAssertGreaterThanOrEqual(report.machine.tscStepTicks, 1)
    }
}

final class ResultsFileTests: XCTestCase {
    func testResultsRoundTripThroughCodableAndCompare() throws {
        var c = BenchConfig()
        c.designs = [.baseline, .chainPass, .tailJIT]
        c.trials = 3
        c.targetCI = 0
        let a = try Bench(c).run(), b = try Bench(c).run()
        let ja = a.json(command: ["bpflab", "bench"], commit: "abc1234")
        XCTAssertTrue(ja.contains("\"schema_version\":1"))
        XCTAssertTrue(ja.contains("\"commit\":\"abc1234\""))
        let fa = try BenchResultsFile.read(Data(ja.utf8)), fb = try BenchResultsFile.read(Data(b.json().utf8))
        XCTAssertEqual(fa.report.summaries.map(\.design), a.summaries.map(\.design))
        XCTAssertEqual(fa.report.machine, a.machine, "the machine line survives the round trip (acronym keys included)")
        XCTAssertEqual(fa.report.results.count, a.results.count)
        let rows = DesignComparison.compare(fa.report, fb.report)
        XCTAssertEqual(rows.map(\.design), [.chainPass, .tailJIT], "the baseline has no overhead to compare")
        for r in rows {
            XCTAssertNotNil(r.delta)
            XCTAssertEqual(r.moved, abs(r.delta!) > r.deltaCI!)
        }
        var bad = ja.replacingOccurrences(of: "\"schema_version\":1", with: "\"schema_version\":9")
        XCTAssertThrowsError(try BenchResultsFile.read(Data(bad.utf8)))
        bad = "{\"not\": \"results\"}"
        XCTAssertThrowsError(try BenchResultsFile.read(Data(bad.utf8)))
    }
}

final class BlockTests: XCTestCase {
    func testBlocksGiveEachWindowItsBlockAndAnIntervalOverBlockMeans() throws {
        var c = BenchConfig()
        c.designs = [.baseline, .chainPass, .tailJIT]
        c.trials = 6
        c.blocks = 3
        let r = try Bench(c).run()
        XCTAssertEqual(Set(r.results.map(\.block)), [0, 1, 2])
        XCTAssertEqual(r.results.filter { $0.design == .tailJIT }.map(\.block), [0, 0, 1, 1, 2, 2])
        for s in r.summaries where s.design != .baseline {
            XCTAssertNotNil(s.blockCI95, "\(s.design)")
            XCTAssertNotNil(s.overheadPct)
            // The block mean of equal-sized blocks is the overall mean.
            XCTAssertEqual(s.blockOverheadNs!, s.overheadNs!, accuracy: 1e-9)
        }
        XCTAssertTrue(r.table().contains("Overhead, 3 blocks (95% CI)") && r.table().contains("within run (windows)"))
        XCTAssertEqual(r.rounds, 6, "no sequential rounds with blocks")
        var bad = BenchConfig()
        bad.trials = 4
        bad.blocks = 3
        XCTAssertThrowsError(try bad.validate(), "two trials per block at least")
    }

    /// Each block builds its designs afresh (new objects, new addresses), and nothing of
    /// the earlier blocks is left behind.
    func testEachBlockMeasuresFreshlyBuiltDesignsAndLeavesNothing() throws {
        var c = BenchConfig()
        c.designs = [.baseline, .chainPass, .tailJIT, .dispatcherHit]
        c.trials = 6
        c.blocks = 3
        let bench = try Bench(c)
        var seen = Set<UInt32>()
        let r = try bench.run(progress: { _, _, _ in seen.formUnion(bench.kernel.progIDR.ids) })
        let perBuild = 1 + 2 + 2 + 48
        XCTAssertGreaterThanOrEqual(seen.count, 3 * perBuild, "three blocks, three sets of programs")
        XCTAssertTrue(r.summaries.first { $0.design == .dispatcherHit }!.overheadNs != nil)
        bench.kernel.quiesce()
        XCTAssertEqual(bench.kernel.liveObjects, 0)
    }
}
