// Sweep.swift — cost as a function of size: each design built at every N of a list
// (programs in a chain, tail calls per packet, fentry programs, …), measured against the
// baseline with the bench's method (each window between two baseline windows), and a
// straight line fitted through the windows: the slope is the cost per added program or
// hop, the intercept the fixed cost. The review of the 2019 RFC was about exactly this:
// what each further program costs, chain call against tail call.
import BPFKernel
import CBPFShims
import Foundation

public struct SweepConfig: Sendable {
    /// The designs to vary (each must have a parameter); the baseline is added by the bench.
    public var designs: [DesignID] = [.chainPass, .tailJIT]
    /// The values of N; a design is measured at those inside its range.
    public var values: [Int] = [1, 2, 4, 8, 16, 32]
    /// The method for each N: trials, window length, workers, frames, quantile, …
    public var bench = BenchConfig()

    public init() {
        bench.trials = 10
        bench.targetCI = 0
    }

    /// Parses N's list: "1,2,4" or ranges "1-8" (every value) and "1-32:4" (every 4th),
    /// mixed; duplicates dropped, sorted.
    public static func parseValues(_ s: String) throws -> [Int] {
        var out: Set<Int> = []
        for raw in s.split(separator: ",") {
            let part = raw.trimmingCharacters(in: .whitespaces)
            if part.isEmpty { continue }
            let stepSplit = part.split(separator: ":", omittingEmptySubsequences: false)
            let bounds = stepSplit[0].split(separator: "-", omittingEmptySubsequences: false)
            func int(_ t: Substring) throws -> Int {
                guard let v = Int(t.trimmingCharacters(in: .whitespaces)), v >= 0, v <= 4096 else {
                    throw HarnessError("--n takes numbers 0…4096, lists and ranges like 1,2,4 or 1-32 or 1-32:4 (got '\(part)')")
                }
                return v
            }
            guard stepSplit.count <= 2, bounds.count <= 2 else {
                throw HarnessError("--n takes lists and ranges like 1,2,4 or 1-32 or 1-32:4 (got '\(part)')")
            }
            let lo = try int(bounds[0]), hi = bounds.count == 2 ? try int(bounds[1]) : lo
            let step = stepSplit.count == 2 ? try int(stepSplit[1]) : 1
            guard lo <= hi, step >= 1 else { throw HarnessError("--n: '\(part)' is an empty range (low ≤ high, step ≥ 1)") }
            for v in stride(from: lo, through: hi, by: step) { out.insert(v) }
            if hi > lo && (hi - lo) % step != 0 { out.insert(hi) }  // the end is always measured
        }
        if out.isEmpty { throw HarnessError("--n is empty") }
        return out.sorted()
    }

    public func validate() throws {
        guard !designs.isEmpty else { throw HarnessError("no designs to sweep") }
        for d in designs {
            guard let p = d.design.parameter else {
                let sweepable = DesignRegistry.sweepable.map(\.id.rawValue).joined(separator: ", ")
                throw HarnessError("design \(d) is built one way only: a sweep varies one of \(sweepable)")
            }
            guard values.contains(where: p.range.contains) else {
                throw HarnessError("design \(d) takes \(p.name) from \(p.range.lowerBound) to \(p.range.upperBound): none of --n's values is in that range")
            }
        }
        var b = bench
        b.designs = [.baseline] + designs
        try b.validate()
    }
}

/// One design at one N.
public struct SweepPoint: Sendable, Codable {
    public let design: DesignID
    public let n: Int
    /// Overhead against the bracketing baseline windows, mean and 95% half-width (ns).
    public let overheadNs: Double
    public let overheadCI95: Double
    public let nsPerPacketMedian: Double
    public let windows: Int
    /// Each window's overhead (ns): what the fit goes through.
    public let windowOverheads: [Double]
}

/// The least-squares line through a design's windows: overhead = intercept + slope × N.
public struct SweepFit: Sendable, Codable {
    public let design: DesignID
    public let parameter: String
    /// ns per unit of N (per program, per tail call, …), with its 95% half-width.
    public let slopeNs: Double
    public let slopeCI95: Double
    /// The line's value at N = 0 (the fixed cost), with its 95% half-width.
    public let interceptNs: Double
    public let interceptCI95: Double
    /// Windows the fit went through, and the fraction of their variance it explains.
    public let windows: Int
    public let rSquared: Double

