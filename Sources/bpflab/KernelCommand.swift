// `bpflab kernel probe`: what this machine's own kernel allows of what the lab uses.
import ArgumentParser
import LiveKernel

struct KernelCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernel",
        abstract: "The live kernel of this machine (bpf(2)): what it allows.",
        subcommands: [Probe.self]
    )

    struct Probe: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load each program type, map type and feature the lab uses once; report available or refused (errno)."
        )

        func run() throws {
            if let why = LiveBPF.unavailableReason() { throw ValidationError("the live kernel: \(why)") }
            try StandardOutput.write(LiveProbe.run().map(\.line).joined(separator: "\n") + "\n")
        }
    }
}
