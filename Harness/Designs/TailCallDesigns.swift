// TailCallDesigns.swift — bpf_tail_call through a prog array, in the three engines: the
// JIT's emitted sequence, the interpreter's JMP_TAIL_CALL, and the direct (patched) jump
// of a constant key.
// Mirrors: kernel/bpf/core.c (___bpf_prog_run JMP_TAIL_CALL), arch/x86/net/bpf_jit_comp.c
// (emit_bpf_tail_call_indirect / _direct), kernel/bpf/arraymap.c (prog_array).
import BPFKernel

extension DesignID {
    public static let tailJIT = DesignID("tail-jit")
    public static let tailInterp = DesignID("tail-interp")
    public static let tailDirect = DesignID("tail-direct")
}

enum TailCallDesigns {
    /// MAX_TAIL_CALL_CNT: 33 tail calls per packet succeed, the 34th falls through.
    static let depth = DesignParameter("tail calls per packet", range: 1...33, default: 1)

    /// Programs t0 … t(n−1), ti jumping through slot i of one prog array; slot i holds
    /// t(i+1), and slot n − 1 the DROP program. Slot n is left empty (churn's).
    /// `machine`: every program generated as x86-64 (the machine engine), the tail calls as
    /// the JIT emits them — `direct` the patched jump, otherwise the indirect sequence.
    static func tailChain(_ c: DesignContext, machine: Bool, direct: Bool) throws -> DesignSetup {
        let jited = c.id != .tailInterp
        let n = max(1, c.n)
        let jmp = try c.bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: UInt32(n + 1), name: "jmp"))
        var fds: [Int32] = [jmp]
        func load(_ steps: [Step], _ name: String) throws -> Int32 {
            var a = ProgLoadAttr(steps: StepProgram(steps, directTailCalls: direct), name: name, jited: jited)
            a.machineCode = machine
            do { return try c.load(a) } catch {
                for fd in fds.reversed() { try? c.bpf.objClose(fd) }
                throw error
            }
        }
        let d = jited && !machine ? try c.loadDrop() : try load([.returnConst(verdictDrop)], dropName)
        fds.append(d)
        var hops: [Int32] = []
        for i in 0..<n {
            let t = try load([.tailCall(arrayFD: jmp, index: .constant(UInt64(i))), .returnConst(verdictPass)], "xdp_tail")
            hops.append(t)
            fds.append(t)
        }
        for i in 0..<n {
            let target = i == n - 1 ? d : hops[i + 1]
            try c.bpf.mapUpdateElem(jmp, key: u32Bytes(UInt32(i)), value: u32Bytes(UInt32(bitPattern: target)))
        }
        var s = DesignSetup(id: c.id, root: hops[0], fds: Array(fds.reversed()), progArray: jmp)
        s.spareSlot = UInt32(n)
        return s
    }

    static func tailChain(_ c: DesignContext) throws -> DesignSetup {
        try tailChain(c, machine: false, direct: c.id == .tailDirect)
    }

    static let all: [Design] = [
        Design("tail-jit", title: "Tail call, JIT style",
               summary: "program tail-calling the DROP program through a prog array (bounds, count, load, NULL check, jump); N: tail calls per packet",
               family: .tailCalls, groups: [.seed], parameter: depth, build: tailChain),
        Design("tail-interp", title: "Tail call, interpreter style",
               summary: "the same, interpreted: the interpreter switches to the target's steps in its loop",
               family: .tailCalls, groups: [.seed, .bytecode], parameter: depth, build: tailChain),
        Design("tail-direct", title: "Tail call, direct (patched)",
               summary: "the same with a constant key: a patched direct jump, re-pointed on update",
               family: .tailCalls, groups: [.seed], parameter: depth, build: tailChain),
    ]
}
