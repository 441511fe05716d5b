// `bpflab sweep`: cost as a function of one parameter, designs side by side.
import ArgumentParser
import BPFKernel
import Foundation
import PacketHarness

struct Sweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure cost per packet as a function of N (chain length, tail-call depth, …), designs side by side.",
        discussion: "Each design is built at every N of --n that its kernel limits allow and measured against the DROP baseline with the bench's method (each window between two baseline windows); the values of N run in a shuffled order. A least-squares line through every window gives the cost per unit of N (slope) and the fixed cost (intercept), each with a 95% interval. Designs with a parameter: \(DesignRegistry.sweepable.map { "\($0.id.rawValue) (\($0.parameter!.name), \($0.parameter!.range.lowerBound)…\($0.parameter!.range.upperBound))" }.joined(separator: ", "))."
    )

    @Option(help: "Comma-separated designs to vary (see the list above). Default: the RFC's comparison, chain calls against tail calls.")
    var designs = "chain-pass,tail-jit"

    @Option(help: "Values of N: a list and ranges, e.g. 1,2,4,8 or 1-32 or 1-32:4 (a design is measured at those inside its range).")
    var n = "1,2,4,8,16,32"

    @Option(help: "Trials per N (each runs every design once between baseline windows).")
    var trials = 10

    @Option(help: "Seconds per measurement window.")
    var duration = 0.01

    @Option(help: "Worker threads, one RX queue each (at most the online CPUs).")
    var threads = 1

    @Option(name: .customLong("packet-size"), help: "Frame size in bytes (60–1514).")
    var packetSize = 64

    @OptionGroup var output: ResultOptions

    func validate() throws { _ = try configuration() }

    func configuration() throws -> SweepConfig {
        var c = SweepConfig()
        do {
            c.designs = try designs.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                .map { try DesignID.named($0) }
                .filter { $0 != .baseline }
            c.values = try SweepConfig.parseValues(n)
            c.bench.trials = trials
            c.bench.duration = duration
            c.bench.threads = threads
            c.bench.frames = FrameSpec(size: packetSize, flows: 1)
            try c.validate()
        } catch let e as HarnessError {
            throw ValidationError(e.message)
        }
        try output.check()
        return c
    }

    func run() throws {
        let cfg = try configuration()
        StandardOutput.ignoreSIGPIPE()
        Interrupt.install()
        let progress = ProgressPrinter(quiet: output.quiet)
        let report = try PacketHarness.Sweep(cfg).run(shouldStop: { Interrupt.wasRequested }) { progress.update($0, $1, $2) }
        progress.finish()
        try output.emit(.init(stem: "sweep", json: { report.json(commit: gitCommit()) }, csv: report.csv, table: report.table, svg: report.svg,
                              svgInOut: true))
        if report.partial { throw ExitCode(130) }
    }
}
