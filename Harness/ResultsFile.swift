// ResultsFile.swift — bench results as a file people keep and compare: the report with
// its schema version, the command line, the commit and the time, through Codable
// (sorted keys, snake case); read back by `bpflab compare`.
import Foundation

/// A results file: a report and what produced it. Version 1: this layout.
public struct BenchResultsFile: Codable, Sendable {
    public static let currentSchema = 1
    public var schemaVersion: Int
    public var command: [String]
    public var commit: String?
    public var timestamp: String
    public var report: BenchReport

    static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.keyEncodingStrategy = .convertToSnakeCase
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return e
    }

    /// Property names with acronyms, which snake case cannot round-trip on its own
    /// ("onlineCPUs" → "online_cp_us" → "onlineCpUs").
    static let acronymNames = ["onlineCPUs", "tscGHz", "spectreV2", "targetCI", "overheadCI95", "churnCostCI95", "verdictCheck",
                               "overheadPctCI95", "blockCI95", "labOverTwinCI95", "labMinusTwinCI95", "slopeCI95", "interceptCI95",
                               "fastOverheadCI95", "slowOverheadCI95", "blockPctCI95"]

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int?
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { self.stringValue = "\(intValue)"; self.intValue = intValue }
    }

    static var decoder: JSONDecoder {
        let d = JSONDecoder()
        let byFolded = Dictionary(acronymNames.map { ($0.lowercased(), $0) }, uniquingKeysWith: { a, _ in a })
        d.keyDecodingStrategy = .custom { path in
            let snake = path.last!.stringValue
            if let hit = byFolded[snake.replacingOccurrences(of: "_", with: "").lowercased()] { return Key(stringValue: hit) }
            let parts = snake.split(separator: "_")
            guard let first = parts.first else { return Key(stringValue: snake) }
            return Key(stringValue: String(first) + parts.dropFirst().map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined())
        }
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return d
    }

    /// Reads a file written by `bpflab bench --format json` or `--out`.
    public static func read(_ data: Data) throws -> BenchResultsFile {
        let f = try decoder.decode(BenchResultsFile.self, from: data)
        if f.schemaVersion != currentSchema { throw HarnessError("results schema version \(f.schemaVersion); this bpflab reads version \(currentSchema)") }
        return f
    }
}


/// One design in two results files: the change in its overhead and whether it moved
/// beyond both runs' noise (|Δ| larger than the two 95% half-widths combined in quadrature
/// — each interval covers its own run only, so "moved" means beyond within-run noise).
public struct DesignComparison: Sendable {
    public let design: DesignID
    public let title: String
    public let a: Double?, aCI: Double?
    public let b: Double?, bCI: Double?
    public var delta: Double? { a.flatMap { a in b.map { $0 - a } } }
    public var deltaCI: Double? { aCI.flatMap { x in bCI.map { (x * x + $0 * $0).squareRoot() } } }
    public var moved: Bool { delta.flatMap { d in deltaCI.map { abs(d) > $0 } } ?? false }
    /// The change relative to the baseline (percentage points), with its combined interval:
    /// the figure that compares runs made at different VM speeds.
    public var deltaPct: Double? { aPct.flatMap { a in bPct.map { $0 - a } } }
    public var deltaPctCI: Double? { aPctCI.flatMap { x in bPctCI.map { (x * x + $0 * $0).squareRoot() } } }
    public var movedPct: Bool { deltaPct.flatMap { d in deltaPctCI.map { abs(d) > $0 } } ?? false }
    /// The overhead relative to the baseline (%), which compares across the VM's speeds.
    public var aPct: Double?, aPctCI: Double?, bPct: Double?, bPctCI: Double?
    /// What the ns intervals are over: "blocks" or "windows".
    public var basis = "windows"

    /// The designs of both files, in the first file's order. When both runs were measured
    /// in blocks, the block means and their intervals (closer to run to run) are compared;
    /// otherwise the windows'.
    public static func compare(_ a: BenchReport, _ b: BenchReport) -> [DesignComparison] {
        let blocks = a.blocks > 1 && b.blocks > 1
        let ids = a.summaries.map(\.design) + b.summaries.map(\.design).filter { d in !a.summaries.contains { $0.design == d } }
        return ids.compactMap { id in
            let x = a.summaries.first { $0.design == id }, y = b.summaries.first { $0.design == id }
            guard x?.overheadNs != nil || y?.overheadNs != nil else { return nil }  // the baseline has none
            func v(_ s: DesignSummary?) -> (Double?, Double?) { blocks ? (s?.blockOverheadNs, s?.blockCI95) : (s?.overheadNs, s?.overheadCI95) }
            let (av, ac) = v(x), (bv, bc) = v(y)
            var c = DesignComparison(design: id, title: (x ?? y)!.title, a: av, aCI: ac, b: bv, bCI: bc)
            c.aPct = blocks ? x?.blockOverheadPct : x?.overheadPct
            c.aPctCI = blocks ? x?.blockPctCI95 : x?.overheadPctCI95
            c.bPct = blocks ? y?.blockOverheadPct : y?.overheadPct
            c.bPctCI = blocks ? y?.blockPctCI95 : y?.overheadPctCI95
            c.basis = blocks ? "blocks" : "windows"
            return c
        }
    }

}
