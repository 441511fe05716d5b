// `bpflab graph`: the object graph of a scenario at a step (or of a bench design) — every
// reference an edge labelled by its holder (Harness/GraphRender.swift).
import ArgumentParser
import BPFKernel
import Foundation
import PacketHarness

struct Graph: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw the object graph (programs, maps, links and every reference, by holder) of a scenario or a bench design.",
        discussion: "DOT always; SVG through Graphviz's dot when installed. --step N draws the graph after step N (0: after the declarations; default: after the last step); --step all writes one picture per step and an HTML page stepping through them into --out."
    )

    enum Format: String, ExpressibleByArgument, CaseIterable { case dot, svg }

    @Argument(help: "A scenario file or shipped scenario name (omit with --design).")
    var scenario: String?

    @Option(help: "A bench design instead of a scenario (see `bpflab bench --list`).")
    var design: String?

    @Option(help: "The step after which to draw: a number, or 'all'.")
    var step: String?

    @Option(help: "dot or svg.")
    var format: Format = .svg

    @Option(help: "Directory to write the pictures to (required with --step all; otherwise stdout).")
    var out: String?

    func validate() throws {
        if (scenario == nil) == (design == nil) { throw ValidationError("give a scenario or --design, one of them") }
        if let step, step != "all", Int(step) == nil || Int(step)! < 0 { throw ValidationError("--step is a step number (0 or more) or 'all' (got '\(step)')") }
        if step == "all" && out == nil { throw ValidationError("--step all writes several files: give --out DIR") }
        if design != nil && step != nil { throw ValidationError("--step applies to scenarios") }
    }

    func run() throws {
        if let out, let why = OutputFiles.problem(directory: out) { throw optionError("--out", why) }
        if let design {
            let id: DesignID
            do { id = try DesignID.named(design) } catch let e as HarnessError { throw ValidationError(e.message) }
            let kernel = Kernel(KernelConfig(checked: true))
            let bpf = BPF(kernel: kernel)
            let dev = NetDevice(kernel: kernel, name: "bench0")
            let s = try DesignSetup.make(id, bpf: bpf)
            try bpf.xdpAttach(dev, fd: s.root)
            kernel.quiesce()
            try emit(GraphRender.dot(kernel.referenceGraph(), title: "design \(id.rawValue): \(id.title)"), name: id.rawValue)
            try bpf.xdpAttach(dev, fd: -1)
            s.close(bpf)
            return
        }
        let (runner, _) = try loadScenario()
        var pictures: [(Int, String)] = []
        let wanted: Int? = step.flatMap { Int($0) }
        let all = step == "all"
        let last = runner.file.steps.count
        if let w = wanted, w > last { throw ValidationError("--step \(w): the scenario has \(last) steps") }
        var options = ScenarioRunOptions()
        options.afterStep = { n, kernel in
            if all || n == (wanted ?? last) {
                kernel.quiesce()
                let caption = n == 0 ? "declarations" : "\(runner.file.steps[n - 1].operation.name)"
                pictures.append((n, GraphRender.dot(kernel.referenceGraph(), title: "\(runner.name) — after step \(n) (\(caption))")))
            }
        }
        _ = runner.run(options)
        if !all {
            guard let p = pictures.first else { throw CommandFailure("the scenario stopped before step \(wanted ?? last)") }
            try emit(p.1, name: "step-\(p.0)")
            return
        }
        var pages: [(step: Int, caption: String, file: String)] = []
        for (n, dotText) in pictures {
            let file = try emit(dotText, name: "step-\(n)")
            pages.append((n, n == 0 ? "declarations" : runner.file.steps[n - 1].operation.name, file))
        }
        try OutputFiles.write(GraphRender.stepPage(title: runner.name, steps: pages), to: out! + "/index.html")
        FileHandle.standardError.write(Data("wrote \(pages.count) pictures and \(out!)/index.html\n".utf8))
    }

    func loadScenario() throws -> (ScenarioRunner, String) {
        do { return try Run.load(scenario!) } catch let e as ScenarioFileError {
            FileHandle.standardError.write(Data("error: \(e.text)\n".utf8))
            throw ExitCode(2)
        }
    }

    /// Writes one picture (to --out, or stdout); returns its file name.
    @discardableResult
    func emit(_ dotText: String, name: String) throws -> String {
        var text = dotText, ext = "dot"
        if format == .svg {
            let (svg, problem) = GraphRender.svg(dotText)
            if let svg { text = svg; ext = "svg" } else if let problem { FileHandle.standardError.write(Data("note: \(problem)\n".utf8)) }
        }
        let file = "\(name).\(ext)"
        if let out { try OutputFiles.write(text, to: out + "/" + file) } else { try StandardOutput.write(text) }
        return file
    }
}
