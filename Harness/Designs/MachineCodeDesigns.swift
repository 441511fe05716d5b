// MachineCodeDesigns.swift — designs whose programs run as generated x86-64 machine code
// (the "machine" engine, Sources/BPFKernel/MachineStepJIT.swift) beside their native C
// stand-ins: what the kernel's own code for the mechanism costs here.
// Mirrors: arch/x86/net/bpf_jit_comp.c (the prologue, the tail-call sequences),
// arch/x86/kernel/jump_label.c (a static branch is a 5-byte NOP until its key is on, then a
// jmp, patched live by text_poke_bp), kernel/bpf/dispatcher.c.
import BPFKernel

extension DesignID {
    public static let machineDrop = DesignID("mc-drop")
    public static let machineStaticKeyOff = DesignID("mc-static-key-off")
    public static let machineStaticKeyOn = DesignID("mc-static-key-on")
    public static let machineTailJIT = DesignID("mc-tail-jit")
    public static let machineTailDirect = DesignID("mc-tail-direct")
    public static let machineLibxdp1 = DesignID("mc-libxdp-1")
    public static let machineLibxdp3 = DesignID("mc-libxdp-3")
    public static let machineTrampoline = DesignID("mc-trampoline")
}

enum MachineCodeDesigns {
    /// The DROP program generated: the JIT's prologue, `mov eax, 1`, `leave; ret` — the
    /// machine designs' own baseline (the bench's is a C function).
    static func drop(_ c: DesignContext) throws -> DesignSetup {
        var a = ProgLoadAttr(steps: StepProgram([.returnConst(verdictDrop)]), name: dropName)
        a.machineCode = true
        let p = try c.load(a)
        return DesignSetup(id: c.id, root: p, fds: [p])
    }

    static func tailChain(_ c: DesignContext) throws -> DesignSetup {
        try TailCallDesigns.tailChain(c, machine: true, direct: c.id == .machineTailDirect)
    }

    static func libxdp(_ c: DesignContext) throws -> DesignSetup { try LibXDPDesigns.dispatcher(c, machine: true) }

    /// The generated DROP program with N generated fentry programs (each returns 0): its
    /// entry NOP patched into a jmp to the generated trampoline.
    static func trampoline(_ c: DesignContext) throws -> DesignSetup {
        var fds: [Int32] = []
        do {
            var d = ProgLoadAttr(steps: StepProgram([.returnConst(verdictDrop)]), name: dropName)
            d.machineCode = true
            let drop = try c.load(d)
            fds.append(drop)
            for _ in 0..<max(1, c.n) {
                var f = ProgLoadAttr.tracing(.traceFentry, on: drop, steps: StepProgram([.returnConst(0)]), name: "fentry")
                f.machineCode = true
                let fd = try c.load(f)
                fds.append(fd)
                fds.append(try c.bpf.linkCreate(LinkCreateAttr(progFD: fd, attachType: .traceFentry)))
            }
            return DesignSetup(id: c.id, root: drop, fds: fds)
        } catch {
            for fd in fds.reversed() { try? c.bpf.objClose(fd) }
            throw error
        }
    }

    /// StaticKeyDesigns' program, generated: each site the kernel's NOP (key off) or a jmp to
    /// an out-of-line direct call of the hook (key on).
    static func guarded(_ c: DesignContext) throws -> DesignSetup {
        try StaticKeyDesigns.guarded(c, machine: true, on: c.id == .machineStaticKeyOn)
    }

