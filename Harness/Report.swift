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

    /// Overhead per design with 95% CI error bars, as SVG.
    public func svg() -> String {
        let ds = summaries.filter { $0.overheadNs != nil }
        let w = 760.0, rowH = 34.0, left = 250.0, right = 40.0, top = 40.0
        let h = top + rowH * Double(max(1, ds.count)) + 50
        let maxV = max(1.0, ds.map { ($0.overheadNs ?? 0) + ($0.overheadCI95.flatMap { $0.isFinite ? $0 : nil } ?? 0) }.max() ?? 1)
        let minV = min(0.0, ds.map { ($0.overheadNs ?? 0) - ($0.overheadCI95.flatMap { $0.isFinite ? $0 : nil } ?? 0) }.min() ?? 0)
        let scale = (w - left - right) / (maxV - minV)
        func x(_ v: Double) -> Double { left + (v - minV) * scale }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(Int(w / 2))\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">Per-packet overhead vs baseline (ns, 95% CI)</text>\n"
        s += "<line x1=\"\(x(0))\" y1=\"\(top - 5)\" x2=\"\(x(0))\" y2=\"\(h - 40)\" stroke=\"#888\"/>\n"
        for (i, d) in ds.enumerated() {
            let y = top + rowH * Double(i)
            let o = d.overheadNs ?? 0
            let ci = d.overheadCI95.flatMap { $0.isFinite ? $0 : nil } ?? 0
            s += "<text x=\"\(left - 8)\" y=\"\(y + 18)\" text-anchor=\"end\">\(d.title.xmlEscaped)</text>\n"
            s += "<rect x=\"\(min(x(0), x(o)))\" y=\"\(y + 6)\" width=\"\(abs(x(o) - x(0)))\" height=\"\(rowH - 12)\" fill=\"#4a7ab5\"/>\n"
            s += "<line x1=\"\(x(o - ci))\" y1=\"\(y + rowH / 2)\" x2=\"\(x(o + ci))\" y2=\"\(y + rowH / 2)\" stroke=\"black\"/>\n"
            s += "<line x1=\"\(x(o - ci))\" y1=\"\(y + 10)\" x2=\"\(x(o - ci))\" y2=\"\(y + rowH - 10)\" stroke=\"black\"/>\n"
            s += "<line x1=\"\(x(o + ci))\" y1=\"\(y + 10)\" x2=\"\(x(o + ci))\" y2=\"\(y + rowH - 10)\" stroke=\"black\"/>\n"
            s += "<text x=\"\(x(o + ci) + 6)\" y=\"\(y + 18)\">\(String(format1: o, digits: 2))</text>\n"
        }
        s += "<text x=\"\(Int(w / 2))\" y=\"\(Int(h - 12))\" text-anchor=\"middle\" fill=\"#444\">\(machine.line(workers: threads).xmlEscaped)</text>\n"
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
