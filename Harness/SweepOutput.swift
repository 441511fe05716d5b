// SweepOutput.swift — a sweep as a Markdown table with the fitted lines, CSV (one row per
// window), JSON through Codable (the results-file wrapper, schema version 1), and an SVG
// line plot: ns per packet over the baseline against N, one line per design with its 95%
// band and its fitted line.
import Foundation

/// A sweep results file: the report and what produced it.
public struct SweepResultsFile: Codable, Sendable {
    public static let currentSchema = 1
    public var schemaVersion: Int
    public var kind = "sweep"
    public var command: [String]
    public var commit: String?
    public var timestamp: String
    public var report: SweepReport

    public static func read(_ data: Data) throws -> SweepResultsFile {
        let f = try BenchResultsFile.decoder.decode(SweepResultsFile.self, from: data)
        if f.schemaVersion != currentSchema { throw HarnessError("sweep results schema version \(f.schemaVersion); this bpflab reads version \(currentSchema)") }
        return f
    }
}

extension SweepReport {
    private func cell(_ p: SweepPoint?) -> String {
        guard let p else { return "" }
        return String(format1: p.overheadNs, digits: 2) + " ± " + String(format1: p.overheadCI95, digits: 2)
    }

    public func table() -> String {
        var s = "| N | " + designs.map { "\($0.rawValue) (ns, 95% CI)" }.joined(separator: " | ") + " |\n"
        s += "|---|" + designs.map { _ in "---" }.joined(separator: "|") + "|\n"
        for n in values {
            let row = designs.map { d in cell(points.first { $0.design == d && $0.n == n }) }
            if row.allSatisfy(\.isEmpty) { continue }
            s += "| \(n) | " + row.joined(separator: " | ") + " |\n"
        }
        s += "\n| Design | N counts | per unit of N (slope, 95% CI) | fixed cost (intercept, 95% CI) | R² | windows |\n"
        s += "|---|---|---|---|---|---|\n"
        for f in fits {
            s += "| \(f.design.rawValue) | \(f.parameter) | \(String(format1: f.slopeNs, digits: 3)) ± \(String(format1: f.slopeCI95, digits: 3)) ns "
            s += "| \(String(format1: f.interceptNs, digits: 2)) ± \(String(format1: f.interceptCI95, digits: 2)) ns | \(String(format1: f.rSquared, digits: 3)) | \(f.windows) |\n"
        }
        s += "\n" + machine.line(workers: threads) + "\n"
        s += "ns per packet over the baseline (the DROP program alone), each window between two baseline windows; \(trials) trials of \(String(format1: duration * 1000, digits: 0)) ms windows per N; N measured in the order \(order.map(String.init).joined(separator: ", "))\n"
        s += "± covers this run's windows only; the fit is least squares through every window (slope: the cost of one more unit of N)\n"
        if partial { s += "PARTIAL: interrupted; only the values of N measured so far are shown\n" }
        return s
    }

    public func csv() -> String {
        var s = "design,n,window,overhead_ns\n"
        for p in points { for (i, o) in p.windowOverheads.enumerated() { s += "\(p.design.rawValue),\(p.n),\(i),\(o)\n" } }
        return s
    }

    public func json(command: [String] = CommandLine.arguments, commit: String? = nil, timestamp: Date = Date()) -> String {
        let file = SweepResultsFile(schemaVersion: SweepResultsFile.currentSchema, command: command, commit: commit,
                                    timestamp: ISO8601DateFormatter().string(from: timestamp), report: self)
        return String(decoding: (try? BenchResultsFile.encoder.encode(file)) ?? Data("{}".utf8), as: UTF8.self)
    }

