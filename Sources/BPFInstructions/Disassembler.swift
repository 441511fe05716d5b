// Disassembler.swift — instructions to text, two ways: the kernel's verifier-log /
// `bpftool prog dump xlated` syntax (`r0 = 1`, `if r0 != 0xf goto pc+3`,
// `call bpf_tail_call#12`), and the suite's assembler syntax (what `Assembler` reads back).
//
// Mirrors: kernel/bpf/disasm.c (print_bpf_insn: bpf_alu_string, bpf_jmp_string,
// bpf_ldst_string, the atomic forms, "%+d" offsets, ALU immediates in decimal, jump
// immediates in hex, " ll" after a 64-bit immediate).

public enum DisassemblyStyle: String, Sendable, CaseIterable {
    /// The kernel's verifier log and bpftool's xlated dump.
    case kernel
    /// The bpf_conformance suite's assembler syntax (round-trips through `Assembler`).
    case assembler
}

public enum Disassembler {
    /// One line per instruction: "   0: (b7) r0 = 1" (the wide ld_imm64 takes two slots,
    /// printed once). `mapName` names what a map pseudo-source refers to.
    public static func listing(_ insns: [BPFInsn], style: DisassemblyStyle = .kernel,
                               mapName: (BPFInsn) -> String? = { _ in nil }) -> String {
        var out = ""
        var pc = 0
        if style == .assembler {
            // Labels for every jump and call target, so the text assembles back.
            let targets = jumpTargets(insns)
            while pc < insns.count {
                if let l = targets[pc] { out += "\(l):\n" }
                let next = pc + 1 < insns.count ? insns[pc + 1] : nil
                out += text(insns[pc], next: next, pc: pc, style: .assembler, labels: targets, mapName: mapName) + "\n"
                pc += insns[pc].isWide ? 2 : 1
            }
            return out
        }
        while pc < insns.count {
            let i = insns[pc]
            let next = pc + 1 < insns.count ? insns[pc + 1] : nil
            let num = String(pc)
            out += String(repeating: " ", count: max(0, 4 - num.count)) + num + ": (" + hexByte(i.code) + ") "
            out += text(i, next: next, pc: pc, style: .kernel, mapName: mapName) + "\n"
            pc += i.isWide ? 2 : 1
        }
        return out
    }

    /// Label names for the targets of jumps and local calls ("L<pc>").
    static func jumpTargets(_ insns: [BPFInsn]) -> [Int: String] {
        var starts: Set<Int> = []
        var pc = 0
        while pc < insns.count {
            starts.insert(pc)
            pc += insns[pc].isWide ? 2 : 1
        }
        // Only targets at an instruction's start get a label; any other offset (out of the
        // program, into an ld_imm64) stays a number, so the text still assembles back.
        var t: [Int: String] = [:]
        for pc in starts {
            if let dest = branchTarget(insns[pc], pc: pc), starts.contains(dest) { t[dest] = "L\(dest)" }
        }
        return t
    }

    /// Where a jump or local call at `pc` goes (nil for anything else).
    public static func branchTarget(_ i: BPFInsn, pc: Int) -> Int? {
        switch i.cls {
        case .jmp:
            if i.isLocalCall { return pc + 1 + Int(i.imm) }
            guard let op = i.jmpOp, op != .call, op != .exit else { return nil }
            return pc + 1 + Int(i.off)
        case .jmp32:
            guard let op = i.jmpOp, op != .call, op != .exit else { return nil }
            return op == .ja ? pc + 1 + Int(i.imm) : pc + 1 + Int(i.off)
        default:
            return nil
        }
    }

