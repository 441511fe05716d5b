import Foundation
// Report.swift — the seed-shaped table, JSON, CSV and an SVG plot of overhead per design.

extension BenchReport {
    /// The seed's table (Test case | Perf | Overhead), plus cycles per packet, then the
    /// machine line.
    public func table() -> String {
        func pm(_ v: Double?, _ ci: Double?, _ unit: String, digits: Int = 2) -> String {
            guard let v else { return "" }
            return String(format1: v, digits: digits) + " ± " + String(format1: ci ?? .nan, digits: digits) + unit
        }
        let rows = summaries.map { s -> [String] in
            let perf = String(format1: s.mppsMedian, digits: 1) + " Mpps"
            var row = [s.title, perf]
            if blocks > 1 { row.append(pm(s.blockOverheadNs, s.blockCI95, " ns")) }
            row.append(pm(s.overheadNs, s.overheadCI95, " ns"))
            row.append(pm(s.overheadPct, s.overheadPctCI95, " %", digits: 1))
            if speedStates != nil {
                row.append(pm(s.fastOverheadNs, s.fastOverheadCI95, " ns") + (s.fastWindows.map { " (\($0))" } ?? ""))
                row.append(pm(s.slowOverheadNs, s.slowOverheadCI95, " ns") + (s.slowWindows.map { " (\($0))" } ?? ""))
            }
            row += [String(format1: s.cyclesPerPacketMedian, digits: 1), "\(s.windows)"]
            if twin {
                row.append(s.twinNsMedian.map { String(format1: $0, digits: 2) } ?? "")
                row.append(pm(s.labOverTwin, s.labOverTwinCI95, ""))
            }
            if churn != nil { row.append(pm(s.churnCostPct, s.churnCostCI95, " %", digits: 1)) }
            return row
        }
        var header = ["Test case", "Perf"]
        if blocks > 1 { header += ["Overhead, \(blocks) blocks (95% CI)", "within run (windows)"] } else { header.append("Overhead (95% CI)") }
        header.append("of baseline")
        if let st = speedStates {
            header += ["fast state, \(String(format1: st.fastNs, digits: 2)) ns (windows)", "slow state, \(String(format1: st.slowNs, digits: 2)) ns (windows)"]
        }
        header += ["TSC ticks/pkt", "windows"]
        if twin { header += ["C twin ns/pkt", "lab / C twin (95% CI)"] }
        if churn != nil { header.append("churn cost (95% CI)") }
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            "| " + cells.enumerated().map { $1.padding(widths[$0]) }.joined(separator: " | ") + " |"
        }
        var s = line(header) + "\n"
        s += "|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|\n"  // GitHub Markdown: pipes only
        for r in rows { s += line(r) + "\n" }
        s += "\n" + machine.line(workers: threads) + "\n"
        s += "\(trials) trials"
        if rounds > trials { s += " + \(rounds - trials) rounds for designs still wider than ±\(String(format1: targetCI, digits: 2)) ns" }
        s += "; \(String(format1: duration * 1000, digits: 0)) ms per window, each design between two baseline windows; \(packetSize)-byte frames, \(flows) flow\(flows == 1 ? "" : "s"); NUMA \(numa): \(placement.joined(separator: "; "))\n"
        if !targetMissed.isEmpty {
            s += "target ±\(String(format1: targetCI, digits: 2)) ns not reached (time or round budget spent) for: \(targetMissed.map(\.rawValue).joined(separator: ", "))\n"
        }
        s += "verdict check: \(verdictCheck)\n"
        if let r = retpolines { s += "generated machine code: retpolines \(r); the C stand-ins are built without -mretpoline\n" }
        if let ipp = instructionsPerPacket {
            let cells = summaries.compactMap { d -> String? in
                guard let n = ipp[d.design.rawValue], n > 0, let o = d.overheadNs else { return nil }
                return "\(d.design.rawValue) \(n) (\(String(format1: o / Double(n), digits: 2)) ns/insn)"
            }
            if !cells.isEmpty {
                s += "interpreter: instructions per packet (overhead / instructions, the interpreter's entry included): " + cells.joined(separator: ", ") + "\n"
            }
        }
        if blocks > 1 {
            s += "Overhead: the mean of \(blocks) independent blocks, each in its own design order; ± over the block means (\(blocks - 1) degrees of freedom): the interval meant to cover run-to-run variation. Within run: the same over single windows, ± this run's windows only\n"
        } else {
            s += "Overhead: mean over windows; ± covers this run's windows only (give --blocks 5 for an interval over independent blocks)\n"
        }
        s += "of baseline: each window relative to its bracketing baseline windows, comparable across the VM's speeds\n"
        if let st = speedStates {
            s += "speed states: the baseline windows fall into two clusters, fast \(String(format1: st.fastNs, digits: 2)) ns and slow \(String(format1: st.slowNs, digits: 2)) ns per packet (split at \(String(format1: st.threshold, digits: 2)) ns); each design window is counted in the state of the baseline windows around it\n"
        }
        if twin {
            s += "C twin: each window is followed by the same design run by the plain-C driver loop and BPF_PROG_RUN (Perf/Twins) on the same ring and objects; lab / C twin is the mean over those window pairs\n"
        }
        if partial { s += "PARTIAL: interrupted after \(results.count) windows; intervals cover only those\n" }
        if placement.contains(where: { $0.contains("PIN FAILED") }) {
            s += "PIN FAILED: a worker could not be pinned to its CPU and may have moved during the run (see the placement above)\n"
        }
        if oversubscribed { s += "OVERSUBSCRIBED: \(threads) workers on \(machine.onlineCPUs) CPUs — workers share CPUs, so their rates do not add up\n" }
        let base = results.filter { $0.design == .baseline && !$0.quiet && !$0.twin }.map(\.nsPerPacket).sorted()
        if base.count >= 10 {
            let (p10, p50, p90) = (base[(base.count - 1) / 10], base[(base.count - 1) / 2], base[(base.count - 1) * 9 / 10])
            s += "machine speed: baseline windows p10 / p50 / p90 = " + [p10, p50, p90].map { String(format1: $0, digits: 2) }.joined(separator: " / ") + " ns per packet"
            s += p90 > 1.25 * p10 ? " (the VM changed speed during the run; overheads scale with it)\n" : "\n"
        }
        if let c = churn {
            let rates = summaries.compactMap(\.churnRateMean)
            let gps = summaries.compactMap(\.gracePeriodMeanNs)
            let rate = rates.isEmpty ? 0 : rates.reduce(0, +) / Double(rates.count)
            s += "churn \(c.kind.rawValue) at \(Int(c.rate))/s requested: \(Int(rate))/s achieved"
            if !gps.isEmpty { s += ", grace period \(String(format1: gps.reduce(0, +) / Double(gps.count) / 1000, digits: 1)) µs mean" }
            s += "\n"
        }
        return s
    }

    /// Every trial, one CSV row each.
    public func csv() -> String {
        var s = "design,trial,window,mpps,mpps_per_worker,ns_per_packet,cycles_per_packet,received,aborted,drop,pass,tx,redirect,invalid,churn_rate,baseline_ns,quiet,quiet_ns,twin,twin_ns\n"
        for r in results {
            let v = r.counters.verdicts
            s += "\(r.design.rawValue),\(r.trial),\(r.window),\(r.mpps),\(r.mppsPerWorker),\(r.nsPerPacket),\(r.cyclesPerPacket),\(r.counters.received),\(v[0]),\(v[1]),\(v[2]),\(v[3]),\(v[4]),\(r.counters.invalid),\(r.churnRate.map { "\($0)" } ?? ""),\(r.baselineNs.map { "\($0)" } ?? ""),\(r.quiet),\(r.quietNs.map { "\($0)" } ?? ""),\(r.twin),\(r.twinNs.map { "\($0)" } ?? "")\n"
        }
        return s
    }

    /// The whole report as JSON through Codable (sorted keys, snake case), wrapped with
    /// the schema version and what produced it (BenchResultsFile). Non-finite numbers are
    /// written as the strings "nan", "inf", "-inf".
    public func json(command: [String] = CommandLine.arguments, commit: String? = nil, timestamp: Date = Date()) -> String {
        let file = BenchResultsFile(schemaVersion: BenchResultsFile.currentSchema, command: command, commit: commit,
                                    timestamp: ISO8601DateFormatter().string(from: timestamp), report: self)
        return String(decoding: (try? BenchResultsFile.encoder.encode(file)) ?? Data("{}".utf8), as: UTF8.self)
    }

    /// Overhead per design as horizontal bars with 95% error bars (over blocks when the
    /// run had them), grouped and coloured by family, as SVG.
    public func svg() -> String {
        let ds = summaries.filter { $0.overheadNs != nil }
        let value = { (d: DesignSummary) -> (Double, Double) in
            let (v, ci) = blocks > 1 && d.blockOverheadNs != nil ? (d.blockOverheadNs!, d.blockCI95 ?? 0) : (d.overheadNs!, d.overheadCI95 ?? 0)
            return (v, ci.isFinite ? ci : 0)
        }
        let families = ds.map { DesignRegistry.design($0.design)?.family ?? .scenario }
        // Rows, with a gap where the family changes.
        var rowsY: [Double] = []
        var y = 0.0
        for i in ds.indices {
            if i > 0 && families[i] != families[i - 1] { y += 12 }
            rowsY.append(y)
            y += 26
        }
        let longest = ds.map(\.title.count).max() ?? 10
        let left = 24 + Double(longest) * 6.6, plotW = 520.0, top = 62.0, plotH = max(26, y)
        let width = left + plotW + 240
        let footer = Plot.wrap(machine.line(workers: threads), width: Int(width / 6.2))
        let height = top + plotH + 52 + Double(footer.count) * 15 + 8
        // Room right of the longest bar for its value label.
        let hi = max(0.5, ds.map { value($0).0 + value($0).1 }.max() ?? 1) * 1.22
        let lo = min(0, ds.map { value($0).0 - value($0).1 }.min() ?? 0)
        let ticks = Plot.ticks(lo, hi)
        let area = Plot.Area(left: left, top: top, width: plotW, height: plotH,
                             x: min(lo, ticks.first ?? lo)...max(hi, ticks.last ?? hi), y: 0...plotH)
        var s = Plot.header(width: width, height: height)
        let over = blocks > 1 ? "95% CI over \(blocks) blocks" : "95% CI over this run's windows"
        s += Plot.text(width / 2, 24, "Per-packet cost over the baseline (DROP program alone)", anchor: "middle", size: 15)
        s += Plot.text(width / 2, 42, "ns per packet per core, \(over); \(trials) trials of \(String(format1: duration * 1000, digits: 0)) ms windows", anchor: "middle", size: 11, fill: "#555")
        // Vertical grid and x ticks (the y axis carries names, not numbers).
        let step = ticks.count > 1 ? ticks[1] - ticks[0] : 1
        s += "<rect x=\"\(Plot.f(left))\" y=\"\(Plot.f(top))\" width=\"\(Plot.f(plotW))\" height=\"\(Plot.f(plotH))\" fill=\"none\" stroke=\"#999\"/>\n"
        for t in ticks {
            s += "<line x1=\"\(Plot.f(area.px(t)))\" y1=\"\(Plot.f(top))\" x2=\"\(Plot.f(area.px(t)))\" y2=\"\(Plot.f(top + plotH))\" stroke=\"\(t == 0 ? "#444" : "#e4e4e4")\" stroke-width=\"\(t == 0 ? 1.2 : 1)\"/>\n"
            s += Plot.text(area.px(t), top + plotH + 16, Plot.label(t, step: step), anchor: "middle", size: 11, fill: "#333")
        }
        s += Plot.text(left + plotW / 2, top + plotH + 34, "ns per packet over baseline", anchor: "middle", size: 12)
        for (i, d) in ds.enumerated() {
            let (v, ci) = value(d)
            let yc = top + rowsY[i] + 13
            let colour = Plot.colour(families[i])
            s += Plot.text(left - 8, yc + 4, d.title, anchor: "end", size: 12)
            s += "<rect x=\"\(Plot.f(min(area.px(0), area.px(v))))\" y=\"\(Plot.f(yc - 8))\" width=\"\(Plot.f(abs(area.px(v) - area.px(0))))\" height=\"16\" fill=\"\(colour)\" fill-opacity=\"0.85\"/>\n"
            if ci > 0 {
                s += "<line x1=\"\(Plot.f(area.px(v - ci)))\" y1=\"\(Plot.f(yc))\" x2=\"\(Plot.f(area.px(v + ci)))\" y2=\"\(Plot.f(yc))\" stroke=\"#000\"/>\n"
                for e in [v - ci, v + ci] {
                    s += "<line x1=\"\(Plot.f(area.px(e)))\" y1=\"\(Plot.f(yc - 5))\" x2=\"\(Plot.f(area.px(e)))\" y2=\"\(Plot.f(yc + 5))\" stroke=\"#000\"/>\n"
                }
            }
            s += Plot.text(max(area.px(v + ci), area.px(0)) + 6, yc + 4, String(format1: v, digits: 2) + " ± " + String(format1: ci, digits: 2), size: 11, fill: "#222")
        }
        // The families' legend, right of the plot.
        var ly = top + 8
        var seen: [DesignFamily] = []
        for f in families where !seen.contains(f) {
            seen.append(f)
            s += "<rect x=\"\(Plot.f(left + plotW + 24))\" y=\"\(Plot.f(ly - 9))\" width=\"12\" height=\"12\" fill=\"\(Plot.colour(f))\"/>\n"
            s += Plot.text(left + plotW + 42, ly + 1, f.rawValue, size: 11)
            ly += 18
        }
        for (i, l) in footer.enumerated() {
            s += Plot.text(width / 2, top + plotH + 54 + Double(i) * 15, l, anchor: "middle", size: 10, fill: "#444")
        }
        s += "</svg>\n"
        return s
    }
}

extension String {
    func padding(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }

    func replacingAll(_ a: String, _ b: String) -> String {
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: a) {
            out += rest[..<r.lowerBound] + b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }

    var xmlEscaped: String {
        replacingAll("&", "&amp;").replacingAll("<", "&lt;").replacingAll(">", "&gt;").replacingAll("\"", "&quot;")
    }
}

extension Substring {
    func range(of s: String) -> Range<Substring.Index>? {
        guard !s.isEmpty else { return nil }
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(s) { return i..<index(i, offsetBy: s.count) }
            i = index(after: i)
        }
        return nil
    }
}
