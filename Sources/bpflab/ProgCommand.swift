// `bpflab prog show` and `bpflab prog dump xlated`: bpftool's listings, over a demo kernel.
import ArgumentParser
import BPFKernel

struct Prog: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect programs (bpftool style).",
        subcommands: [Show.self, Dump.self]
    )

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load the demo programs, run packets through them with stats on, and list them."
        )

        @Flag(help: "Print JSON instead of text.")
        var json = false

        @Option(help: "Packets to run through each demo program (stats are enabled for the run).")
        var packets: UInt32 = 1000

        func run() throws {
            try Prog.withDemo(packets: packets) { bpf in
                let infos = Bpftool.progInfos(bpf)
                print(json ? Bpftool.progShowJSON(infos) : Bpftool.progShow(infos), terminator: json ? "\n" : "")
            }
        }
    }

    /// Runs `body` over a checked kernel holding the demo programs (Demo.swift), each run
    /// `packets` times with stats on; everything is closed afterwards.
    static func withDemo<T>(packets: UInt32, _ body: (BPF) throws -> T) throws -> T {
        let kernel = Kernel(KernelConfig(checked: true))
        let bpf = BPF(kernel: kernel)
        defer {
            bpf.closeAll()
            kernel.rcuBarrier()
        }
        try Demo.load(into: bpf, packets: packets)
        return try body(bpf)
    }
}
