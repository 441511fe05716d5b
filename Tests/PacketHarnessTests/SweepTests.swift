// The sweep: its N lists, its fit (checked on synthetic windows with a known line), and a
// small real sweep whose points and fits hang together.
import XCTest
import BPFKernel
@testable import PacketHarness

final class SweepTests: XCTestCase {
    func testNListsAndRangesParseAndBadOnesSayWhy() throws {
        XCTAssertEqual(try SweepConfig.parseValues("1,2,4"), [1, 2, 4])
        XCTAssertEqual(try SweepConfig.parseValues("1-4"), [1, 2, 3, 4])
        XCTAssertEqual(try SweepConfig.parseValues("1-10:4"), [1, 5, 9, 10], "the end of a stepped range is measured too")
        XCTAssertEqual(try SweepConfig.parseValues(" 8, 1-2 ,8"), [1, 2, 8])
        for bad in ["", "x", "4-1", "1-2-3", "1-8:0", "-3", "99999"] {
            XCTAssertThrowsError(try SweepConfig.parseValues(bad), "'\(bad)'") { e in
                XCTAssertTrue("\(e)".contains("--n"), "\(e)")
            }
        }
    }

    /// Synthetic windows on y = 1.5 + 2.25 N with noise of known spread: the fit finds the
    /// line, its 95% interval covers the truth, and the interval shrinks as windows grow.
    func testTheFitRecoversAKnownLineAndItsIntervalCoversIt() {
        var rng = SplitMix64(seed: 42)
        func noise() -> Double { (Double(rng.next() % 10_000) / 10_000 - 0.5) * 0.8 }  // uniform ±0.4
        var covered = 0
        var widths: [Double] = []
        for trial in 0..<200 {
            let perN = trial < 100 ? 5 : 40
            var xy: [(Double, Double)] = []
            for n in [1, 2, 4, 8, 16, 32] { for _ in 0..<perN { xy.append((Double(n), 1.5 + 2.25 * Double(n) + noise())) } }
            let f = SweepFit.fit(design: .chainPass, parameter: "N", xy)!
            if abs(f.slopeNs - 2.25) <= f.slopeCI95 { covered += 1 }
            widths.append(f.slopeCI95)
            XCTAssertEqual(f.interceptNs, 1.5, accuracy: 0.3)
            XCTAssertGreaterThan(f.rSquared, 0.99)
        }
        XCTAssertGreaterThanOrEqual(covered, 180, "a 95% interval covers the true slope about 95% of the time (got \(covered)/200)")
        let few = widths[..<100].reduce(0, +) / 100, many = widths[100...].reduce(0, +) / 100
        XCTAssertLessThan(many, few / 2, "8× the windows: the interval about 2.8× narrower")
        XCTAssertNil(SweepFit.fit(design: .chainPass, parameter: "N", [(2, 1), (2, 2), (2, 3)]), "one N has no slope")
    }

    func testDesignsWithoutAParameterOrOutsideTheirRangeAreRefused() {
        var c = SweepConfig()
        c.designs = [.extSlot]
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains("built one way only"), "\($0)") }
        c.designs = [.libxdp3]
        c.values = [16, 32]
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains("from 1 to 10"), "\($0)") }
    }

    /// A real, small sweep: every design at every N in its range, the points carrying their
    /// windows, the fit going through exactly those windows, N measured in a shuffled order.
    func testASmallSweepMeasuresEveryDesignAtEveryNInItsRange() throws {
        var c = SweepConfig()
        c.designs = [.chainPass, .libxdp1]
        c.values = [1, 3, 12]
        c.bench.trials = 2
        c.bench.duration = 0.01
        let r = try Sweep(c).run()
        XCTAssertEqual(Set(r.points.filter { $0.design == .chainPass }.map(\.n)), [1, 3, 12])
        XCTAssertEqual(Set(r.points.filter { $0.design == .libxdp1 }.map(\.n)), [1, 3], "libxdp takes at most 10 programs")
        XCTAssertEqual(Set(r.order), [1, 3, 12])
        for p in r.points { XCTAssertEqual(p.windowOverheads.count, 2, "\(p.design) N=\(p.n)") }
        for f in r.fits {
            XCTAssertEqual(f.windows, r.points.filter { $0.design == f.design }.map(\.windowOverheads.count).reduce(0, +))
        }
        XCTAssertTrue(r.table().contains("| 12 |"))
        let svg = r.svg()
        XCTAssertTrue(svg.hasPrefix("<svg") && svg.contains("chain-pass") && svg.contains("polygon"))
        let back = try SweepResultsFile.read(Data(r.json().utf8))
        XCTAssertEqual(back.report.points.count, r.points.count)
        XCTAssertEqual(back.report.fits.first?.slopeCI95, r.fits.first?.slopeCI95, "acronym fields round-trip")
    }
}
