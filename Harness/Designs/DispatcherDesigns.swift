// DispatcherDesigns.swift — the kernel's bpf_dispatcher for XDP: the programs attached
// anywhere are known targets, searched (binary search over their addresses) and called
// directly; any other program is called through the indirect (retpolined) call.
// Mirrors: kernel/bpf/dispatcher.c, arch/x86/net/bpf_jit_comp.c (arch_prepare_bpf_dispatcher).
import BPFKernel
import CBPFShims

extension DesignID {
    public static let dispatcherHit = DesignID("dispatcher-hit")
    public static let dispatcherMiss = DesignID("dispatcher-miss")
}

enum DispatcherDesigns {
    /// The DROP program run through the dispatcher with n known targets: for a hit, the
    /// DROP program and n − 1 others; for a miss, n others.
    static func dispatched(_ c: DesignContext) throws -> DesignSetup { try dispatched(c, as: c.id, through: c.bpf.kernel.xdpDispatcher!) }

    /// `kind`: .dispatcherHit or .dispatcherMiss, through `disp` (the machine designs build
    /// the same targets in a dispatcher of their own).
    static func dispatched(_ c: DesignContext, as kind: DesignID, through disp: BPFDispatcher) throws -> DesignSetup {
        let hit = kind == .dispatcherHit
        let d = try c.loadDrop()
        let bpf = c.bpf
        // The targets are held by their fds (as the kernel's are by the devices they are
        // attached to); the dispatcher holds its own reference on each.
        @Sendable func change(_ fd: Int32, add: Bool) {
            guard let p = try? bpf.prog(fd) else { return }
            disp.change(from: add ? nil : p, to: add ? p : nil)
            p.put()  // bpf.prog's
        }
        var others: [Int32] = []
        for _ in 0..<(hit ? c.n - 1 : c.n) {
            let o = try c.load(ProgLoadAttr(body: .xdpTx, name: "other"))
            change(o, add: true)
            others.append(o)
        }
        if hit { change(d, add: true) }
        var s = DesignSetup(id: c.id, root: d, fds: [d] + others)
        s.runner = .dispatched(UnsafePointer(disp.raw))
        let known = others
        s.teardown = {
            if hit { change(d, add: false) }
            for o in known { change(o, add: false) }
        }
        return s
    }

    /// N for a hit (the DROP program and N − 1 others) and for a miss (N others).
    static let hitTargets = DesignParameter("known targets", range: 1...Int(CBPF_DISPATCHER_MAX), default: Int(CBPF_DISPATCHER_MAX))
    static let missTargets = DesignParameter("known targets", range: 0...Int(CBPF_DISPATCHER_MAX), default: Int(CBPF_DISPATCHER_MAX))

    static let all: [Design] = [
        Design("dispatcher-hit", title: "bpf_dispatcher, hit (48 targets)",
               summary: "the DROP program run through the kernel's bpf_dispatcher, found among 48 known targets (N: known targets)",
               family: .dispatcher, groups: [.attach, .machine],
               parameter: hitTargets, build: dispatched),
        Design("dispatcher-miss", title: "bpf_dispatcher, miss (48 targets)",
               summary: "the same, but the DROP program is not among the 48 targets: binary search, then the indirect call (N: known targets)",
               family: .dispatcher, groups: [.attach, .machine],
               parameter: missTargets, build: dispatched),
    ]
}
