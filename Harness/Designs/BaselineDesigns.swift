// BaselineDesigns.swift — the DROP program alone, run by BPF_PROG_RUN after the RFC's
// patch (the reference every overhead is measured against) and before it.
// Mirrors: include/linux/filter.h (bpf_prog_run, and the RFC v3's chain_calls test in it).
import BPFKernel

extension DesignID {
    public static let beforePatch = DesignID("before-patch")
    public static let baseline = DesignID("baseline")
}

enum BaselineDesigns {
    static let all: [Design] = [
        Design("before-patch", title: "Before patch (XDP DROP program)",
               summary: "the DROP program run by BPF_PROG_RUN without the RFC's chain_calls test",
               family: .baseline, groups: [.seed]) { c in
            let d = try c.loadDrop()
            var s = DesignSetup(id: c.id, root: d, fds: [d])
            s.runner = .unpatched
            return s
        },
        Design("baseline", title: "After patch (XDP DROP program)",
               summary: "the DROP program run by BPF_PROG_RUN with the chain_calls test (the reference for overheads, as in the seed)",
               family: .baseline, groups: [.seed, .attach, .bytecode, .machine]) { c in
            let d = try c.loadDrop()
            return DesignSetup(id: c.id, root: d, fds: [d])
        },
    ]
}
