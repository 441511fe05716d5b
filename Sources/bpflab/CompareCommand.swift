// `bpflab compare A.json B.json`: per design, the change in overhead between two results
// files, with its interval; designs that moved beyond noise are marked.
import ArgumentParser
import Foundation
import PacketHarness

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two bench results files (bench --format json, or bench.json from --out).",
        discussion: "Δ = B − A per design with the two 95% half-widths combined in quadrature; '*' marks |Δ| beyond it. When both runs were measured in blocks (bench's default), the block means and their intervals are compared, otherwise the windows'. The VM's speed may differ between runs: the machine lines and the baseline's speed are shown, and the overhead relative to the baseline (%), which compares across speeds."
    )

    @Argument(help: "The first results file (A).")
    var a: String

    @Argument(help: "The second results file (B).")
    var b: String

    func run() throws {
        let fa = try load(a), fb = try load(b)
        var s = "A: \(a) — \(fa.report.machine.line(workers: fa.report.threads)) — \(fa.timestamp)\(fa.commit.map { " — \($0)" } ?? "")\n"
        s += "B: \(b) — \(fb.report.machine.line(workers: fb.report.threads)) — \(fb.timestamp)\(fb.commit.map { " — \($0)" } ?? "")\n"
        s += "baseline ns/packet: A \(baselineNs(fa.report)), B \(baselineNs(fb.report))\n\n"
        let rows = DesignComparison.compare(fa.report, fb.report)
        func f(_ v: Double?, _ ci: Double?) -> String { v.map { String(format: "%.2f", $0) + (ci.map { String(format: " ± %.2f", $0) } ?? "") } ?? "—" }
        let header = ["design", "A overhead (ns)", "B overhead (ns)", "Δ B − A (ns)", "", "A of baseline (%)", "B of baseline (%)", "Δ (points)", ""]
        var table = [header]
        for r in rows {
            table.append([r.title, f(r.a, r.aCI), f(r.b, r.bCI), f(r.delta, r.deltaCI), r.moved ? "*" : "",
                          f(r.aPct, r.aPctCI), f(r.bPct, r.bPctCI), f(r.deltaPct, r.deltaPctCI), r.movedPct ? "*" : ""])
        }
        let widths = (0..<header.count).map { c in table.map { $0[c].count }.max()! }
        for (i, row) in table.enumerated() {
            s += "| " + row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: " | ") + " |\n"
            if i == 0 { s += "|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|\n" }
        }
        let moved = rows.filter(\.moved).count, movedPct = rows.filter(\.movedPct).count
        s += "\n\(moved) of \(rows.count) designs moved beyond noise in ns, \(movedPct) relative to the baseline (*; the relative figure compares runs made at different VM speeds); intervals over \(rows.first?.basis ?? "windows")\(rows.first?.basis == "blocks" ? " (each run's blocks: closer to run to run)" : " (each run's windows only: within-run noise)")\n"
        try StandardOutput.write(s)
    }

    func load(_ path: String) throws -> BenchResultsFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw optionError(path, "cannot read it: \(String(cString: strerror(errno)))")
        }
        do { return try BenchResultsFile.read(data) } catch {
            throw optionError(path, "not a bench results file (schema \(BenchResultsFile.currentSchema)): \(error)")
        }
    }

    func baselineNs(_ r: BenchReport) -> String {
        r.summaries.first { $0.design == .baseline }.map { String(format: "%.2f", $0.nsPerPacketMedian) } ?? "—"
    }
}
