// ResultOptions.swift — how bench and sweep hand out their results: one set of options
// (--format, --out, --plot, --quiet), paths checked before anything is measured, files
// written first (each whole or not at all), then stdout, which may be a closed pipe.
import ArgumentParser
import Foundation

struct ResultOptions: ParsableArguments {
    enum Format: String, ExpressibleByArgument, CaseIterable { case table, json, csv }

    @Option(help: "Output format.")
    var format: Format = .table

    @Option(help: ArgumentHelp("Directory to write the results to: the JSON results file, every window as CSV, the table (and a sweep's plot).", valueName: "dir"))
    var out: String?

    @Option(help: ArgumentHelp("Write the plot (SVG) to this file.", valueName: "file"))
    var plot: String?

    @Flag(help: "No progress lines.")
    var quiet = false

    /// --out and --plot can be written (an error naming the option, exit 64, if not).
    func check() throws {
        if let out, let why = OutputFiles.problem(directory: out) { throw optionError("--out", why) }
        if let plot, let why = OutputFiles.problem(file: plot) { throw optionError("--plot", why) }
    }

    /// What a command produced, rendered lazily: JSON only when asked for or written.
    struct Results {
        let stem: String          // "bench" or "sweep": the files' names in --out
        let json: () -> String
        let csv: () -> String
        let table: () -> String
        let svg: () -> String
        var svgInOut = false
    }

    func emit(_ r: Results) throws {
        let json = out != nil || format == .json ? r.json() + "\n" : ""
        if let out {
            try OutputFiles.write(json, to: out + "/\(r.stem).json")
            try OutputFiles.write(r.csv(), to: out + "/\(r.stem).csv")
            try OutputFiles.write(r.table(), to: out + "/table.txt")
            if r.svgInOut { try OutputFiles.write(r.svg(), to: out + "/\(r.stem).svg") }
        }
        if let plot { try OutputFiles.write(r.svg(), to: plot) }
        switch format {
        case .json: try StandardOutput.write(json)
        case .csv: try StandardOutput.write(r.csv())
        case .table: try StandardOutput.write(r.table())
        }
    }
}