    /// The text of one instruction (`next`: the second slot of a wide instruction).
    public static func text(_ i: BPFInsn, next: BPFInsn? = nil, pc: Int = 0, style: DisassemblyStyle = .kernel,
                            labels: [Int: String] = [:], mapName: (BPFInsn) -> String? = { _ in nil }) -> String {
        let k = style == .kernel
        func reg(_ r: UInt8, _ wide: Bool = true) -> String { k ? (wide ? "r\(r)" : "w\(r)") : "%r\(r)" }
        func rel(_ o: Int) -> String {
            if !k, let l = labels[pc + 1 + o] { return l }
            return o < 0 ? "\(k ? "pc" : "")\(o)" : "\(k ? "pc" : "")+\(o)"
        }
        func mem(_ r: UInt8, _ off: Int16, _ size: InsnSize, signed: Bool = false) -> String {
            if k {
                let t = (signed ? "s" : "u") + String(size.bytes * 8)
                return "*(\(t) *)(r\(r) \(off < 0 ? "" : "+")\(off))"
            }
            return off == 0 ? "[%r\(r)]" : "[%r\(r)\(off < 0 ? "" : "+")\(off)]"
        }
        func hex(_ v: Int32) -> String {
            v < 0 ? "0x" + String(UInt32(bitPattern: v), radix: 16) : "0x" + String(v, radix: 16)
        }
        func unknown() -> String { k ? "(bad opcode 0x\(hexByte(i.code)))" : ".insn 0x\(String(i.word, radix: 16))" }

        switch i.cls {
        case .alu, .alu64:
            let w = i.cls == .alu64
            guard let op = i.aluOp else { return unknown() }
            let sfx = w ? "" : "32"
            if op == .end {
                let name: String
                if i.cls == .alu64 { name = k ? "bswap" : "bswap" }
                else { name = i.source == .x ? "be" : "le" }
                return k ? "r\(i.dst) = \(name)\(i.imm) r\(i.dst)" : "\(name)\(i.imm) %r\(i.dst)"
            }
            if op == .neg {
                return k ? "\(reg(i.dst, w)) = -\(reg(i.dst, w))" : "neg\(sfx) %r\(i.dst)"
            }
            let signed = (op == .div || op == .mod) && i.off == 1
            if op == .mov && i.off != 0 && i.source == .x {
                let from = Int(i.off)
                if k { return "\(reg(i.dst, w)) = (s\(from))\(reg(i.src, w))" }
                return "movsx\(from)\(w ? 64 : 32) %r\(i.dst), %r\(i.src)"
            }
            let operand = i.source == .x ? reg(i.src, w) : "\(i.imm)"
            if k {
                let sym: String
                switch op {
                case .add: sym = "+="; case .sub: sym = "-="; case .mul: sym = "*="
                case .div: sym = signed ? "s/=" : "/="; case .mod: sym = signed ? "s%=" : "%="
                case .or: sym = "|="; case .and: sym = "&="; case .lsh: sym = "<<="; case .rsh: sym = ">>="
                case .xor: sym = "^="; case .mov: sym = "="; case .arsh: sym = "s>>="
                case .neg, .end: sym = "?"
                }
                return "\(reg(i.dst, w)) \(sym) \(operand)"
            }
            let name = (signed ? "s" : "") + op.mnemonic + sfx
            return "\(name) %r\(i.dst), \(operand)"

        case .ld:
            guard i.isWide else { return unknown() }
            let hi = UInt64(UInt32(bitPattern: next?.imm ?? 0))
            let v = hi << 32 | UInt64(UInt32(bitPattern: i.imm))
            switch i.src {
            case Pseudo.mapFD, Pseudo.mapIndex:
                let name = mapName(i) ?? "\(i.src == Pseudo.mapFD ? "fd" : "idx"):\(i.imm)"
                return k ? "r\(i.dst) = map[\(name)]" : "lddw %r\(i.dst), map \(i.imm)"
            case Pseudo.mapValue, Pseudo.mapIndexValue:
                let name = mapName(i) ?? "\(i.src == Pseudo.mapValue ? "fd" : "idx"):\(i.imm)"
                return k ? "r\(i.dst) = map[\(name)][0]+\(hi)" : "lddw %r\(i.dst), map_value \(i.imm), \(hi)"
            case Pseudo.function:
                return k ? "r\(i.dst) = \(rel(Int(i.imm)))" : "lddw %r\(i.dst), 0x\(String(v, radix: 16))"
            default:
                return k ? "r\(i.dst) = 0x\(String(v, radix: 16)) ll" : "lddw %r\(i.dst), 0x\(String(v, radix: 16))"
            }

        case .ldx:
            guard let m = i.mode, m == .mem || m == .memsx else { return unknown() }
            let sx = m == .memsx
            if k { return "r\(i.dst) = \(mem(i.src, i.off, i.sizeField, signed: sx))" }
            let name = "ldx" + (sx ? "s" : "") + sizeSuffix(i.sizeField)
            return "\(name) %r\(i.dst), \(mem(i.src, i.off, i.sizeField))"

        case .st:
            guard i.mode == .mem else { return unknown() }
            if k { return "\(mem(i.dst, i.off, i.sizeField)) = \(i.imm)" }
            return "st\(sizeSuffix(i.sizeField)) \(mem(i.dst, i.off, i.sizeField)), \(i.imm)"

        case .stx:
            if i.mode == .mem {
                if k { return "\(mem(i.dst, i.off, i.sizeField)) = r\(i.src)" }
                return "stx\(sizeSuffix(i.sizeField)) \(mem(i.dst, i.off, i.sizeField)), %r\(i.src)"
            }
            guard i.mode == .atomic, let op = AtomicOp(rawValue: i.imm),
                  i.sizeField == .w || i.sizeField == .dw else { return unknown() }
            let w = i.sizeField == .dw
            if k {
                let p = "(\(w ? "u64" : "u32") *)(r\(i.dst) \(i.off < 0 ? "" : "+")\(i.off))"
                let a = w ? "atomic64_" : "atomic_"
                switch op {
                case .xchg: return "\(reg(i.src, w)) = \(a)xchg(\(p), \(reg(i.src, w)))"
                case .cmpxchg: return "\(reg(0, w)) = \(a)cmpxchg(\(p), \(reg(0, w)), \(reg(i.src, w)))"
                default:
                    if op.fetches { return "\(reg(i.src, w)) = \(a)fetch_\(op.baseName)(\(p), \(reg(i.src, w)))" }
                    let sym = ["add": "+=", "or": "|=", "and": "&=", "xor": "^="][op.baseName]!
                    return "lock *\(p) \(sym) \(reg(i.src, w))"
                }
            }
            return "lock \(op.fetches && op != .xchg && op != .cmpxchg ? "fetch " : "")\(op.baseName)\(w ? "" : "32") \(mem(i.dst, i.off, i.sizeField)), %r\(i.src)"

        case .jmp, .jmp32:
            let w = i.cls == .jmp
            guard let op = i.jmpOp else { return unknown() }
            switch op {
            case .ja:
                if i.isConfigurableJump {
                    let inv = i.imm & 1 != 0
                    return k ? "goto_cfg key#\(i.dst)\(inv ? " inverse" : "") \(rel(Int(i.off)))"
                             : "ja_cfg key \(i.dst), \(rel(Int(i.off)))\(inv ? ", inverse" : "")"
                }
                if w { return k ? "goto \(rel(Int(i.off)))" : "ja \(rel(Int(i.off)))" }
                return k ? "gotol \(rel(Int(i.imm)))" : "ja32 \(rel(Int(i.imm)))"
            case .exit:
                return "exit"
            case .call:
                if i.code == 0x8d { return k ? "callx r\(i.dst)" : "call %r\(i.dst)" }
                if i.isLocalCall { return k ? "call \(rel(Int(i.imm)))" : "call local \(rel(Int(i.imm)))" }
                if i.isKfuncCall {
                    let name = KfuncID(rawValue: i.imm)?.name ?? "kernel-function"
                    return k ? "call \(name)#\(i.imm)" : "call kfunc \(i.imm)"
                }
                if k {
                    let name = HelperID(rawValue: i.imm)?.name ?? "unknown"
                    return "call \(name)#\(i.imm)"
                }
                return "call \(i.imm)"
            default:
                if k {
                    let sym: String
                    switch op {
                    case .jeq: sym = "=="; case .jne: sym = "!="; case .jgt: sym = ">"; case .jge: sym = ">="
                    case .jlt: sym = "<"; case .jle: sym = "<="; case .jset: sym = "&"
                    case .jsgt: sym = "s>"; case .jsge: sym = "s>="; case .jslt: sym = "s<"; case .jsle: sym = "s<="
                    default: sym = "?"
                    }
                    let rhs = i.source == .x ? reg(i.src, w) : hex(i.imm)
                    return "if \(reg(i.dst, w)) \(sym) \(rhs) goto \(rel(Int(i.off)))"
                }
                let rhs = i.source == .x ? "%r\(i.src)" : "\(i.imm)"
                return "\(op.mnemonic)\(w ? "" : "32") %r\(i.dst), \(rhs), \(rel(Int(i.off)))"
            }
        }
    }

    static func sizeSuffix(_ s: InsnSize) -> String {
        switch s { case .b: return "b"; case .h: return "h"; case .w: return "w"; case .dw: return "dw" }
    }
}
