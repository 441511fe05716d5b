// MachineTailCall.swift — bpf_tail_call in the machine engine, as the x86 JIT emits it for
// this kernel: the indirect sequence (emit_bpf_tail_call_indirect) and the direct one of a
// constant key (emit_bpf_tail_call_direct) with its poke descriptor, re-pointed by
// text_poke_bp whenever the slot changes (prog_array_map_poke_run).
//
// Indirect, with the key in edx and the array in rsi as the BPF registers r3 and r2 have
// them:                                     Direct:
//   mov edx, edx                              bypass: jmp out       (nop5 once the slot
//   cmp dword [rsi + max_entries], edx                               holds a program)
//   jbe out                                   mov rax, [rbp-8]      ; tail_call_cnt
//   mov rcx, [rsi + rdx*8 + ptrs]             cmp rax, 33
//   test rcx, rcx                             jae out
//   je out                                    add rax, 1
//   mov rax, [rbp-8]     ; tail_call_cnt      mov [rbp-8], rax
//   cmp rax, 33                               pop rax
//   jae out                                   target: nop5          (jmp target+11)
//   add rax, 1                                push rax
//   mov [rbp-8], rax                        out:
//   pop rax
//   mov rcx, [rcx + jit_entry]
//   add rcx, 11
//   jmp *rcx             ; the retpoline thunk when retpolines are on
// out:
//
// An empty slot is not counted in either (the NULL check, or the bypass, comes before the
// increment: KERNEL_RULES.md, checked on this machine's kernel). The count lives in the
// frame at [rbp-8]; `pop rax` leaves rsp at rbp, so the target's `push rax` at
// X86_TAIL_CALL_OFFSET puts it back in the same place. The kernel's poke order (insert:
// target first, then the bypass becomes a NOP; delete: the bypass first, a grace period,
// then the target) keeps the path behind the target site unreachable; the lab's `push rax`
// there keeps the frame whole even so.
//
// The jump goes to the target's generated entry (cbpf_prog.jit_entry) plus 11 — what the
// kernel's bpf_func is — never through the lab's pokeable entry word, so a trampoline on
// the target does not run for a tail call, as in the kernel.
//
// Mirrors: arch/x86/net/bpf_jit_comp.c (emit_bpf_tail_call_indirect,
// emit_bpf_tail_call_direct, bpf_tail_call_direct_fixup), kernel/bpf/arraymap.c
// (prog_array_map_poke_run), include/linux/bpf.h (struct bpf_jit_poke_descriptor).
import BPFMachineCode
import CBPFShims

enum MachineTailCall {
    /// What emitDirect leaves for the poke descriptor: its two sites and the array slot.
    struct Emitted {
        let array: ProgArray
        let key: UInt32
        let bypass: Int                 // offset of the bypass jmp
        let target: Int                 // offset of the target site
        let out: X86Assembler.Label     // where the bypass jumps
    }

    static let countSlot: Int32 = -8
    static var maxEntriesOffset: Int32 { Int32(MemoryLayout<cbpf_array>.offset(of: \cbpf_array.max_entries)!) }
    static var ptrsOffset: Int32 { Int32(MemoryLayout<cbpf_array>.size) }  // the flexible array after the header
    static var jitEntryOffset: Int32 { Int32(MemoryLayout<cbpf_prog>.offset(of: \cbpf_prog.jit_entry)!) }

    /// tail_call_cnt: if (cnt >= MAX_TAIL_CALL_CNT) goto out; cnt++.
    private static func count(_ b: inout X86Assembler, out: X86Assembler.Label) {
        b.load(.rax, .rbp, countSlot)
        b.cmp(.rax, imm: Int32(CBPF_MAX_TAIL_CALL_CNT))
        b.j(.ae, out)
        b.add(.rax, imm: 1)
        b.store(.rbp, countSlot, .rax)
    }

    static func emitDirect(_ b: inout X86Assembler, array: ProgArray, key: UInt32) -> Emitted {
        let out = b.label()
        let bypass = b.offset
        b.jmp(out)                      // 5 bytes: the empty slot's path, until poked
        count(&b, out: out)
        b.pop(.rax)
        let target = b.offset
        b.nop5()
        b.push(.rax)
        b.bind(out)
        return Emitted(array: array, key: key, bypass: bypass, target: target, out: out)
    }

    static func emitIndirect(_ b: inout X86Assembler, array: ProgArray, key: UInt32) throws {
        let out = b.label()
        b.mov(.rsi, imm64: UInt64(UInt(bitPattern: array.array)))
        b.mov32(.rdx, imm: key)
        b.mov32(.rdx, .rdx)
        b.cmpMem32(.rsi, maxEntriesOffset, .rdx)
        b.j(.be, out)
        b.loadIndexed(.rcx, .rsi, .rdx, ptrsOffset)
        b.test(.rcx, .rcx)
        b.j(.e, out)
        count(&b, out: out)
        b.pop(.rax)
        b.load(.rcx, .rcx, jitEntryOffset)
        b.add(.rcx, imm: Int32(MachineStepJIT.tailCallOffset))
        try Retpoline.jmp(.rcx, &b, retpolines: Retpoline.mode.enabled)
        b.bind(out)
    }
}

/// struct bpf_jit_poke_descriptor for a generated direct tail call: the bypass jmp and the
/// target site, both 5 bytes, patched live.
final class MachineTailPoke: @unchecked Sendable {
    let key: UInt32
    let bypass: PatchSite     // jmp out (empty slot) ↔ NOP
    let target: PatchSite     // NOP ↔ jmp target + X86_TAIL_CALL_OFFSET

    init(block: CodeBlock, emitted e: MachineTailCall.Emitted, assembler b: X86Assembler) throws {
        key = e.key
        let out = block.address + UInt64(b.offset(of: e.out)!)
        bypass = try PatchSite(block: block, site: block.rx + e.bypass, target: out)
        try bypass.setEarly(jump: true)   // as emitted: the jmp is already there
        target = try PatchSite(block: block, site: block.rx + e.target, target: out)
    }

    /// Where a tail call into `p` jumps: past its generated prologue.
    static func entry(of p: UnsafeMutablePointer<cbpf_prog>) -> UInt64? {
        guard let e = p.pointee.jit_entry else { return nil }
        return UInt64(UInt(bitPattern: e)) + UInt64(MachineStepJIT.tailCallOffset)
    }

    /// Insert or replace: the target first, then the bypass becomes the NOP.
    func set(_ p: UnsafeMutablePointer<cbpf_prog>) throws {
        guard let to = MachineTailPoke.entry(of: p) else { return }  // the owner rule keeps other engines out
        cbpf_text_published()
        try target.retarget(to)
        try bypass.set(jump: false)
    }

    /// Delete, first half: the bypass jumps again (nothing new reaches the target site).
    func restoreBypass() throws { try bypass.set(jump: true) }

    /// Delete, second half (after a grace period): the target site back to the NOP.
    func clearTarget() throws { try target.retarget(nil) }
}
