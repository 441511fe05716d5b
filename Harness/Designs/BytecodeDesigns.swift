// BytecodeDesigns.swift — real eBPF instructions run by the kernel's interpreter
// (BPFPrograms/interpreter.c): a DROP program, a tail call, and two clang-built objects
// (bpf/xdp_parser.c, bpf/tail_loop.c).
// Mirrors: kernel/bpf/core.c (___bpf_prog_run).
import BPFKernel
import BPFInstructions

extension DesignID {
    public static let bytecodeDrop = DesignID("bytecode-drop")
    public static let bytecodeTail = DesignID("bytecode-tail")
    public static let bytecodeParser = DesignID("bytecode-parser")
    public static let bytecodeTailLoop = DesignID("bytecode-tail-loop")
}

enum BytecodeDesigns {
    static let all: [Design] = [
        Design("bytecode-drop", title: "Bytecode DROP (interpreter)",
               summary: "the DROP program as instructions (r0 = 1; exit), run by the interpreter: its fixed cost per packet",
               family: .bytecode, groups: [.bytecode]) { c in
            let d = try c.load(ProgLoadAttr(insns: [.mov64(0, imm: Int32(verdictDrop)), .exit], name: dropName))
            var s = DesignSetup(id: c.id, root: d, fds: [d])
            s.bytecodeProg = d
            return s
        },
        Design("bytecode-tail", title: "Bytecode tail call (interpreter)",
               summary: "an instruction program tail-calling the bytecode DROP program (bpf_tail_call, the interpreter's JMP_TAIL_CALL)",
               family: .bytecode, groups: [.bytecode]) { c in
            let jmp = try c.bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: 2, name: "jmp"))
            let d = try c.load(ProgLoadAttr(insns: [.mov64(0, imm: Int32(verdictDrop)), .exit], name: dropName))
            try c.bpf.mapUpdateElem(jmp, key: [0, 0, 0, 0], value: u32Bytes(UInt32(bitPattern: d)))
            let t = try c.load(ProgLoadAttr(insns: try Assembler.assemble("""
                lddw %r2, map \(jmp)
                mov %r3, 0
                call 12
                mov %r0, 2
                exit
                """), name: "xdp_tail"))
            var s = DesignSetup(id: c.id, root: t, fds: [t, d, jmp], progArray: jmp)
            s.bytecodeProg = t
            return s
        },
        Design("bytecode-parser", title: "Bytecode Eth/IPv4/UDP parser (clang)",
               summary: "bpf/xdp_parser.c compiled by clang: Ethernet, IPv4, UDP, a hash-map count per port, DROP for port 9000",
               family: .bytecode, groups: [.bytecode], needsObjects: true) { c in
            let l = try c.bpf.loadObject(try ShippedObjects.object("xdp_parser"))
            var s = DesignSetup(id: c.id, root: l.programs["xdp_parser"]!, fds: Array(l.programs.values) + Array(l.maps.values))
            s.bytecodeProg = s.root
            return s
        },
        Design("bytecode-tail-loop", title: "Bytecode self tail call, 34 runs (clang)",
               summary: "bpf/tail_loop.c compiled by clang: counts into an array map and tail-calls itself; 34 runs per packet, then DROP",
               family: .bytecode, groups: [.bytecode], needsObjects: true) { c in
            let l = try c.bpf.loadObject(try ShippedObjects.object("tail_loop"))
            let p = l.programs["tail_loop"]!
            try c.bpf.mapUpdateElem(l.maps["jmp_table"]!, key: [0, 0, 0, 0], value: u32Bytes(UInt32(bitPattern: p)))
            var s = DesignSetup(id: c.id, root: p, fds: [p] + Array(l.maps.values), progArray: l.maps["jmp_table"]!)
            s.bytecodeProg = p
            return s
        },
    ]
}
