// `bpflab kernel probe`: what this machine's own kernel allows of what the lab uses;
// `bpflab kernel cleanup`: what a crashed run left (network namespaces with the lab's prefix).
import ArgumentParser
import LiveKernel

struct KernelCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernel",
        abstract: "The live kernel of this machine (bpf(2)): what it allows.",
        subcommands: [Probe.self, Cleanup.self]
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

    struct Cleanup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete what a crashed run left on the live kernel: network namespaces named \(LiveNetns.prefix)… and private bpffs mounts /tmp/\(LiveNetns.prefix)…-bpffs (nothing else is touched)."
        )

        func run() throws {
            for m in LiveBPFFS.leftovers() {
                do {
                    try LiveBPFFS.remove(m)
                    try StandardOutput.write("unmounted and removed \(m)\n")
                } catch {
                    try StandardOutput.write("could not remove \(m): \(error)\n")
                }
            }
            let left = LiveNetns.leftovers()
            if left.isEmpty {
                try StandardOutput.write("no network namespace named \(LiveNetns.prefix)… is left\n")
                return
            }
            for n in left {
                do {
                    try LiveNetns.remove(n)
                    try StandardOutput.write("deleted network namespace \(n)\n")
                } catch {
                    try StandardOutput.write("could not delete \(n): \(error)\n")
                }
            }
        }
    }
}