    /// Ordinary least squares with Student-t intervals (n − 2 degrees of freedom).
    public static func fit(design: DesignID, parameter: String, _ xy: [(Double, Double)]) -> SweepFit? {
        let n = Double(xy.count)
        guard xy.count >= 3 else { return nil }
        let mx = xy.map(\.0).reduce(0, +) / n, my = xy.map(\.1).reduce(0, +) / n
        let sxx = xy.reduce(0) { $0 + ($1.0 - mx) * ($1.0 - mx) }
        guard sxx > 0 else { return nil }  // a single N: no slope
        let sxy = xy.reduce(0) { $0 + ($1.0 - mx) * ($1.1 - my) }
        let slope = sxy / sxx, intercept = my - slope * mx
        let sse = xy.reduce(0) { let r = $1.1 - (intercept + slope * $1.0); return $0 + r * r }
        let syy = xy.reduce(0) { $0 + ($1.1 - my) * ($1.1 - my) }
        let s2 = sse / (n - 2)
        let t = studentTQuantile(0.975, dof: xy.count - 2)
        let seSlope = (s2 / sxx).squareRoot()
        let seIntercept = (s2 * (1 / n + mx * mx / sxx)).squareRoot()
        return SweepFit(design: design, parameter: parameter, slopeNs: slope, slopeCI95: t * seSlope, interceptNs: intercept,
                        interceptCI95: t * seIntercept, windows: xy.count, rSquared: syy > 0 ? 1 - sse / syy : 1)
    }
}

public struct SweepReport: Sendable, Codable {
    public let machine: MachineInfo
    public let designs: [DesignID]
    public let values: [Int]
    /// The order the values were measured in (shuffled, so a drift in the VM's speed does
    /// not line up with N).
    public let order: [Int]
    public let trials: Int
    public let duration: Double
    public let threads: Int
    public let points: [SweepPoint]
    public let fits: [SweepFit]
    public var partial = false
}

public final class Sweep {
    public let config: SweepConfig

    public init(_ config: SweepConfig) throws {
        try config.validate()
        self.config = config
    }

    /// Measures every (design, N); `progress` gets (done, total, message) per window.
    public func run(shouldStop: @escaping () -> Bool = { false },
                    progress: (Int, Int, String) -> Void = { _, _, _ in }) throws -> SweepReport {
        var rng = SplitMix64(seed: 0x5377_6565)
        let order = config.values.shuffled(using: &rng)
        let windowsPer = { (n: Int) in 2 * self.designs(at: n).count + 1 }
        let total = order.reduce(0) { $0 + windowsPer($1) } * config.bench.trials
        var done = 0
        var points: [SweepPoint] = []
        var partial = false
        let machine = MachineInfo.probe()
        for n in order {
            let ds = designs(at: n)
            if ds.isEmpty { continue }
            var b = config.bench
            b.designs = [.baseline] + ds
            b.parameters = Dictionary(uniqueKeysWithValues: ds.map { ($0, n) })
            let report = try Bench(b).run(shouldStop: shouldStop) { d, _, message in
                progress(done + d, total, "N = \(n): \(message)")
            }
            done += windowsPer(n) * config.bench.trials
            for s in report.summaries where s.design != .baseline {
                let ws = report.results.filter { $0.design == s.design && !$0.quiet && !$0.twin }.compactMap { r in r.baselineNs.map { r.nsPerPacket - $0 } }
                guard let o = s.overheadNs else { continue }
                points.append(SweepPoint(design: s.design, n: n, overheadNs: o, overheadCI95: s.overheadCI95 ?? .nan,
                                         nsPerPacketMedian: s.nsPerPacketMedian, windows: s.windows, windowOverheads: ws))
            }
            if report.partial {
                partial = true
                break
            }
        }
        points.sort { ($0.design.rawValue, $0.n) < ($1.design.rawValue, $1.n) }
        let fits = config.designs.compactMap { d -> SweepFit? in
            let xy = points.filter { $0.design == d }.flatMap { p in p.windowOverheads.map { (Double(p.n), $0) } }
            return SweepFit.fit(design: d, parameter: d.design.parameter?.name ?? "N", xy)
        }
        return SweepReport(machine: machine, designs: config.designs, values: config.values, order: order,
                           trials: config.bench.trials, duration: config.bench.duration, threads: config.bench.threads,
                           points: points, fits: fits, partial: partial)
    }

    /// The designs measured at `n` (those whose range holds it).
    func designs(at n: Int) -> [DesignID] {
        config.designs.filter { $0.design.parameter?.range.contains(n) ?? false }
    }
}
