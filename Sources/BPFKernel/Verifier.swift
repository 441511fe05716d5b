// Verifier.swift — the lab's load-time checks of a bytecode program.
//
// Mirrors, in part, kernel/bpf/verifier.c: resolve_pseudo_ldimm64 (ld_imm64 pairs, map fds
// replaced by maps), check_subprogs (functions begin at call targets; no jump leaves its
// function; the last instruction is an exit or a jump), check_cfg (jumps inside the
// program, never into the middle of an ld_imm64), the opcode and reserved-field checks of
// do_check (check_alu_op, check_mem_access's r10 bounds, check_reg_arg's "R%d !read_ok" and
// "frame pointer is read only"), check_max_stack_depth (≤ 512 bytes along any call chain,
// ≤ 8 frames, ≤ 256 bytes above a tail call), check_helper_call's helper list per program
// type, and fixup_call_args (tail calls with bpf-to-bpf calls need the JIT).
//
// What the lab does NOT do, and says so: the kernel's verifier follows every path with the
// type and range of every register and proves each memory access safe and each loop
// bounded. The lab checks shape, registers read before written (a must-be-initialised data
// flow), constant stack offsets and the rules above; pointer safety is checked at run time
// by the interpreter (a stray access is a counted fault, verdict XDP_ABORTED), and loops are
// bounded at run time (BPFI_BACKEDGE_BUDGET backward jumps per run). So the lab accepts some
// programs the kernel refuses (an unchecked packet access, a loop it cannot bound) and
// refuses none the kernel accepts for these reasons — except reading r1–r5 after a call,
// which the kernel refuses as well.
//
// The mechanism, its rules and why: BPFKernel.docc/bytecode-and-the-interpreter.md (the DocC article "Bytecode and the interpreter").
import BPFInstructions

/// What a program may call and how it is entered.
public enum VerifierEnvironment: Sendable, Equatable {
    /// A program of this type, entered with r1 = its context.
    case program(ProgType)
    /// The conformance suite's convention: r1 = memory, r2 = its length, no context.
    case raw
}

/// The outcome of the checks: what the load path builds the image from.
struct VerifiedProgram {
    /// The instructions with map pseudo-sources replaced by map indices (resolved later).
    var insns: [BPFInsn]
    /// Function start slots (0 first).
    var functionStarts: [Int]
    /// Stack bytes each function uses (direct r10 offsets).
    var stackDepth: [Int]
    var hasTailCall: Bool
    var hasLocalCall: Bool
    /// Slots of the configurable jumps, in order (their site indices).
    var configurableJumps: [Int]
    /// Local static-key ids the program uses (JA_CFG and the kfunc).
    var keyIDs: Set<Int>
    /// The verifier's log: "processed N insns …".
    var log: String
}

/// A refused program: the kernel's errno and a log naming the instruction.
struct VerifierFailure: Error {
    let errno: Errno
    let pc: Int
    let reason: String
}

enum Verifier {
    /// Checks `insns`. `mapOf(pseudo, imm)` resolves an ld_imm64 map reference to a map.
    static func check(_ insns: [BPFInsn], environment: VerifierEnvironment, jited: Bool,
                      mapOf: (UInt8, Int32) throws -> BPFMap?) throws -> VerifiedProgram {
        do {
            return try checkOrFail(insns, environment: environment, jited: jited, mapOf: mapOf)
        } catch let f as VerifierFailure {
            let line = f.pc >= 0 && f.pc < insns.count
                ? "\(f.pc): (\(hex2(insns[f.pc].code))) \(Disassembler.text(insns[f.pc], next: f.pc + 1 < insns.count ? insns[f.pc + 1] : nil, pc: f.pc))\n"
                : ""
            throw fail(f.errno, "verifier: \(line)\(f.reason)")
        }
    }

    private static func hex2(_ b: UInt8) -> String {
        let s = String(b, radix: 16)
        return s.count == 1 ? "0" + s : s
    }

