// bpflab — the command line. Layers below: PacketHarness → BPFKernel → shims.
import ArgumentParser
import BPFKernel

@main
struct BPFLab: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bpflab",
        abstract: "The Linux kernel's BPF dispatch machinery, re-implemented in user space and measured.",
        version: bpflabVersion,
        subcommands: [Bench.self, Run.self, Scenarios.self, Prog.self]
    )
}

let bpflabVersion = "0.1.0"
