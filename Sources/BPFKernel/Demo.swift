// Demo.swift — a small object graph for `bpflab prog show` and learners: the seed's pair
// (an XDP_PASS program chained to an XDP_DROP program through its XDP_PASS slot), a
// program using an array map, a bytecode program counting packets into that map (run by
// the interpreter: `bpflab prog dump xlated xdp_count` shows its instructions), and a
// program returning an arbitrary code.
//
// Mirrors no kernel file: the objects a learner's first `bpftool prog show` would list.

import BPFInstructions

public enum Demo {
    /// Loads the demo programs into `bpf` and runs `packets` test packets through each
    /// with stats enabled. Returns the fds it opened.
    @discardableResult
    public static func load(into bpf: BPF, packets: UInt32) throws -> [Int32] {
        var fds: [Int32] = []
        let stats = try bpf.enableStats()
        defer { try? bpf.objClose(stats) }
        let pass = try bpf.progLoad(ProgLoadAttr(body: .xdpPass, name: "xdp_pass", flags: .chainCalls))
        let drop = try bpf.progLoad(ProgLoadAttr(body: .xdpDrop, name: "xdp_drop", flags: .chainCalls))
        fds += [pass, drop]
        try bpf.progChainAdd(prev: pass, retcode: 2, next: drop)  // XDP_PASS → drop
        let map = try bpf.mapCreate(MapCreateAttr(type: .array, valueSize: 8, maxEntries: 16, name: "counters"))
        let user = try bpf.progLoad(ProgLoadAttr(body: .xdpTx, name: "xdp_tx_map", mapFDs: [map]))
        let odd = try bpf.progLoad(.returning(42, name: "ret42", type: .schedCls))
        // counters[0] += 1; return XDP_PASS — as bytecode.
        let count = try bpf.progLoad(ProgLoadAttr(insns: try Assembler.assemble("""
            stw [%r10-4], 0
            lddw %r1, map \(map)
            mov %r2, %r10
            add %r2, -4
            call 1
            jeq %r0, 0, out
            mov %r1, 1
            lock add [%r0+0], %r1
            out:
            mov %r0, 2
            exit
            """), name: "xdp_count"))
        fds += [map, user, odd, count]
        let packet = [UInt8](repeating: 0, count: 64)
        for fd in [pass, user, odd, count] {
            _ = try bpf.progTestRun(TestRunAttr(progFD: fd, data: packet, repeat: packets))
        }
        return fds
    }
}
