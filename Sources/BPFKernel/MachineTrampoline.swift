// MachineTrampoline.swift — the BPF trampoline generated as x86-64, for a generated
// function (arch_prepare_bpf_trampoline): the function's entry NOP is patched into a jmp
// here, and this code runs the fentry programs, the function itself past its NOP, then the
// fexit programs with the value — every call direct (rel32): the guard helpers, each
// generated program, the original function. Then it returns to the function's caller.
// (fmod_ret attaches only to the lab's kernel functions, which are C, so a generated
// trampoline never has one; invoke_bpf_mod_ret is not generated.)
//
//   push rbp; mov rbp, rsp; push rbx; push r12; push r13; push r14; push r15; sub rsp, 24
//   mov rbx, rdi (ctx); mov r12, rsi
//   for each program:                                   ; invoke_bpf_prog
//     mov rdi, prog; mov rsi, rbx; mov rdx, cookie; mov rcx, rsp (the run context)
//     call bpfp_tramp_prog_enter                        ; __bpf_prog_enter_recur
//     test rax, rax; je skip
//     mov r14, rax; mov rdi, rbx; mov rsi, prog->insnsi
//     call prog                                         ; its generated entry
//     mov r15d, eax
//     mov rdi, prog; mov rsi, rbx; mov rdx, r14; mov rcx, rsp
//     call bpfp_tramp_prog_exit                         ; __bpf_prog_exit_recur
//   mov rdi, rbx; mov rsi, data; call function+5; mov r13d, eax
//   ctx->func_ret saved, set to r13; the fexit programs; restored
//   mov eax, r13d; add rsp, 24; pop …; pop rbp; ret
//
// What the lab models rather than reproduces: the guard and the run context live in the
// helpers (C, called directly as the kernel calls __bpf_prog_enter_recur), and the guard is a
// locked add on this CPU's slot, not the kernel's this_cpu_inc: a lab thread that is not a
// pinned worker may share its CPU slot with another. The function's arguments are the
// context and its data block (a lab function has those two), not saved BTF-described
// registers. A native (C) program attached here is called through its entry word.
//
// Mirrors: arch/x86/net/bpf_jit_comp.c (arch_prepare_bpf_trampoline, invoke_bpf_prog),
// kernel/bpf/trampoline.c (__bpf_prog_enter_recur / _exit_recur).
import BPFMachineCode
import BPFPrograms
import CBPFShims

enum MachineTrampoline {
    struct Item {
        let prog: BPFProg
        let cookie: UInt64
    }

    private static func address(_ f: cbpf_func_t) -> UInt64 { UInt64(UInt(bitPattern: unsafeBitCast(f, to: UnsafeRawPointer.self))) }
    private static let enter = UInt64(UInt(bitPattern: unsafeBitCast(
        bpfp_tramp_prog_enter as @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, UInt64, UnsafeMutablePointer<bpfp_tramp_run_ctx>?) -> UInt64,
        to: UnsafeRawPointer.self)))
    private static let exit = UInt64(UInt(bitPattern: unsafeBitCast(
        bpfp_tramp_prog_exit as @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, UInt64, UnsafePointer<bpfp_tramp_run_ctx>?) -> Void,
        to: UnsafeRawPointer.self)))
    static var funcRetOffset: Int32 { Int32(MemoryLayout<cbpf_xdp_md>.offset(of: \cbpf_xdp_md.func_ret)!) }

    /// Generates the trampoline of a function whose body (past its NOP) is `function` and
    /// whose data block is `data`.
    static func build(fentry: [Item], fexit: [Item], function: UInt64, data: UnsafeRawPointer?) throws -> CodeBlock {
        guard let region = CodeRegion.shared else {
            throw fail(.ENOMEM, "no code memory near the lab's text: the machine engine is unavailable on this machine")
        }
        let n = fentry.count + fexit.count
        guard let block = region.allocate(96 + 128 * n) else { throw fail(.ENOMEM, "code memory is full") }
        var b = X86Assembler(origin: block.address)
        b.push(.rbp); b.mov(.rbp, .rsp)
        for r in [Reg64.rbx, .r12, .r13, .r14, .r15] { b.push(r) }
        b.sub(.rsp, imm: 24)
        b.mov(.rbx, .rdi); b.mov(.r12, .rsi)

        /// invoke_bpf_prog: the program's value in r15d (0 when the guard skipped it).
        func invoke(_ it: Item) {
            let p = it.prog.raw, skip = b.label(), done = b.label()
            let praw = UInt64(UInt(bitPattern: p))
            b.mov(.rdi, imm64: praw); b.mov(.rsi, .rbx); b.mov(.rdx, imm64: it.cookie); b.mov(.rcx, .rsp)
            b.call(absolute: enter)
            b.test(.rax, .rax)
            b.j(.e, skip)
            b.mov(.r14, .rax)
            b.mov(.rdi, .rbx); b.mov(.rsi, imm64: UInt64(UInt(bitPattern: p.pointee.insnsi)))
            if let e = p.pointee.jit_entry {
                b.call(absolute: UInt64(UInt(bitPattern: e)))   // a generated program: direct
            } else {
                b.mov(.rax, imm64: praw); b.load(.rax, .rax, 0)  // a native one, through its entry word
                b.call(.rax)
            }
            b.mov32(.r15, .rax)
            b.mov(.rdi, imm64: praw); b.mov(.rsi, .rbx); b.mov(.rdx, .r14); b.mov(.rcx, .rsp)
            b.call(absolute: exit)
            b.jmp(done)
            b.bind(skip)
            b.mov(.rdi, imm64: praw); b.mov(.rsi, .rbx); b.xor32(.rdx, .rdx); b.mov(.rcx, .rsp)
            b.call(absolute: exit)
            b.xor32(.r15, .r15)
            b.bind(done)
        }

        for it in fentry { invoke(it) }
        b.mov(.rdi, .rbx); b.mov(.rsi, imm64: UInt64(UInt(bitPattern: data)))
        b.call(absolute: function)
        b.mov32(.r13, .rax)
        if !fexit.isEmpty {
            b.load(.r12, .rbx, funcRetOffset)          // the caller's func_ret, kept
            b.store(.rbx, funcRetOffset, .r13)         // r13 is the zero-extended value
            for it in fexit { invoke(it) }
            b.store(.rbx, funcRetOffset, .r12)
        }
        b.mov32(.rax, .r13)
        b.add(.rsp, imm: 24)
        for r in [Reg64.r15, .r14, .r13, .r12, .rbx] { b.pop(r) }
        b.pop(.rbp)
        b.ret()
        do {
            try CodeRegion.install(b, in: block)
        } catch {
            region.free(block)
            throw fail(.ENOMEM, "cannot generate the trampoline: \(error)")
        }
        return block
    }
}
