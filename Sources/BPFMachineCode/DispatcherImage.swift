// DispatcherImage.swift — the bpf_dispatcher's image as the kernel generates it
// (arch/x86/net/bpf_jit_comp.c arch_prepare_bpf_dispatcher / emit_bpf_dispatcher): a
// binary tree of compares against the known targets, each leaf a direct jump into its
// program, and the fallback an indirect jump (retpolined when retpolines are on) — the
// saving the dispatcher exists for: a known program is reached without an indirect branch.
//
// Entered as image(ctx, insnsi, bpf_func) (rdi, rsi, rdx). The kernel compares bpf_func, the
// JIT image's address, unique per program; the lab's programs share C bodies, so the tree
// compares insnsi (each program's own data block) and a leaf checks that bpf_func is still
// the body it jumps to (a trampoline may have been poked into the program's entry since:
// then the fallback runs whatever is there). Register compares only: no load on a hit.
public enum DispatcherImage {
    public struct Target: Sendable {
        public let key: UInt64   // the program's insnsi
        public let function: UInt64  // its bpf_func when the image was built
        public init(key: UInt64, function: UInt64) {
            self.key = key
            self.function = function
        }
    }

    /// Builds the image for `targets` into a new block of `region`.
    public static func build(_ targets: [Target], retpolines: Bool, region: CodeRegion) throws -> CodeBlock {
        let sorted = targets.sorted { $0.key < $1.key }
        let size = 64 + 64 * sorted.count
        guard let block = region.allocate(size) else { throw MachineCodeError(errno: 12, message: "code memory is full") }
        do {
            var a = X86Assembler(origin: block.address)
            let miss = a.label()
            var leaves: [(X86Assembler.Label, Target)] = []
            // The tree over sorted[lo..<hi].
            func node(_ lo: Int, _ hi: Int) {
                if hi - lo <= 3 {
                    for t in sorted[lo..<hi] {
                        let leaf = a.label()
                        a.mov(.rax, imm64: t.key)
                        a.cmp(.rsi, .rax)
                        a.j(.e, leaf)
                        leaves.append((leaf, t))
                    }
                    a.jmp(miss)
                    return
                }
                let mid = (lo + hi) / 2
                let right = a.label()
                a.mov(.rax, imm64: sorted[mid].key)
                a.cmp(.rsi, .rax)
                a.j(.ae, right)       // unsigned: keys are addresses
                node(lo, mid)
                a.bind(right)
                node(mid, hi)
            }
            if sorted.isEmpty { a.jmp(miss) } else { node(0, sorted.count) }
            for (leaf, t) in leaves {
                a.bind(leaf)
                a.mov(.rax, imm64: t.function)
                a.cmp(.rdx, .rax)
                a.j(.ne, miss)        // the program's entry changed: take the fallback
                a.jmp(absolute: t.function)
            }
            a.bind(miss)
            try Retpoline.jmp(.rdx, &a, retpolines: retpolines)
            try CodeRegion.install(a, in: block)
            return block
        } catch {
            region.free(block)
            throw error
        }
    }
}