    private static func checkOrFail(_ insns: [BPFInsn], environment: VerifierEnvironment, jited: Bool,
                                    mapOf: (UInt8, Int32) throws -> BPFMap?) throws -> VerifiedProgram {
        func refuse(_ e: Errno, _ pc: Int, _ why: String) -> VerifierFailure { VerifierFailure(errno: e, pc: pc, reason: why) }
        let n = insns.count
        if n == 0 { throw refuse(.EINVAL, -1, "program has no instructions (insn_cnt is 0)") }
        if n > BPFLimits.maxInstructions {
            throw refuse(.E2BIG, -1, "program of \(n) instructions exceeds BPF_COMPLEXITY_LIMIT_INSNS (\(BPFLimits.maxInstructions))")
        }

        // Pass 1: opcodes, reserved fields, ld_imm64 pairs; function starts from call targets.
        var isSecondSlot = [Bool](repeating: false, count: n)
        var starts: Set<Int> = [0]
        var hasTailCall = false, hasLocalCall = false
        var cfgJumps: [Int] = []
        var keyIDs: Set<Int> = []
        var pc = 0
        while pc < n {
            let i = insns[pc]
            try checkEncoding(i, pc: pc, n: n, insns: insns, environment: environment, refuse: refuse)
            if i.isWide {
                isSecondSlot[pc + 1] = true
                if i.src == Pseudo.mapFD || i.src == Pseudo.mapValue || i.src == Pseudo.mapIndex || i.src == Pseudo.mapIndexValue {
                    guard let m = try mapOf(i.src, i.imm) else {
                        throw refuse(.EBADF, pc, "fd \(i.imm) is not pointing to valid bpf_map")
                    }
                    if i.src == Pseudo.mapValue || i.src == Pseudo.mapIndexValue {
                        let off = UInt32(bitPattern: insns[pc + 1].imm)
                        guard m.type == .array else {
                            throw refuse(.EINVAL, pc, "map '\(m.name)' (\(m.type.name)) has no direct value access; only array maps do")
                        }
                        guard off < m.valueSize else {
                            throw refuse(.EINVAL, pc, "invalid access to map value pointer, value_size=\(m.valueSize) off=\(off)")
                        }
                    }
                }
                pc += 2
                continue
            }
            if i.isLocalCall {
                let t = pc + 1 + Int(i.imm)
                guard t >= 0 && t < n else { throw refuse(.EINVAL, pc, "call to invalid destination \(t)") }
                starts.insert(t)
                hasLocalCall = true
            }
            if i.isHelperCall && i.imm == HelperID.tailCall.rawValue { hasTailCall = true }
            if i.isConfigurableJump {
                cfgJumps.append(pc)
                keyIDs.insert(Int(i.dst))
            }
            pc += 1
        }
        for s in starts where isSecondSlot[s] {
            throw refuse(.EINVAL, s, "call into the middle of ldimm64 insn \(s - 1)")
        }
        let functionStarts = starts.sorted()
        func function(of pc: Int) -> Int {
            var lo = 0, hi = functionStarts.count - 1
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if functionStarts[mid] <= pc { lo = mid } else { hi = mid - 1 }
            }
            return lo
        }

        // Pass 2: jumps stay inside their function and land on an instruction; every
        // function ends in an exit or a jump.
        pc = 0
        while pc < n {
            let i = insns[pc]
            if i.isWide { pc += 2; continue }
            if let t = Disassembler.branchTarget(i, pc: pc), !i.isLocalCall {
                guard t >= 0 && t < n else { throw refuse(.EINVAL, pc, "jump out of range from insn \(pc) to \(t)") }
                if isSecondSlot[t] { throw refuse(.EINVAL, pc, "jump into the middle of ldimm64 insn \(t - 1)") }
                if function(of: t) != function(of: pc) {
                    throw refuse(.EINVAL, pc, "jump out of range from insn \(pc) to \(t) (into another function)")
                }
            }
            pc += 1
        }
        for (f, s) in functionStarts.enumerated() {
            let end = f + 1 < functionStarts.count ? functionStarts[f + 1] : n
            var last = end - 1
            if isSecondSlot[last] { last -= 1 }
            let i = insns[last]
            let isJump = (i.cls == .jmp || i.cls == .jmp32) && (i.jmpOp == .ja || i.isExit) && !i.isConfigurableJump
            if !isJump || last < s {
                throw refuse(.EINVAL, last, "last insn is not an exit or jmp")
            }
        }

