// ExtensionDesigns.swift — programs attached to programs: a global function replaced by
// an extension (freplace) through a link, and fentry programs on the DROP program's
// trampoline.
// Mirrors: kernel/bpf/trampoline.c (bpf_trampoline_link_prog, BPF_MAX_TRAMP_LINKS),
// kernel/bpf/syscall.c (bpf_tracing_prog_attach), arch/x86/net/bpf_jit_comp.c
// (arch_prepare_bpf_trampoline).
import BPFKernel

extension DesignID {
    public static let extSlot = DesignID("ext-slot")
    public static let trampoline = DesignID("trampoline")
}

enum ExtensionDesigns {
    static let all: [Design] = [
        Design("ext-slot", title: "freplace extension slot (DROP)",
               summary: "a program calling its global function 'slot', replaced (freplace) by the DROP program through a link",
               family: .extensions, groups: [.attach]) { c in
            let t = try c.load(ProgLoadAttr(steps: StepProgram([.call(0), .returnLast], subprogs: [[.returnConst(verdictPass)]],
                                                               subprogNames: ["slot"]), name: "xdp_main"))
            let e = try c.load(.extension(of: t, function: "slot", body: .xdpDrop, name: dropName))
            let l = try c.bpf.linkCreate(LinkCreateAttr(progFD: e, attachType: .unspecified))
            return DesignSetup(id: c.id, root: t, fds: [t, e, l])
        },
        Design("trampoline", title: "Trampoline, one fentry (DROP)",
               summary: "the DROP program with fentry programs (each returns 0) on its trampoline; N: fentry programs",
               family: .extensions, groups: [.attach, .bytecode],
               parameter: DesignParameter("fentry programs", range: 1...maxTrampolineLinks, default: 1)) { c in
            let d = try c.loadDrop()
            var fds = [d]
            for _ in 0..<max(1, c.n) {
                let f = try c.load(.tracing(.traceFentry, on: d, body: .retConst, data: [0, 0, 0, 0], name: "fentry"))
                fds.append(f)
                fds.append(try c.bpf.linkCreate(LinkCreateAttr(progFD: f, attachType: .traceFentry)))
            }
            return DesignSetup(id: c.id, root: d, fds: fds)
        },
    ]
}
