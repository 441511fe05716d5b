// MachineStepJIT.swift — step programs as x86-64 machine code (the lab's "machine"
// engine, beside the native C step bodies): what the kernel's JIT emits for the same
// program. So far: static branches, constant returns and returning the last call's value, which is what a static key's
// cost is about — each branch site is the kernel's 5-byte NOP (jump_label's "nop" state),
// patched into a jmp to an out-of-line call of the hook when the key is on, by
// text_poke_bp; the hook subprograms are generated functions called directly (rel32).
//
// Mirrors: arch/x86/net/bpf_jit_comp.c (do_jit: the prologue-less leaf, mov eax, imm;
// ret; emit_call), arch/x86/kernel/jump_label.c (__jump_label_patch: NOP ↔ jmp rel32),
// include/linux/jump_label.h (static_branch_unlikely: the hook out of line).
import BPFMachineCode
import CBPFShims

enum MachineStepJIT {
    /// Generates `sp`; ENOTSUPP for a step the machine engine does not generate yet.
    static func build(_ sp: StepProgram, keys: [Int32: StaticKeyMap], image: ProgImage) throws -> ProgBody {
        guard let region = CodeRegion.shared else {
            throw fail(.ENOMEM, "no code memory near the lab's text: the machine engine is unavailable on this machine")
        }
        func unsupported(_ s: Step) -> BPFError {
            fail(.ENOTSUPP, "the machine engine generates static branches, constant returns and return-last so far; \(s) is not generated yet (load it with the native engine)")
        }
        // The return: a constant, or the last call's value (0 if no hook ran), as the step
        // engines keep `last`.
        enum Return { case constant(UInt32), last }
        var returns: Return?
        var sites: [(keyFD: Int32, call: Int)] = []
        for s in sp.main {
            switch s {
            case let .staticBranch(keyFD, call) where returns == nil: sites.append((keyFD, call))
            case let .returnConst(v) where returns == nil: returns = .constant(v)
            case .returnLast where returns == nil: returns = .last
            default: throw unsupported(s)
            }
        }
        guard let ret = returns else { throw fail(.EINVAL, "the main function does not end in a return") }
        var subValues: [UInt32] = []
        for sub in sp.subprogs {
            guard sub.count == 1, case let .returnConst(v) = sub[0] else { throw unsupported(sub.first ?? .returnLast) }
            subValues.append(v)
        }
        for (fd, call) in sites {
            guard keys[fd] != nil else { throw fail(.EINVAL, "fd \(fd) is not a static-key map") }
            guard call >= 0 && call < subValues.count else { throw fail(.EINVAL, "static branch calls subprogram \(call), which does not exist") }
        }

        // Layout: the sites (NOPs) in a straight line, the return; then each site's hook
        // call out of line (arguments kept, stack aligned, a direct call, a jmp back); then
        // the subprograms (mov eax, imm; ret).
        let hookBytes = 1 + 1 + 7 + 5 + 7 + 1 + 1 + 5  // push, push, sub rsp, call, add rsp, pop, pop, jmp
        let size = 5 + 5 * sites.count + 6 + hookBytes * sites.count + 8 * subValues.count
        guard let block = region.allocate(size) else { throw fail(.ENOMEM, "code memory is full") }
        var b = X86Assembler(origin: block.address)
        var siteOffsets: [Int] = [], backAddr: [UInt64] = []
        if case .last = ret { b.mov32(.rax, imm: 0) }  // last = 0 until a hook runs
        for _ in sites {
            siteOffsets.append(b.offset)
            b.nop5()
            backAddr.append(b.address)
        }
        if case let .constant(v) = ret { b.mov32(.rax, imm: v) }
        b.ret()
        let subsStart = b.address + UInt64(hookBytes * sites.count)
        let subAddr = subValues.indices.map { subsStart + UInt64(8 * $0) }
        var hookAddr: [UInt64] = []
        for (i, s) in sites.enumerated() {
            hookAddr.append(b.address)
            b.push(.rdi); b.push(.rsi); b.sub(.rsp, imm: 8)
            b.call(absolute: subAddr[s.call])
            b.add(.rsp, imm: 8); b.pop(.rsi); b.pop(.rdi)
            b.jmp(absolute: backAddr[i])
        }
        precondition(b.address == subsStart, "the hook's size is not what the layout assumed")
        for v in subValues {
            let start = b.offset
            b.mov32(.rax, imm: v)
            b.ret()
            while b.offset - start < 8 { b.int3() }
        }
        let code = try b.finish()
        precondition(code.count <= block.size)
        do {
            try CodeRegion.install(code, in: block)
            var patchSites: [(PatchSite, StaticKeyMap)] = []
            for (i, s) in sites.enumerated() {
                let ps = try PatchSite(block: block, site: block.rx + siteOffsets[i], target: hookAddr[i])
                patchSites.append((ps, keys[s.keyFD]!))
            }
            image.machineCode = block
            image.patchSites = patchSites
        } catch {
            region.free(block)
            throw fail(.ENOMEM, "cannot install generated code: \(error)")
        }
        return ProgBody(symbol: "bpflab_machine_code", fn: unsafeBitCast(block.rx, to: cbpf_func_t.self))
    }
}
