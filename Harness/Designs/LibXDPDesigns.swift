// LibXDPDesigns.swift — libxdp's multi-program dispatcher: one XDP program with ten
// extension slots, each filled by a program through freplace, run in priority order
// while each one's verdict is in its chain-call mask.
// Mirrors: xdp-tools lib/libxdp (xdp-dispatcher.c, libxdp.c's attach logic).
import BPFKernel

extension DesignID {
    public static let libxdp1 = DesignID("libxdp-1")
    public static let libxdp3 = DesignID("libxdp-3")
}

enum LibXDPDesigns {
    /// n − 1 PASS programs then the DROP program, on a scratch device as libxdp would build
    /// it on the real one; the bench device then runs the same dispatcher program.
    /// `machine`: the dispatcher and its extensions generated as x86-64 — each slot a direct
    /// call of a placeholder whose entry NOP freplace patched into a jmp to the extension.
    static func dispatcher(_ c: DesignContext, machine: Bool) throws -> DesignSetup {
        let scratch = NetDevice(kernel: c.bpf.kernel, name: "xdpscratch", ifindex: 99)
        let x = LibXDP(bpf: c.bpf, machineCode: machine)
        let n = max(1, c.n)
        func spec(_ name: String, _ body: ProgBody, _ verdict: UInt32, _ prio: Int) -> XDPProgramSpec {
            guard machine else { return XDPProgramSpec(name: name, body: body, runPrio: UInt32(prio)) }
            var a = ProgLoadAttr(steps: StepProgram([.returnConst(verdict)]), name: name)
            a.machineCode = true
            return XDPProgramSpec(name: name, attr: a, runPrio: UInt32(prio))
        }
        let specs = (1..<n).map { spec("pass_\($0)", .xdpPass, verdictPass, 10 * $0) } + [spec(dropName, .xdpDrop, verdictDrop, 10 * n)]
        try x.attach(specs, to: scratch)
        let root = try c.bpf.progGetFdById(scratch.program!.id)
        var s = DesignSetup(id: c.id, root: root, fds: [root])
        s.teardown = { try? x.detach(specs.map(\.name), from: scratch); scratch.detachAll() }
        return s
    }

    static func dispatcher(_ c: DesignContext) throws -> DesignSetup { try dispatcher(c, machine: false) }

    static func programs(default n: Int) -> DesignParameter {
        DesignParameter("programs in the dispatcher", range: 1...10, default: n)  // MAX_DISPATCHER_ACTIONS
    }

    static let all: [Design] = [
        Design("libxdp-1", title: "libxdp dispatcher, 1 program",
               summary: "libxdp's dispatcher with one slot filled by the DROP program (extension)",
               family: .libxdp, groups: [.attach], parameter: programs(default: 1), build: dispatcher),
        Design("libxdp-3", title: "libxdp dispatcher, 3 programs",
               summary: "libxdp's dispatcher: PASS, PASS, DROP in three slots, XDP_PASS in every mask",
               family: .libxdp, groups: [.attach], parameter: programs(default: 3), build: dispatcher),
    ]
}
