// MachineStepJIT.swift — step programs as x86-64 machine code (the lab's "machine"
// engine, beside the native C step bodies): what the kernel's JIT emits for the same
// program. Generated: counters, static branches, tail calls (MachineTailCall.swift),
// constant returns and returning the last call's value.
//
// Every program gets the JIT's prologue (emit_prologue), without ENDBR (no IBT in user
// space):
//
//   +0   nop5                 the patchable entry (trampolines, freplace)
//   +5   xor eax, eax | nop2  tail_call_cnt = 0 when the program can tail-call
//   +7   push rbp
//   +8   mov rbp, rsp
//   +11  push rax             X86_TAIL_CALL_OFFSET: a tail call enters here, reusing the
//                             caller's frame with the count in eax (tail-calling programs)
//
// and returns with `leave; ret`. A static branch's site is the kernel's 5-byte NOP
// (jump_label's "nop" state), patched into a jmp to an out-of-line call of the hook when
// the key is on, by text_poke_bp; the hook subprograms are generated functions called
// directly (rel32). A count is `lock add qword [counter], 1`, as the native body's atomic.
//
// Mirrors: arch/x86/net/bpf_jit_comp.c (emit_prologue, do_jit's epilogue, emit_call),
// arch/x86/kernel/jump_label.c (__jump_label_patch: NOP ↔ jmp rel32),
// include/linux/jump_label.h (static_branch_unlikely: the hook out of line).
import BPFMachineCode
import CBPFShims

enum MachineStepJIT {
    /// X86_TAIL_CALL_OFFSET without ENDBR: nop5 + xor/nop2 + push rbp + mov rbp, rsp.
    static let tailCallOffset = 11

