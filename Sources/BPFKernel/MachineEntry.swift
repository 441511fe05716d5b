// MachineEntry.swift — the patchable entry of a generated function: the 5-byte NOP at +0
// that the kernel's trampolines and extensions patch (emit_prologue's "BPF trampoline can
// be made to work without these nops"; bpf_arch_text_poke on the function's address).
//
// For a native function the lab's attach machinery (Trampoline.swift) switches the
// function's entry word (cbpf_text.func). For a generated one it does what the kernel does:
// the word (bpf_func) never changes, and the NOP at the entry is patched:
//
//   nothing attached            → the NOP
//   an extension                → `jmp ext`, straight to a generated extension's entry
//                                 (freplace: one direct jmp), or `jmp stub` for a native one
//   fentry / fexit              → `jmp` to the generated trampoline (MachineTrampoline.swift)
//
// The stub is `mov rsi, <the function's data block>; jmp <the lab's C extension entry>`, so
// that entry finds the function's header as when it is called through a word. A trampoline
// calls the function at +5, past the NOP — as the kernel's trampoline calls the original
// function past its patched entry — which is also the function's `orig` in its header.
//
// Mirrors: arch/x86/net/bpf_jit_comp.c (emit_prologue, bpf_arch_text_poke),
// kernel/bpf/trampoline.c (bpf_trampoline_update: the entry patched to the image, or to the
// extension for BPF_TRAMP_REPLACE).
import BPFMachineCode
import BPFPrograms
import CBPFShims

final class MachineEntry: @unchecked Sendable {
    let site: PatchSite
    let extStub: UInt64
    /// Pokes of the site that failed (text_poke_bp's core sync refused): the auditor's.
    private(set) var failures = 0

    /// Bytes `emitStub` writes.
    static let stubBytes = 15

    /// Emits the extension stub of a function whose data block is `data` (nil: not allocated
    /// yet — `bind` fills it in before the function can run); returns its offset.
    static func emitStub(_ b: inout X86Assembler, data: UnsafeRawPointer?) -> Int {
        let at = b.offset
        b.mov(.rsi, imm64: UInt64(UInt(bitPattern: data)))
        b.jmp(absolute: UInt64(UInt(bitPattern: unsafeBitCast(bpfp_ext_entry as cbpf_func_t, to: UnsafeRawPointer.self))))
        return at
    }

    /// The entry at `entry` (its NOP) in `block`, with its stub at `stub`.
    init(block: CodeBlock, entry: Int, stub: Int) throws {
        self.block = block
        extStub = block.address + UInt64(stub)
        site = try PatchSite(block: block, site: block.rx + entry, target: extStub)
    }
    private let block: CodeBlock

    /// Writes the function's data block into the stub's `mov rsi, imm64` — for a main
    /// function, whose data block is allocated with the program after its code. Before the
    /// program is published (nothing runs it yet).
    func bind(data: UnsafeRawPointer) throws {
        let imm = withUnsafeBytes(of: UInt64(UInt(bitPattern: data)).littleEndian) { Array($0) }
        try TextPoke.writeEarly(imm, at: block.rx + Int(extStub - block.address) + 2, in: block)  // past REX.W and B8+r
    }

    /// Where the NOP should jump for this configuration of the function's trampoline: nowhere
    /// (nothing attached), the extension (generated: its entry; native: the stub into the
    /// lab's extension entry), or the generated trampoline.
    func target(ext: BPFProg?, trampoline: CodeBlock?) -> UInt64? {
        if let ext { return ext.raw.pointee.jit_entry.map { UInt64(UInt(bitPattern: $0)) } ?? extStub }
        return trampoline?.address
    }

    /// Patches the NOP (text_poke_bp). Called under the trampoline lock.
    func point(to target: UInt64?) {
        cbpf_text_published()  // what the new target's code refers to is ready (see cbpf_records.h)
        do { try site.retarget(target) } catch { failures += 1 }
    }
}
