// `bpflab trace`: one packet (or one test run) walked through a scenario or a bench design
// (Harness/Tracer.swift), then run for real on the same frame to compare verdicts.
import ArgumentParser
import BPFKernel
import Foundation
import PacketHarness
import CBPFShims

struct Trace: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Walk one packet through a scenario's step or a bench design: every program, slot, tail call, trampoline item and dispatcher decision, and why.",
        discussion: "For a scenario, --step names a packets or test_run step (default: the first one); the scenario runs up to it, the packet is traced, then run for real on the same frame, and the two verdicts are compared (exit 1 if they differ). The tracer reads the records the per-packet code reads; it adds nothing to that code."
    )

    @Argument(help: "A scenario file or shipped scenario name (omit with --design).")
    var scenario: String?

    @Option(help: "A bench design instead of a scenario (see `bpflab bench --list`).")
    var design: String?

    @Option(help: "The packets or test_run step to trace.")
    var step: Int?

    @Option(help: "Which flow's frame (bench designs).")
    var flow = 0

    func validate() throws {
        if (scenario == nil) == (design == nil) { throw ValidationError("give a scenario or --design, one of them") }
        if let step, step < 1 { throw ValidationError("--step counts from 1") }
    }

    func run() throws {
        let lines: [TraceLine], traced: UInt32, real: UInt32?
        if let design {
            let id: DesignID
            do { id = try DesignID.named(design) } catch let e as HarnessError { throw ValidationError(e.message) }
            (lines, traced, real) = try Trace.design(id, flow: flow)
        } else {
            let runner: ScenarioRunner
            do { runner = try Run.load(scenario!).0 } catch let e as ScenarioFileError {
                FileHandle.standardError.write(Data("error: \(e.text)\n".utf8))
                throw ExitCode(2)
            }
            var options = ScenarioRunOptions()
            let target = step ?? runner.file.steps.first(where: { s in
                if case .packets = s.operation { return true }
                if case .testRun = s.operation { return true }
                return false
            })?.index
            guard let target else { throw CommandFailure("the scenario has no packets or test_run step to trace") }
            options.traceStep = target
            let out = runner.run(options)
            guard let t = out.trace, let v = out.tracedVerdict else { throw CommandFailure(out.failures.joined(separator: "; ")) }
            (lines, traced, real) = (t, v, out.realVerdict)
            try StandardOutput.write("\(runner.name), step \(target):\n")
        }
        try StandardOutput.write(lines.map { String(repeating: "  ", count: $0.depth) + $0.text }.joined(separator: "\n") + "\n")
        let agree = real == traced
        try StandardOutput.write("traced verdict \(traced); the real run on the same frame: \(real.map(String.init) ?? "none")" + (agree ? " (agrees)\n" : " — THEY DIFFER\n"))
        if !agree { throw ExitCode(1) }
    }

    /// A bench design's packet: (trace, traced verdict, real verdict).
    static func design(_ id: DesignID, flow: Int) throws -> ([TraceLine], UInt32, UInt32?) {
        let kernel = Kernel(KernelConfig(checked: true))
        let bpf = BPF(kernel: kernel)
        let dev = NetDevice(kernel: kernel, name: "bench0")
        let s = try DesignSetup.make(id, bpf: bpf)
        defer {
            try? bpf.xdpAttach(dev, fd: -1)
            s.close(bpf)
            kernel.xdpDispatcher.reset()
            kernel.quiesce()
        }
        try bpf.xdpAttach(dev, fd: s.root)
        var frame = FrameSpec(size: 64, flows: max(1, flow + 1)).frame(flow: flow)
        let tracer = PacketTracer(kernel: kernel, frame: frame, ifindex: dev.ifindex)
        let traced = tracer.traceDevice(dev, runner: s.runner)
        let real = withXDPContext(&frame, ifindex: dev.ifindex) { s.runOnce(dev, $0) }
        return (tracer.lines, traced, real)
    }
}