    /// Generates `sp`; ENOTSUPP for a step the machine engine does not generate yet.
    static func build(_ sp: StepProgram, kernel: Kernel, arrays: [Int32: ProgArray], keys: [Int32: StaticKeyMap],
                      image: ProgImage) throws -> ProgBody {
        guard let region = CodeRegion.shared else {
            throw fail(.ENOMEM, "no code memory near the lab's text: the machine engine is unavailable on this machine")
        }
        func unsupported(_ s: Step) -> BPFError {
            fail(.ENOTSUPP, "the machine engine generates counts, static branches, tail calls with a constant key, constant returns and return-last; \(s) is not generated (load it with the native engine)")
        }
        // Check everything before any code memory is taken.
        var subValues: [UInt32] = []
        for sub in sp.subprogs {
            guard sub.count == 1, case let .returnConst(v) = sub[0] else { throw unsupported(sub.first ?? .returnLast) }
            subValues.append(v)
        }
        guard let last = sp.main.last, last.isReturn else { throw fail(.EINVAL, "the main function does not end in a return") }
        var counters: [String: UInt32] = [:]
        var tailCalls = 0
        for s in sp.main.dropLast() {
            switch s {
            case let .staticBranch(fd, call):
                guard keys[fd] != nil else { throw fail(.EINVAL, "fd \(fd) is not a static-key map") }
                guard call >= 0 && call < subValues.count else { throw fail(.EINVAL, "static branch calls subprogram \(call), which does not exist") }
            case let .tailCall(fd, .constant(k)):
                guard arrays[fd] != nil else { throw fail(.EINVAL, "fd \(fd) is not a prog array") }
                guard k <= UInt64(UInt32.max) else { throw fail(.EINVAL, "tail-call key \(k) is not a u32") }
                tailCalls += 1
            case let .count(name):
                if counters[name] == nil { counters[name] = try kernel.counterIndex(name) }
            default:
                throw unsupported(s)
            }
        }
        switch last {
        case .returnConst, .returnLast: break
        default: throw unsupported(last)
        }
        let tailReachable = tailCalls > 0
        // Alignment for the hooks' calls: at entry rsp ≡ 8 (mod 16); push rbp makes it 0, the
        // tail-call count's push 8 again; the hook pushes rdi and rsi.
        let hookPad: Int32 = tailReachable ? 8 : 0

        // At most 112 bytes a step (the indirect tail call's sequence is 95, a branch site and
        // its hook 30), the prologue and return, the subprograms, the entry's stubs.
        let size = 64 + 112 * sp.main.count + 8 * subValues.count + MachineEntry.stubBytes
        guard let block = region.allocate(size) else { throw fail(.ENOMEM, "code memory is full") }
        var b = X86Assembler(origin: block.address)
        var branchSites: [(offset: Int, hook: X86Assembler.Label, back: X86Assembler.Label, call: Int, key: StaticKeyMap)] = []
        var tails: [MachineTailCall.Emitted] = []

        b.nop5()
        if tailReachable { b.xor32(.rax, .rax) } else { b.nop2() }
        b.push(.rbp)
        b.mov(.rbp, .rsp)
        precondition(b.offset == tailCallOffset)
        if tailReachable { b.push(.rax) }
        if case .returnLast = last { b.mov32(.rax, imm: 0) }  // last = 0 until a hook runs
        for s in sp.main.dropLast() {
            switch s {
            case let .staticBranch(fd, call):
                let hook = b.label(), back = b.label()
                branchSites.append((b.offset, hook, back, call, keys[fd]!))
                b.nop5()
                b.bind(back)
            case let .tailCall(fd, .constant(k)):
                let arr = arrays[fd]!
                if sp.directTailCalls {
                    tails.append(MachineTailCall.emitDirect(&b, array: arr, key: UInt32(k)))
                } else {
                    try MachineTailCall.emitIndirect(&b, array: arr, key: UInt32(k))
                }
            case let .count(name):
                let addr = UInt64(UInt(bitPattern: kernel.counters + Int(counters[name]!)))
                b.mov(.r11, imm64: addr)
                b.lock(); b.addMem64(.r11, 0, imm8: 1)
            default:
                preconditionFailure("checked above")
            }
        }
        if case let .returnConst(v) = last { b.mov32(.rax, imm: v) }
        b.leave()
        b.ret()
        // Each static branch's hook, out of line: the arguments kept, the stack aligned, a
        // direct call, a jmp back behind the site.
        var subLabels = subValues.map { _ in b.label() }
        for s in branchSites {
            b.bind(s.hook)
            b.push(.rdi); b.push(.rsi)
            if hookPad != 0 { b.sub(.rsp, imm: hookPad) }
            b.call(subLabels[s.call])
            if hookPad != 0 { b.add(.rsp, imm: hookPad) }
            b.pop(.rsi); b.pop(.rdi)
            b.jmp(s.back)
        }
        for (i, v) in subValues.enumerated() {
            while b.offset % 8 != 0 { b.int3() }
            b.bind(subLabels[i])
            b.mov32(.rax, imm: v)
            b.ret()
        }
        subLabels.removeAll()
        let stub = MachineEntry.emitStub(&b, data: nil)  // bound to the data block once it exists
        do {
            try CodeRegion.install(b, in: block)
            var patchSites: [(PatchSite, StaticKeyMap)] = []
            for s in branchSites {
                let hook = block.address + UInt64(b.offset(of: s.hook)!)
                patchSites.append((try PatchSite(block: block, site: block.rx + s.offset, target: hook), s.key))
            }
            image.machinePokes = try tails.map { (try MachineTailPoke(block: block, emitted: $0, assembler: b), $0.array) }
            image.machineEntries[0] = try MachineEntry(block: block, entry: 0, stub: stub)
            image.machineCode = block
            image.patchSites = patchSites
        } catch {
            region.free(block)
            image.machinePokes = []
            image.machineEntries = [:]
            throw fail(.ENOMEM, "cannot install generated code: \(error)")
        }
        return MachineStepJIT.body(block)
    }

    /// The body of generated code in `block`: its entry, the patchable NOP (MachineEntry.swift).
    static func body(_ block: CodeBlock) -> ProgBody {
        ProgBody(symbol: "bpflab_machine_code", fn: unsafeBitCast(block.rx, to: cbpf_func_t.self))
    }
}