        // Helpers allowed for the program type; fixup_call_args's rule.
        pc = 0
        while pc < n {
            let i = insns[pc]
            if i.isHelperCall {
                guard let h = HelperID(rawValue: i.imm) else {
                    throw refuse(.EINVAL, pc, "invalid func unknown#\(i.imm)")
                }
                guard allowed(h, environment) else {
                    throw refuse(.EINVAL, pc, "program of type \(environmentName(environment)) is not allowed to call \(h.name)#\(h.rawValue)")
                }
            }
            if i.isKfuncCall {
                guard KfuncID(rawValue: i.imm) != nil else { throw refuse(.EINVAL, pc, "kernel function #\(i.imm) is not a kfunc the lab has") }
                guard environment != .raw else { throw refuse(.EINVAL, pc, "kfunc calls need a program with static keys") }
            }
            pc += i.isWide ? 2 : 1
        }
        if hasTailCall && hasLocalCall && !jited {
            throw refuse(.EINVAL, -1, "tail_calls are not allowed in non-JITed programs with bpf-to-bpf calls")
        }

        // Registers read before written, writes to r10, stack offsets through r10.
        var depth = [Int](repeating: 0, count: functionStarts.count)
        var tailCallIn = [Bool](repeating: false, count: functionStarts.count)
        for (f, s) in functionStarts.enumerated() {
            let end = f + 1 < functionStarts.count ? functionStarts[f + 1] : n
            let entry: UInt16 = f == 0 ? (environment == .raw ? 0b100_0000_0110 : 0b100_0000_0010) : 0b100_0011_1110
            let (d, tc) = try dataflow(insns, start: s, end: end, entry: entry, refuse: refuse)
            depth[f] = d
            tailCallIn[f] = tc
        }

        // The call graph: no recursion, ≤ 8 frames, ≤ 512 bytes of stack along any chain,
        // ≤ 256 bytes in the frames above a function that tail-calls.
        var callees = [[Int]](repeating: [], count: functionStarts.count)
        var callSite = [[Int]](repeating: [], count: functionStarts.count)
        pc = 0
        while pc < n {
            let i = insns[pc]
            if i.isLocalCall {
                let t = function(of: pc + 1 + Int(i.imm))
                callees[function(of: pc)].append(t)
                callSite[function(of: pc)].append(pc)
            }
            pc += i.isWide ? 2 : 1
        }
        func roundStack(_ d: Int) -> Int { max(32, (d + 31) & ~31) }  // round_up(max(depth, 1), 32)
        // One pass over the call graph, memoised (a hostile program must not make it
        // exponential): recursion by colouring, then the deepest chain of frames and of
        // stack below each function, and the most stack above each.
        let nf = functionStarts.count
        var colour = [UInt8](repeating: 0, count: nf)   // 0 new, 1 on the path, 2 done
        var frames = [Int](repeating: 1, count: nf), stackBelow = [Int](repeating: 0, count: nf)
        var order: [Int] = []                              // callees before callers
        func visit(_ f: Int) throws {
            colour[f] = 1
            for (k, c) in callees[f].enumerated() {
                if colour[c] == 1 {
                    throw refuse(.EINVAL, callSite[f][k], "recursive call from insn \(callSite[f][k]) to function at insn \(functionStarts[c])")
                }
                if colour[c] == 0 { try visit(c) }
                frames[f] = max(frames[f], frames[c] + 1)
                stackBelow[f] = max(stackBelow[f], stackBelow[c])
            }
            stackBelow[f] += roundStack(depth[f])
            colour[f] = 2
            order.append(f)
        }
        try visit(0)
        if frames[0] > BPFLimits.callFrames {
            throw refuse(.E2BIG, 0, "the call stack of \(frames[0]) frames is too deep")
        }
        if stackBelow[0] > BPFLimits.stackBytes {
            throw refuse(.EACCES, 0, "combined stack size of \(frames[0]) calls is \(stackBelow[0]). Too large")
        }
        var above = [Int](repeating: -1, count: nf)
        above[0] = 0
        for f in order.reversed() where above[f] >= 0 {      // callers before callees
            if tailCallIn[f] && f != 0 && above[f] > BPFLimits.tailCallStackBytes {
                throw refuse(.EINVAL, functionStarts[f], "tail_calls are not allowed when call stack of previous frames is \(above[f]) bytes. Too large")
            }
            for c in callees[f] { above[c] = max(above[c], above[f] + roundStack(depth[f])) }
        }

