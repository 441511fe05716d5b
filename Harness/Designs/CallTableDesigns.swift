// CallTableDesigns.swift — a NULL-checked function table (a prog array used for calls
// that return), and BPF_PROG_RUN_ARRAY, where every program runs and the first non-PASS
// verdict wins.
// Mirrors: include/linux/bpf.h (bpf_prog_run_array), kernel/bpf/core.c (bpf_prog_array).
import BPFKernel

extension DesignID {
    public static let indirectCall = DesignID("indirect-call")
    public static let runAll = DesignID("run-all")
}

enum CallTableDesigns {
    static let all: [Design] = [
        Design("indirect-call", title: "Indirect call table (PASS, DROP)",
               summary: "the DROP program calling the PASS program through a NULL-checked function-table slot",
               family: .callTables, groups: [.attach]) { c in
            let table = try c.bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: 4, name: "debugpoints"))
            let hook = try c.load(ProgLoadAttr(body: .xdpPass, name: "xdp_pass"))
            try c.bpf.mapUpdateElem(table, key: [0, 0, 0, 0], value: u32Bytes(UInt32(bitPattern: hook)))
            let p = try c.load(ProgLoadAttr(steps: StepProgram([.indirectCall(arrayFD: table, index: .constant(0)), .returnConst(verdictDrop)]),
                                            name: dropName))
            return DesignSetup(id: c.id, root: p, fds: [p, hook, table])
        },
        Design("run-all", title: "Run-all array (PASS, DROP)",
               summary: "BPF_PROG_RUN_ARRAY over [PASS, DROP]: every program runs, the first non-PASS verdict wins (N: programs in the array, the last DROP)",
               family: .callTables, groups: [.attach],
               parameter: DesignParameter("programs in the array", range: 1...runArrayMaxProgs, default: 2)) { c in
            var fds: [Int32] = []
            for _ in 1..<max(1, c.n) { fds.append(try c.load(ProgLoadAttr(body: .xdpPass, name: "xdp_pass"))) }
            let d = try c.loadDrop()
            fds.append(d)
            let ra = RunArray(kernel: c.bpf.kernel)
            for fd in fds {
                let p = try c.bpf.prog(fd)
                defer { p.put() }
                try ra.attach(p)
            }
            var s = DesignSetup(id: c.id, root: d, fds: fds)
            s.runner = .runArray(UnsafePointer(ra.slot))
            s.teardown = { ra.detachAll() }
            return s
        },
    ]
}
