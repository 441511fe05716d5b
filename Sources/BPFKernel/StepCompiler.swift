// StepCompiler.swift — step programs (and the builtin bodies) compiled to eBPF
// instructions, so the designs, scenarios and tests written with steps can run on real
// bytecode in the interpreter.
//
// Mirrors: no kernel file; what clang would emit for the C each step stands for. The
// program's context is kept in r6 (callee-saved, as clang keeps `ctx` across helper
// calls) and "the last value" in r7. Variables are a global-data array map of the
// program's own (the kernel's .data: `ld_imm64` with BPF_PSEUDO_MAP_VALUE), so
// `progSetVar` writes the map. A count step is a call to the lab's kfunc
// bpf_lab_counter_add (the kernel-wide named counters have no map of their own).
// indirectCall (seed 001's "bpf indirect calls") has no instruction in the ISA and is refused.
import BPFInstructions

/// A step program as instructions: the text (for learners and `prog dump`), the
/// instructions, and what the load must supply.
struct CompiledSteps {
    var text: String
    var insns: [BPFInsn]
    /// Whether it needs the variables map (fd written into the text as VARS).
    var usesVars: Bool
    /// Static-key map fds, by local key id.
    var keyFDs: [Int32]
}

enum StepCompiler {
    /// The fd placeholder of the variables map in the text until the map exists.
    static let varsPlaceholder: Int32 = 0x7fff_fff0

    /// Compiles `sp` (counters resolved through `counterSlot`). The variables map's fd is
    /// `varsFD` when the program uses variables.
    static func compile(_ sp: StepProgram, counterSlot: (String) throws -> UInt32, varsFD: Int32?) throws -> CompiledSteps {
        var keyFDs: [Int32] = []
        var usesVars = false
        func key(_ fd: Int32) -> Int {
            if let i = keyFDs.firstIndex(of: fd) { return i }
            keyFDs.append(fd)
            return keyFDs.count - 1
        }
        let vars = varsFD ?? varsPlaceholder
        func varAddr(_ n: Int) -> String {
            usesVars = true
            return "lddw %r1, map_value \(vars), \(n * 8)"
        }
        var lines: [String] = []
        var label = 0
        func emit(_ steps: [Step], name: String) throws {
            lines.append("\(name):")
            lines += ["mov %r6, %r1", "mov %r7, 0"]
            for s in steps {
                switch s {
                case let .count(c):
                    lines += ["mov %r1, \(try counterSlot(c))", "call kfunc \(KfuncID.counterAdd.rawValue)    # \(c) += 1"]
                case let .tailCall(fd, index):
                    switch index {
                    case let .constant(k):
                        lines.append("mov32 %r3, 0x\(String(UInt32(truncatingIfNeeded: k), radix: 16))")
                    case let .variable(n):
                        lines += [varAddr(n), "ldxdw %r3, [%r1+0]", "mov32 %r3, %r3"]
                    }
                    lines += ["mov %r1, %r6", "lddw %r2, map \(fd)", "call 12"]
                case let .call(n):
                    lines += ["mov %r1, %r6", "call local sub\(n)", "mov %r7, %r0"]
                case let .setVar(n, v):
                    lines += [varAddr(n), "lddw %r2, 0x\(String(v, radix: 16))", "stxdw [%r1+0], %r2"]
                case let .returnConst(v):
                    lines += ["mov32 %r0, 0x\(String(v, radix: 16))", "exit"]
                case .returnLast:
                    lines += ["mov %r0, %r7", "exit"]
                case let .returnVar(n):
                    lines += [varAddr(n), "ldxdw %r0, [%r1+0]", "mov32 %r0, %r0", "exit"]
                case .indirectCall:
                    throw fail(.EINVAL, "an indirect call through a prog array (seed 001's proposal) has no instruction in the ISA: this program cannot be compiled to bytecode")
                case let .staticBranch(fd, n):
                    label += 1
                    lines += ["ja_cfg key \(key(fd)), on\(label)", "ja after\(label)",
                              "on\(label):", "mov %r1, %r6", "call local sub\(n)", "mov %r7, %r0", "after\(label):"]
                case let .staticKeySet(fd, on):
                    lines += ["mov %r1, \(key(fd))", "mov %r2, \(on ? 1 : 0)", "call kfunc \(KfuncID.staticKeySet.rawValue)"]
                case let .storeCookie(n):
                    lines += ["mov %r1, %r6", "call 174", "mov %r2, %r0", varAddr(n), "stxdw [%r1+0], %r2"]
                case let .storeFuncRet(n):
                    lines += ["mov %r1, %r6", "mov %r2, %r10", "add %r2, -8", "call 184", "ldxdw %r2, [%r10-8]", varAddr(n), "stxdw [%r1+0], %r2"]
                }
            }
            lines += ["mov %r0, %r7", "exit"]
        }
        try emit(sp.main, name: "main")
        for (i, sub) in sp.subprogs.enumerated() { try emit(sub, name: "sub\(i)") }
        // The verifier refuses unreachable instructions: drop what follows a return.
        let (text, insns) = try pruneUnreachable(text: lines.map { $0.hasSuffix(":") ? $0 : "    " + $0 }.joined(separator: "\n") + "\n")
        return CompiledSteps(text: text, insns: insns, usesVars: usesVars, keyFDs: keyFDs)
    }

    /// Removes the lines after an `exit` (or `ja`) that no label reaches: a step list may
    /// return before its end, and the verifier refuses unreachable instructions.
    static func pruneUnreachable(text: String) throws -> (String, [BPFInsn]) {
        var out: [Substring] = []
        var dead = false
        for l in text.split(separator: "\n") {
            let t = l.trimmingCharacters()
            if t.hasSuffix(":") { dead = false; out.append(l); continue }
            if dead { continue }
            out.append(l)
            if t == "exit" || t.hasPrefix("ja ") { dead = true }
        }
        let s = out.joined(separator: "\n") + "\n"
        return (s, try Assembler.assemble(s))
    }
}

private extension Substring {
    func trimmingCharacters() -> String {
        var s = self
        while let c = s.first, c == " " { s = s.dropFirst() }
        if let h = s.firstIndex(of: "#") { s = s[..<h] }
        while let c = s.last, c == " " { s = s.dropLast() }
        return String(s)
    }
}

extension StepProgram {
    /// The instructions this step program compiles to, for a kernel without the lab's
    /// kfuncs and configurable jumps: nil when it needs them (a count step, a static branch
    /// or key flip) or has no instruction form (an indirect call). Tail-call and variable
    /// steps refer to the fds in the steps and `varsFD` (the .data map, value size 8 × vars).
    public func instructionsForKernel(varsFD: Int32?) throws -> (insns: [BPFInsn], usesVars: Bool)? {
        let all = main + subprogs.flatMap { $0 }
        for s in all {
            switch s {
            case .count, .staticBranch, .staticKeySet, .indirectCall: return nil
            default: break
            }
        }
        let c = try StepCompiler.compile(self, counterSlot: { _ in 0 }, varsFD: varsFD)
        return (c.insns, c.usesVars)
    }

    /// Whether it uses variables (the kernel backend creates its .data map first).
    public var usesVariables: Bool {
        (main + subprogs.flatMap { $0 }).contains {
            switch $0 {
            case .setVar, .returnVar, .storeCookie, .storeFuncRet, .tailCall(_, .variable), .indirectCall(_, .variable): return true
            default: return false
            }
        }
    }
}
