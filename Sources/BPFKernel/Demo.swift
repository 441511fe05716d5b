// Demo.swift — a small object graph for `bpflab prog show` and learners: the seed's pair
// (an XDP_PASS program chained to an XDP_DROP program through its XDP_PASS slot), a
// program using an array map, and a program returning an arbitrary code.
//
// Mirrors no kernel file: the objects a learner's first `bpftool prog show` would list.

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
        fds += [map, user, odd]
        let packet = [UInt8](repeating: 0, count: 64)
        for fd in [pass, user, odd] {
            _ = try bpf.progTestRun(TestRunAttr(progFD: fd, data: packet, repeat: packets))
        }
        return fds
    }
}
