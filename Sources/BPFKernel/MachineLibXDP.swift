// MachineLibXDP.swift — libxdp's dispatcher program generated as x86-64, as the kernel's
// JIT turns xdp-dispatcher.c into machine code: the main function calls each enabled slot
// directly (a BPF-to-BPF call is a `call rel32`), tests the slot's value against its
// chain-call mask, and returns it or goes on; each slot prog0 … prog9 is a placeholder
// function with the JIT's prologue returning XDP_DISPATCHER_RETVAL. freplace patches the
// placeholder's 5-byte NOP into a `jmp` to the extension (MachineEntry.swift), so an
// extension costs one direct call and one direct jump — the kernel's mechanism.
//
//   main: nop5; nop2; push rbp; mov rbp, rsp
//         push rbx; sub rsp, 8; mov rbx, rdi          ; ctx in a callee-saved register (r6)
//         mov rdi, rbx; call prog0                      ; for each enabled slot i:
//         cmp eax, 31; ja out                           ;   a value without a bit: return it
//         mov edx, chain_call_actions[i]; bt edx, eax; jnc out
//         ...
//         mov eax, XDP_PASS
//   out:  mov rbx, [rbp-8]; leave; ret
//   progN: nop5; nop2; push rbp; mov rbp, rsp; mov eax, 31; leave; ret
//
// The configuration is the program's data (libxdp's .rodata, frozen before load): the
// verifier knows num_progs_enabled, so the loop is unrolled to the enabled slots; the masks
// are folded into immediates here (the kernel's code loads each from the read-only map
// value — one L1 hit per slot).
//
// Mirrors: xdp-tools lib/libxdp/xdp-dispatcher.c, arch/x86/net/bpf_jit_comp.c (emit_call
// for BPF_PSEUDO_CALL, emit_prologue).
import BPFMachineCode
import BPFPrograms
import CBPFShims

enum MachineLibXDP {
    /// Generates the dispatcher for `config` (a bpfp_xdp_dispatcher_config) with its slot
    /// functions; fills the slots table in `data` and the image's functions and entries.
    static func build(data: inout [UInt8], functions: [ProgFunction], tableOffset: Int, image: ProgImage) throws -> ProgBody {
        guard let region = CodeRegion.shared else {
            throw fail(.ENOMEM, "no code memory near the lab's text: the machine engine is unavailable on this machine")
        }
        guard data.count >= MemoryLayout<bpfp_xdp_dispatcher_config>.size else {
            throw fail(.EINVAL, "the dispatcher's configuration is \(data.count) bytes; it needs \(MemoryLayout<bpfp_xdp_dispatcher_config>.size)")
        }
        var cfg = bpfp_xdp_dispatcher_config()
        withUnsafeMutableBytes(of: &cfg) { dst in data.withUnsafeBytes { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<dst.count])) } }
        let slots = Int(BPFP_XDP_DISPATCHER_SLOTS)
        guard functions.count == slots else { throw fail(.EINVAL, "libxdp's dispatcher has \(slots) slot functions; \(functions.count) were given") }
        let enabled = min(Int(cfg.num_progs_enabled), slots)
        let masks: [UInt32] = withUnsafeBytes(of: cfg.chain_call_actions) { Array($0.bindMemory(to: UInt32.self)) }

        // The slot functions' texts first: their stubs need the data blocks.
        let texts = functions.map { image.allocFunction(body: bpfp_xdp_dispatcher_stub, data: $0.data) }

        let slotBytes = 32 + MachineEntry.stubBytes
        let size = 64 + 40 * enabled + 32 + MachineEntry.stubBytes + slots * (slotBytes + 16)
        guard let block = region.allocate(size) else { throw fail(.ENOMEM, "code memory is full") }
        var b = X86Assembler(origin: block.address)
        let slotLabels = (0..<slots).map { _ in b.label() }
        let out = b.label()
        b.nop5(); b.nop2(); b.push(.rbp); b.mov(.rbp, .rsp)
        b.push(.rbx); b.sub(.rsp, imm: 8); b.mov(.rbx, .rdi)
        for i in 0..<enabled {
            b.mov(.rdi, .rbx)
            b.call(slotLabels[i])
            b.cmp32(.rax, imm: 31)
            b.j(.a, out)
            b.mov32(.rdx, imm: masks[i])
            b.bt32(.rdx, .rax)
            b.j(.ae, out)      // CF clear: the bit is not in the mask
        }
        b.mov32(.rax, imm: UInt32(CBPF_XDP_PASS))
        b.bind(out)
        b.load(.rbx, .rbp, -8)
        b.leave(); b.ret()
        let mainStub = MachineEntry.emitStub(&b, data: nil)
        var slotAt: [Int] = [], slotStubs: [Int] = []
        for i in 0..<slots {
            while b.offset % 16 != 0 { b.int3() }
            b.bind(slotLabels[i])
            slotAt.append(b.offset)
            b.nop5(); b.nop2(); b.push(.rbp); b.mov(.rbp, .rsp)
            b.mov32(.rax, imm: UInt32(BPFP_XDP_DISPATCHER_RETVAL))
            b.leave(); b.ret()
            slotStubs.append(MachineEntry.emitStub(&b, data: texts[i].pointee.data))
        }
        do {
            try CodeRegion.install(b, in: block)
            image.machineEntries[0] = try MachineEntry(block: block, entry: 0, stub: mainStub)
            for i in 0..<slots {
                image.machineEntries[1 + i] = try MachineEntry(block: block, entry: slotAt[i], stub: slotStubs[i])
            }
        } catch {
            region.free(block)
            image.machineEntries = [:]
            throw fail(.ENOMEM, "cannot install the generated dispatcher: \(error)")
        }
        image.machineCode = block
        // Each slot's entry word is its entry (the NOP), its orig past the NOP; the table the
        // native body would read points at the texts, as for the native dispatcher.
        for (i, t) in texts.enumerated() {
            t.pointee.func = unsafeBitCast(block.rx + slotAt[i], to: cbpf_func_t.self)
            cbpf_text_hdr_of(t.pointee.data).pointee.orig = unsafeBitCast(block.rx + slotAt[i] + 5, to: cbpf_func_t.self)
            image.functions.append((functions[i].name, t))
            withUnsafeBytes(of: UInt(bitPattern: t)) { data.replaceSubrange(tableOffset + 8 * i ..< tableOffset + 8 * (i + 1), with: $0) }
        }
        return MachineStepJIT.body(block)
    }
}