    static let all: [Design] = [
        Design("mc-drop", title: "DROP, machine code",
               summary: "generated code: the JIT's prologue (patchable NOP, frame) and return DROP — what every machine design pays before its mechanism",
               family: .machineCode, groups: [.machine], build: drop),
        Design("mc-tail-jit", title: "Tail call, machine code (indirect)",
               summary: "generated code: N programs tail-calling to DROP through a prog array with emit_bpf_tail_call_indirect's sequence (bounds, NULL, count, jmp *rcx — retpolined when on)",
               family: .machineCode, groups: [.seed, .machine], parameter: TailCallDesigns.depth, build: tailChain),
        Design("mc-tail-direct", title: "Tail call, machine code (direct, patched)",
               summary: "the same with emit_bpf_tail_call_direct: count, then a jmp patched by text_poke_bp to the target, re-pointed on every slot update",
               family: .machineCode, groups: [.seed, .machine], parameter: TailCallDesigns.depth, build: tailChain),
        Design("mc-libxdp-1", title: "libxdp dispatcher, 1 program (machine code)",
               summary: "generated code: libxdp's dispatcher calling its slot directly; freplace patched the slot's entry NOP into a jmp to the DROP extension",
               family: .machineCode, groups: [.attach, .machine], parameter: LibXDPDesigns.programs(default: 1), build: libxdp),
        Design("mc-libxdp-3", title: "libxdp dispatcher, 3 programs (machine code)",
               summary: "the same with PASS, PASS, DROP in three slots: three direct calls, each patched into a jmp to its extension",
               family: .machineCode, groups: [.attach, .machine], parameter: LibXDPDesigns.programs(default: 3), build: libxdp),
        Design("mc-trampoline", title: "Trampoline, one fentry (machine code)",
               summary: "generated code: the DROP program's entry NOP patched into a jmp to a generated trampoline that calls the guard helpers, each fentry program and the program past its NOP directly; N: fentry programs",
               family: .machineCode, groups: [.attach, .machine],
               parameter: DesignParameter("fentry programs", range: 1...maxTrampolineLinks, default: 1), build: trampoline),
        Design("mc-static-key-off", title: "Static key off, machine code (DROP)",
               summary: "generated code: DROP after N static branch sites that are the kernel's 5-byte NOP (key off)",
               family: .machineCode, groups: [.attach, .machine], parameter: StaticKeyDesigns.sites, build: guarded),
        Design("mc-static-key-on", title: "Static key on, machine code (hook + DROP)",
               summary: "the same with the key on: each site patched (text_poke_bp) into a jmp to a direct call of the hook",
               family: .machineCode, groups: [.attach, .machine], parameter: StaticKeyDesigns.sites, build: guarded),
    ]
}

extension DesignID {
    public static let machineDispatcherHit = DesignID("mc-dispatcher-hit")
    public static let machineDispatcherMiss = DesignID("mc-dispatcher-miss")
}

/// The bpf_dispatcher with its generated image (a compare tree ending in direct jumps; the
/// miss path an indirect jump, retpolined when retpolines are on — `bench --retpoline`).
enum MachineDispatcherDesigns {
    static func dispatched(_ c: DesignContext) throws -> DesignSetup {
        // A dispatcher of its own: the kernel's XDP one may be full of the native designs' targets.
        let disp = BPFDispatcher(kernel: c.bpf.kernel, name: "xdp_machine")
        var s = try DispatcherDesigns.dispatched(c, as: c.id == .machineDispatcherHit ? .dispatcherHit : .dispatcherMiss, through: disp)
        disp.useImage()
        if let e = disp.imageError {
            disp.releaseImage()
            s.close(c.bpf)
            throw HarnessError("the bpf_dispatcher image could not be generated: \(e)")
        }
        s.runner = .machineDispatched(UnsafePointer(disp.raw))
        let inner = s.teardown
        s.teardown = {
            inner()
            disp.releaseImage()
            disp.reset()
        }
        return s
    }

    static let all: [Design] = [
        Design("mc-dispatcher-hit", title: "bpf_dispatcher image, hit (machine code)",
               summary: "the DROP program reached through the generated dispatcher image: a compare tree over 48 targets, then a direct jmp",
               family: .machineCode, groups: [.attach, .machine],
               parameter: DispatcherDesigns.hitTargets, build: dispatched),
        Design("mc-dispatcher-miss", title: "bpf_dispatcher image, miss (machine code)",
               summary: "the same, the DROP program not among the 48 targets: the tree, then the indirect jmp through bpf_func (retpolined when on)",
               family: .machineCode, groups: [.attach, .machine],
               parameter: DispatcherDesigns.missTargets, build: dispatched),
    ]
}