        let log = "processed \(n) insns, \(functionStarts.count) function\(functionStarts.count == 1 ? "" : "s"), stack depth \(depth.map(String.init).joined(separator: "+"))"
        return VerifiedProgram(insns: insns, functionStarts: functionStarts, stackDepth: depth, hasTailCall: hasTailCall,
                               hasLocalCall: hasLocalCall, configurableJumps: cfgJumps, keyIDs: keyIDs, log: log)
    }

    static func environmentName(_ e: VerifierEnvironment) -> String {
        switch e {
        case .program(let t): return t.name
        case .raw: return "raw"
        }
    }

    /// Which helpers each program type may call (the lab's subset of each type's
    /// get_func_proto: xdp_func_proto, tracing_prog_func_proto, sk_filter_func_proto, …).
    static func allowed(_ h: HelperID, _ e: VerifierEnvironment) -> Bool {
        let common: Set<HelperID> = [.mapLookupElem, .mapUpdateElem, .mapDeleteElem, .ktimeGetNs, .ktimeGetBootNs,
                                     .tracePrintk, .getPrandomU32, .getSmpProcessorID, .tailCall]
        switch e {
        case .raw:
            return [.ktimeGetNs, .ktimeGetBootNs, .getPrandomU32, .getSmpProcessorID].contains(h)
        case .program(.xdp):
            return common.contains(h) || [.redirect, .xdpAdjustHead, .xdpAdjustMeta, .xdpAdjustTail].contains(h)
        case .program(.schedCls):
            return common.contains(h) || h == .redirect
        case .program(.tracing), .program(.rawTracepoint):
            return common.contains(h) || h == .getAttachCookie || h == .getFuncRet
        case .program(.ext):
            // An extension is checked as its target's type by the caller; the union here.
            return common.contains(h) || [.redirect, .xdpAdjustHead, .xdpAdjustMeta, .xdpAdjustTail].contains(h)
        case .program(.socketFilter):
            return common.contains(h)
        }
    }

    /// Opcode and reserved fields of one instruction (the ones RFC 9669 calls reserved, and
    /// the kernel refuses when set).
    private static func checkEncoding(_ i: BPFInsn, pc: Int, n: Int, insns: [BPFInsn], environment: VerifierEnvironment,
                                      refuse: (Errno, Int, String) -> VerifierFailure) throws {
        func reserved(_ what: String) -> VerifierFailure { refuse(.EINVAL, pc, "\(what) uses reserved fields") }
        if i.dst > 10 || (i.src > 10 && !(i.isWide || i.cls == .jmp || i.cls == .jmp32)) {
            throw refuse(.EINVAL, pc, "R\(max(i.dst, i.src)) is invalid")
        }
        switch i.cls {
        case .alu, .alu64:
            let w = i.cls == .alu64
            guard let op = i.aluOp else { throw refuse(.EINVAL, pc, "invalid BPF_ALU opcode \(hex2(i.code))") }
            switch op {
            case .neg:
                if i.source == .x || i.src != 0 || i.off != 0 || i.imm != 0 { throw reserved("BPF_NEG") }
            case .end:
                if i.src != 0 || i.off != 0 || ![16, 32, 64].contains(i.imm) { throw reserved("BPF_END") }
                if w && i.source == .x { throw refuse(.EINVAL, pc, "invalid BPF_ALU64 opcode \(hex2(i.code))") }
            default:
                if i.source == .x {
                    if i.imm != 0 { throw reserved("BPF_ALU") }
                } else if i.src != 0 {
                    throw reserved("BPF_ALU")
                }
                switch op {
                case .div, .mod:
                    if i.off != 0 && i.off != 1 { throw reserved("BPF_ALU") }
                    if i.source == .k && i.imm == 0 { throw refuse(.EINVAL, pc, "div by zero") }
                case .mov:
                    let ok: [Int16] = i.source == .k ? [0] : (w ? [0, 8, 16, 32] : [0, 8, 16])
                    if !ok.contains(i.off) { throw reserved("BPF_MOV") }
                case .lsh, .rsh, .arsh:
                    if i.off != 0 { throw reserved("BPF_ALU") }
                    if i.source == .k && (i.imm < 0 || i.imm >= (w ? 64 : 32)) {
                        throw refuse(.EINVAL, pc, "invalid shift \(i.imm)")
                    }
                default:
                    if i.off != 0 { throw reserved("BPF_ALU") }
                }
            }
            if i.dst == 10 { throw refuse(.EACCES, pc, "frame pointer is read only") }
        case .ld:
            guard i.isWide else {
                throw refuse(.EINVAL, pc, "BPF_LD_[ABS|IND] and BPF_LD other than ld_imm64 are not allowed for this program")
            }
            guard pc + 1 < n else { throw refuse(.EINVAL, pc, "invalid bpf_ld_imm64 insn (it is the last)") }
            let next = insns[pc + 1]
            if i.off != 0 || next.code != 0 || next.dst != 0 || next.src != 0 || next.off != 0 {
                throw refuse(.EINVAL, pc, "invalid bpf_ld_imm64 insn")
            }
            if ![0, Pseudo.mapFD, Pseudo.mapValue, Pseudo.mapIndex, Pseudo.mapIndexValue].contains(i.src) {
                throw refuse(.EINVAL, pc, "unrecognized bpf_ld_imm64 insn (src_reg \(i.src))")
            }
            if (i.src == Pseudo.mapFD || i.src == Pseudo.mapIndex) && next.imm != 0 {
                throw refuse(.EINVAL, pc, "invalid bpf_ld_imm64 insn (map reference with an offset)")
            }
            if i.dst == 10 { throw refuse(.EACCES, pc, "frame pointer is read only") }
        case .ldx:
            guard i.mode == .mem || (i.mode == .memsx && i.sizeField != .dw) else {
                throw refuse(.EINVAL, pc, "unknown opcode \(hex2(i.code))")
            }
            if i.imm != 0 { throw reserved("BPF_LDX") }
            if i.dst == 10 { throw refuse(.EACCES, pc, "frame pointer is read only") }
        case .st:
            guard i.mode == .mem else { throw refuse(.EINVAL, pc, "unknown opcode \(hex2(i.code))") }
            if i.src != 0 { throw reserved("BPF_ST") }
        case .stx:
            if i.mode == .mem {
                if i.imm != 0 { throw reserved("BPF_STX") }
            } else if i.mode == .atomic {
                guard i.sizeField == .w || i.sizeField == .dw else {
                    throw refuse(.EINVAL, pc, "invalid atomic operand size")
                }
                guard AtomicOp(rawValue: i.imm) != nil else { throw refuse(.EINVAL, pc, "BPF_ATOMIC uses invalid atomic opcode \(String(i.imm, radix: 16))") }
            } else {
                throw refuse(.EINVAL, pc, "unknown opcode \(hex2(i.code))")
            }
        case .jmp, .jmp32:
            let w = i.cls == .jmp
            guard let op = i.jmpOp else { throw refuse(.EINVAL, pc, "unknown opcode \(hex2(i.code))") }
            switch op {
            case .ja:
                if i.source == .x { throw refuse(.EINVAL, pc, "unknown opcode \(hex2(i.code))") }
                if w {
                    if i.isConfigurableJump {
                        if i.imm & ~1 != 0 { throw reserved("BPF_JA_CFG") }
                        if environment == .raw { throw refuse(.EINVAL, pc, "BPF_JA uses reserved fields (src_reg 1 is the lab's configurable jump, which needs a program with static keys)") }
                    } else if i.src != 0 || i.dst != 0 || i.imm != 0 { throw reserved("BPF_JA") }
                } else if i.src != 0 || i.dst != 0 || i.off != 0 { throw reserved("BPF_JA") }
            case .call:
                guard w, i.source == .k else { throw refuse(.EINVAL, pc, "unknown opcode \(hex2(i.code))") }
                if i.off != 0 || i.dst != 0 || i.src > 2 { throw reserved("BPF_CALL") }
            case .exit:
                guard w, i.source == .k else { throw refuse(.EINVAL, pc, "unknown opcode \(hex2(i.code))") }
                if i.src != 0 || i.dst != 0 || i.off != 0 || i.imm != 0 { throw reserved("BPF_EXIT") }
            default:
                if i.source == .x {
                    if i.imm != 0 { throw reserved("BPF_JMP/JMP32") }
                } else if i.src != 0 {
                    throw reserved("BPF_JMP/JMP32")
                }
                if i.src > 10 { throw refuse(.EINVAL, pc, "R\(i.src) is invalid") }
            }
        }
    }

    /// Registers read before they are written (a forward must-be-initialised analysis over
    /// one function), writes to r10, and constant r10 offsets inside the 512-byte frame.
    /// Returns the function's stack depth and whether it tail-calls.
    private static func dataflow(_ insns: [BPFInsn], start: Int, end: Int, entry: UInt16,
                                 refuse: (Errno, Int, String) -> VerifierFailure) throws -> (Int, Bool) {
        let all: UInt16 = 0x7ff
        var state = [UInt16?](repeating: nil, count: end - start)  // registers known written at entry to each insn
        state[0] = entry
        var work = [start]
        var depth = 0
        var tailCall = false
        func need(_ r: UInt8, _ s: UInt16, _ pc: Int) throws {
            if s & (1 << UInt16(r)) == 0 { throw refuse(.EACCES, pc, "R\(r) !read_ok") }
        }
        func stack(_ reg: UInt8, _ off: Int16, _ size: Int, _ pc: Int, write: Bool) throws {
            guard reg == 10 else { return }
            let o = Int(off)
            if o >= 0 || o < -BPFLimits.stackBytes || o + size > 0 {
                throw refuse(.EACCES, pc, "invalid \(write ? "write to" : "read from") stack R10 off=\(o) size=\(size)")
            }
            depth = max(depth, -o)
        }
        while let pc = work.popLast() {
            guard var s = state[pc - start] else { continue }
            let i = insns[pc]
            var succ: [Int] = []
            let next = pc + (i.isWide ? 2 : 1)
            switch i.cls {
            case .alu, .alu64:
                if i.aluOp != .mov { try need(i.dst, s, pc) }
                if i.source == .x && i.aluOp != .neg && i.aluOp != .end { try need(i.src, s, pc) }
                s |= 1 << UInt16(i.dst)
                succ = [next]
            case .ld:
                s |= 1 << UInt16(i.dst)
                succ = [next]
            case .ldx:
                try need(i.src, s, pc)
                try stack(i.src, i.off, i.sizeField.bytes, pc, write: false)
                s |= 1 << UInt16(i.dst)
                succ = [next]
            case .st:
                try need(i.dst, s, pc)
                try stack(i.dst, i.off, i.sizeField.bytes, pc, write: true)
                succ = [next]
            case .stx:
                try need(i.dst, s, pc)
                try need(i.src, s, pc)
                try stack(i.dst, i.off, i.sizeField.bytes, pc, write: true)
                if i.mode == .atomic, let op = AtomicOp(rawValue: i.imm) {
                    if op == .cmpxchg { try need(0, s, pc); s |= 1 }
                    else if op.fetches { s |= 1 << UInt16(i.src) }
                }
                succ = [next]
            case .jmp, .jmp32:
                switch i.jmpOp! {
                case .exit:
                    try need(0, s, pc)
                case .call:
                    if i.isHelperCall, let h = HelperID(rawValue: i.imm) {
                        for r in 0..<h.arguments.count { try need(UInt8(r + 1), s, pc) }
                        if h == .tailCall { tailCall = true }
                    } else if i.isKfuncCall {
                        try need(1, s, pc)
                        if i.imm == KfuncID.staticKeySet.rawValue { try need(2, s, pc) }
                    }
                    s = (s & ~0b11_1111) | 1  // r0 = the result; r1–r5 clobbered
                    s &= all
                    succ = [next]
                case .ja:
                    let t = Disassembler.branchTarget(i, pc: pc)!
                    succ = i.isConfigurableJump ? [next, t] : [t]
                default:
                    try need(i.dst, s, pc)
                    if i.source == .x { try need(i.src, s, pc) }
                    succ = [next, Disassembler.branchTarget(i, pc: pc)!]
                }
            }
            for t in succ where t >= start && t < end {
                let old = state[t - start]
                let merged = old.map { $0 & s } ?? s
                if merged != old {
                    state[t - start] = merged
                    work.append(t)
                }
            }
        }
        // check_cfg: every instruction is reachable.
        var pc = start
        while pc < end {
            if state[pc - start] == nil { throw refuse(.EINVAL, pc, "unreachable insn \(pc)") }
            pc += insns[pc].isWide ? 2 : 1
        }
        return (depth, tailCall)
    }
}