    /// The line plot.
    public func svg() -> String {
        let width = 980.0, plotW = 560.0, plotH = 380.0, left = 80.0, top = 60.0
        let footer = Plot.wrap(machine.line(workers: threads), width: 120)
        let height = top + plotH + 60 + Double(footer.count) * 15 + 10
        let finite = { (v: Double) in v.isFinite ? v : 0 }
        let ns = points.map(\.n)
        let xLo = Double(ns.min() ?? 0), xHi = Double(max((ns.max() ?? 1), (ns.min() ?? 0) + 1))
        let yHi = max(1, points.map { $0.overheadNs + finite($0.overheadCI95) }.max() ?? 1)
        let yLo = min(0, points.map { $0.overheadNs - finite($0.overheadCI95) }.min() ?? 0)
        let yt = Plot.ticks(yLo, yHi), xt = Plot.ticks(xLo, xHi, count: 8)
        let area = Plot.Area(left: left, top: top, width: plotW, height: plotH,
                             x: min(xLo, xt.first ?? xLo)...max(xHi, xt.last ?? xHi), y: min(yLo, yt.first ?? yLo)...max(yHi, yt.last ?? yHi))
        var s = Plot.header(width: width, height: height)
        s += Plot.text(width / 2, 26, "Cost per packet against N (ns over the DROP baseline, 95% bands)", anchor: "middle", size: 15)
        s += Plot.text(width / 2, 44, "lines: measured means; dashed: least-squares fit through every window", anchor: "middle", size: 11, fill: "#555")
        s += area.axes(xTicks: xt, yTicks: yt, xTitle: "N (" + Set(fits.map(\.parameter)).sorted().joined(separator: "; ") + ")",
                       yTitle: "ns per packet over baseline")
        var legendY = top + 10
        for (i, d) in designs.enumerated() {
            let ps = points.filter { $0.design == d }.sorted { $0.n < $1.n }
            guard !ps.isEmpty else { continue }
            // Designs of the same family: the same colour, told apart by dash and marker.
            let colour = Plot.colour(d.design.family)
            let sameFamilyBefore = designs[..<i].filter { $0.design.family == d.design.family }.count
            let dash = ["", " stroke-dasharray=\"6 3\"", " stroke-dasharray=\"2 2\"", " stroke-dasharray=\"8 2 2 2\""][sameFamilyBefore % 4]
            let upper = ps.map { "\(Plot.f(area.px(Double($0.n)))),\(Plot.f(area.py($0.overheadNs + finite($0.overheadCI95))))" }
            let lower = ps.reversed().map { "\(Plot.f(area.px(Double($0.n)))),\(Plot.f(area.py($0.overheadNs - finite($0.overheadCI95))))" }
            s += "<polygon points=\"\((upper + lower).joined(separator: " "))\" fill=\"\(colour)\" fill-opacity=\"0.15\" stroke=\"none\"/>\n"
            let line = ps.map { "\(Plot.f(area.px(Double($0.n)))),\(Plot.f(area.py($0.overheadNs)))" }.joined(separator: " ")
            s += "<polyline points=\"\(line)\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\"\(dash)/>\n"
            for p in ps {
                s += "<circle cx=\"\(Plot.f(area.px(Double(p.n))))\" cy=\"\(Plot.f(area.py(p.overheadNs)))\" r=\"3\" fill=\"\(colour)\"/>\n"
            }
            var label = d.rawValue
            if let f = fits.first(where: { $0.design == d }) {
                let x0 = Double(ps.first!.n), x1 = Double(ps.last!.n)
                s += "<line x1=\"\(Plot.f(area.px(x0)))\" y1=\"\(Plot.f(area.py(f.interceptNs + f.slopeNs * x0)))\" x2=\"\(Plot.f(area.px(x1)))\" y2=\"\(Plot.f(area.py(f.interceptNs + f.slopeNs * x1)))\" stroke=\"\(colour)\" stroke-width=\"1\" stroke-dasharray=\"3 3\" opacity=\"0.8\"/>\n"
                label += ": " + String(format1: f.slopeNs, digits: 2) + " ± " + String(format1: f.slopeCI95, digits: 2) + " ns per N"
            }
            // The legend, right of the plot area.
            let lx = left + plotW + 20
            s += "<line x1=\"\(Plot.f(lx))\" y1=\"\(Plot.f(legendY))\" x2=\"\(Plot.f(lx + 24))\" y2=\"\(Plot.f(legendY))\" stroke=\"\(colour)\" stroke-width=\"2\"\(dash)/>\n"
            s += Plot.text(lx + 30, legendY + 4, label, size: 11)
            s += Plot.text(lx + 30, legendY + 18, d.design.parameter?.name ?? "", size: 10, fill: "#666")
            legendY += 36
        }
        for (i, l) in footer.enumerated() {
            s += Plot.text(width / 2, top + plotH + 60 + Double(i) * 15, l, anchor: "middle", size: 10, fill: "#444")
        }
        s += "</svg>\n"
        return s
    }
}
