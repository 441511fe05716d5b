// `bpflab bench`: the main job — the seed's table, measured here.
import ArgumentParser
import BPFKernel
import Foundation
import PacketHarness
import LiveKernel
import BPFMachineCode
#if canImport(Glibc)
import Glibc
#endif

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure what each way of running the next program costs per packet.",
        discussion: "With no options: every design - the seed's (before/after patch, chain flag unused, chain call via XDP_PASS and via the wildcard slot, tail call in each engine) and the attach designs (extension slot, trampoline, libxdp dispatcher with 1 and 3 programs, bpf_dispatcher hit and miss, static key off and on, indirect-call table, run-all) - one worker, 10 ms windows, each design between two baseline windows; 30 trials in 5 independent blocks (each in its own design order), the overhead's 95% interval over the block means; with --blocks 1, further rounds for the designs whose 95% CI is wider than ±0.2 ns, for up to 60 s in all; printed as the seed's table, with the overhead in each of the VM's speed states when the run saw both. --designs seed, attach or bytecode picks one group (bytecode: instructions in the interpreter, and seed 004's four ways to read attachment data, from the clang-built objects of bpf/)."
    )

    @Option(help: "Comma-separated designs, or 'all', 'seed', 'attach' or 'bytecode' (baseline is always included; default: all, or only the baseline beside --scenario). Use --list to see them.")
    var designs: String?

    @Option(help: ArgumentHelp("A scenario file (or shipped scenario) to measure as a design of your own: its steps run, every expectation checked, and the program it leaves attached to its first device is measured against the baseline. Repeatable.", valueName: "file"))
    var scenario: [String] = []

    @Flag(help: "List the designs and exit.")
    var list = false

    @Option(help: "Worker threads, one RX queue each (at most the online CPUs, unless --oversubscribe).")
    var threads = 1

    @Option(help: ArgumentHelp("The CPU of each worker, e.g. 0,1 (one per worker; --threads defaults to their number).", valueName: "list"))
    var cpus: String?

    @Flag(help: "Allow more workers than CPUs (flagged in the report: their rates do not add up).")
    var oversubscribe = false

    @Option(help: "Seconds per measurement window (each design, and each baseline window around it).")
    var duration = 0.01

    @Option(help: "Trials every design gets (each runs every design once, between baseline windows: B d1 B d2 … B).")
    var trials = 30

    @Option(name: .customLong("target-ci"), help: "After --trials, keep measuring the designs whose overhead 95% CI is wider than ± this many ns (0 = off).")
    var targetCI = 0.2

    @Option(name: .customLong("max-time"), help: "Seconds after which no further round starts (the --trials rounds always run).")
    var maxTime = 60.0

    @Option(help: "Control-plane churn while traffic runs, KIND:RATE (chain, prog-array, link, dispatcher, static-key), e.g. chain:10000.")
    var churn: String?

    @Option(name: .customLong("packet-size"), help: "Frame size in bytes (60–1514).")
    var packetSize = 64

    @Option(help: "Number of flows (UDP source ports).")
    var flows = 1

    @Option(help: "RX buffer placement: auto (the worker's node), off, or a NUMA node number.")
    var numa: NUMAPolicy = .auto

    @Option(help: "Quantile of the per-batch times each window reports (0.5 = median).")
    var quantile = 0.5

    @OptionGroup var output: ResultOptions

    @Option(help: "Where to measure: lab (the simulated kernel), kernel (this machine's own, the designs mainline has, through BPF_PROG_TEST_RUN) or both (the lab's table, then the kernel's with the lab beside it and the ratio lab / kernel).")
    var on: Backend = .lab

    enum Backend: String, ExpressibleByArgument, CaseIterable { case lab, kernel, both }

    @Flag(help: "Follow each window with the same design run by the plain-C twin of the driver loop and BPF_PROG_RUN (Perf/Twins), and show lab / C twin per design: the lab's own overhead, measured in this run.")
    var twin = false

    @Option(help: "How generated machine code (the 'machine' designs) makes indirect branches: through retpoline thunks (on), plainly (off), or as this kernel does (auto: /sys/devices/system/cpu/vulnerabilities/spectre_v2). A list (off,on) measures every machine-code design once per mode in the same run, side by side.")
    var retpoline = "auto"

    @Option(help: "Split the trials into this many independent blocks, each with its own design order; the overhead's interval is then over the block means (closer to run to run), the windows' beside it. 1: windows only, with --target-ci's extra rounds.")
    var blocks = 5

    // Every option is checked here, before anything runs, so an error shows this
    // subcommand's usage (an error thrown from run() shows only the root's).
    func validate() throws {
        if !list && on != .kernel { _ = try configuration() }
    }

    /// The options as the harness's configuration, every path checked before anything is
    /// measured; a wrong option is a ValidationError naming it.
    func configuration() throws -> BenchConfig {
        var cfg = BenchConfig()
        do {
            cfg.designs = try DesignID.parseList(designs ?? (scenario.isEmpty ? "all" : "baseline"))
            for path in scenario {
                let d = try Bench.scenarioDesign(path)
                if !cfg.designs.contains(d) { cfg.designs.append(d) }
            }
            cfg.threads = threads
            if let cpus {
                let list = try cpus.split(separator: ",", omittingEmptySubsequences: false).map { part -> Int in
                    let t = part.trimmingCharacters(in: .whitespaces)
                    guard let c = Int(t) else { throw HarnessError("--cpus takes CPU numbers separated by commas, e.g. 0,1 (got '\(cpus)')") }
                    return c
                }
                cfg.cpus = list
                if threads == 1 { cfg.threads = list.count }  // --threads not given: one worker per CPU listed
            }
            cfg.oversubscribe = oversubscribe
            cfg.blocks = blocks
            cfg.twin = twin
            let modes = try RetpolineVariants.parse(retpoline)
            if modes.count == 1 {
                cfg.retpoline = modes[0]
            } else {
                cfg.designs = try RetpolineVariants.expand(cfg.designs, modes: modes)
            }
            cfg.duration = duration
            cfg.trials = trials
            cfg.targetCI = targetCI
            cfg.maxTime = maxTime
            cfg.churn = try churn.map { try ChurnSpec(parsing: $0) }
            cfg.frames = FrameSpec(size: packetSize, flows: flows)
            cfg.numa = numa
            cfg.quantile = quantile
            try cfg.validate()
        } catch let e as HarnessError {
            throw ValidationError(e.message)
        }
        try output.check()
        return cfg
    }

    func run() throws {
        if list {
            for d in DesignRegistry.all {
                print("\(d.id.rawValue.padded(20)) \(d.summary)")
                var facts = ["groups: " + d.groups.map(\.rawValue).joined(separator: ", "), "family: \(d.family.rawValue)"]
                if let p = d.parameter { facts.append("N = \(p.name), \(p.range.lowerBound)…\(p.range.upperBound), default \(p.defaultValue)") }
                print("\("".padded(20)) (\(facts.joined(separator: "; ")))")
            }
            return
        }
        if on != .lab { LiveCleanup.installSignalHandling() }  // the netns and mounts go even on SIGTERM
        if on == .kernel {
            let k = try kernelBench()
            try StandardOutput.write(output.format == .json ? k.json() + "\n" : KernelBench.table(k))
            return
        }
        let cfg = try configuration()
        StandardOutput.ignoreSIGPIPE()
        Interrupt.install()
        let bench = try PacketHarness.Bench(cfg)
        let progress = ProgressPrinter(quiet: output.quiet)
        let report = try bench.run(shouldStop: { Interrupt.wasRequested }) { progress.update($0, $1, $2) }
        progress.finish()
        if report.partial {
            FileHandle.standardError.write(Data("interrupted: \(report.results.count) windows measured; the report below is partial\n".utf8))
        }
        try output.emit(.init(stem: "bench", json: { report.json(commit: gitCommit()) }, csv: report.csv, table: report.table, svg: report.svg))
        if report.partial { throw ExitCode(130) }
        if on == .both {
            let k = try kernelBench()
            try StandardOutput.write("\n" + KernelBench.table(k, lab: report))
        }
    }

    /// The design a scenario file makes, registered once per path (validate() and run()
    /// both build the configuration).
    nonisolated(unsafe) private static var scenarioDesigns: [String: DesignID] = [:]
    static func scenarioDesign(_ path: String) throws -> DesignID {
        if let d = scenarioDesigns[path] { return d }
        let runner: ScenarioRunner
        do { runner = try Run.load(path).0 } catch let e as ScenarioFileError { throw ValidationError("--scenario: \(e.text)") }
        let d = runner.benchDesign()
        try DesignRegistry.addUserDesign(d)
        scenarioDesigns[path] = d.id
        return d.id
    }

    /// The mainline designs on this machine's kernel (same frames, trials as given).
    func kernelBench() throws -> KernelBenchReport {
        do {
            return try KernelBench.run(trials: max(5, min(trials, 40)), frame: FrameSpec(size: packetSize, flows: 1).frame(flow: 0)) { done, total in
                if !output.quiet && done == total { FileHandle.standardError.write(Data("kernel: \(total) windows measured\n".utf8)) }
            }
        } catch let e as HarnessError {
            throw ValidationError(e.message)
        } catch let e as LiveError {
            throw ValidationError("the live kernel: \(e)")
        }
    }
}

/// The checkout's commit, when bpflab runs from one (for results files).
func gitCommit() -> String? {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/git")
    p.arguments = ["rev-parse", "--short", "HEAD"]
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return nil }
    // Read to the end before waiting: a child that fills the pipe would wait for us forever.
    let s = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { return nil }
    return s.isEmpty ? nil : s
}

extension String {
    func padded(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}

/// --numa as a typed option: help and shell completion offer auto, off and the nodes.
extension NUMAPolicy: ExpressibleByArgument {
    public init?(argument: String) {
        guard let p = try? NUMAPolicy(parsing: argument) else { return nil }
        self = p
    }

    public static var allValueStrings: [String] { NUMAPolicy.spellings }
    public var defaultValueDescription: String { description }
}

