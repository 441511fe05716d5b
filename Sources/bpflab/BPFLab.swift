// bpflab — the command line. Layers below: PacketHarness → BPFKernel → shims.
import ArgumentParser
import BPFKernel

@main
struct BPFLab: ParsableCommand {
    /// Every command writes through checked writes: a closed stdout is an error it
    /// reports, not a SIGPIPE that kills it before its files are written.
    static func main() {
        StandardOutput.ignoreSIGPIPE()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "bpflab",
        abstract: "The Linux kernel's BPF dispatch machinery, re-implemented in user space and measured.",
        version: bpflabVersion,
        subcommands: [Bench.self, Sweep.self, Compare.self, Run.self, Scenarios.self, Graph.self, Trace.self, Prog.self, Asm.self, Disasm.self, KernelCmd.self]
    )
}

let bpflabVersion = "0.1.0"
