// ChainCallDesigns.swift — the 2019 RFC's chain calls: return-code-keyed slots in the
// program's aux, followed by the loop in BPF_PROG_RUN (up to 32 programs).
// Mirrors: the RFC v3's do_chain_calls and BPF_PROG_CHAIN_ADD (seeds/001).
import BPFKernel

extension DesignID {
    public static let chainUnused = DesignID("chain-unused")
    public static let chainPass = DesignID("chain-pass")
    public static let chainWildcard = DesignID("chain-wildcard")
}

enum ChainCallDesigns {
    static let length = DesignParameter("programs in the chain", range: 1...Int(CBPF_MAX_CHAIN_CALLS), default: 2)

    /// n − 1 PASS programs, each chained to the next by `retcode`, then the DROP program;
    /// all loaded with BPF_F_CHAIN_CALLS. The root is the first.
    static func chain(_ c: DesignContext, retcode: UInt32) throws -> DesignSetup {
        var fds = [try c.loadDrop(flags: .chainCalls)]
        for _ in 1..<max(1, c.n) {
            let p = try c.load(ProgLoadAttr(body: .xdpPass, name: "xdp_pass", flags: .chainCalls))
            try c.bpf.progChainAdd(prev: p, retcode: retcode, next: fds.last!)
            fds.append(p)
        }
        let root = fds.last!
        return DesignSetup(id: c.id, root: root, fds: fds.reversed(), chainPrev: root)
    }

    static let all: [Design] = [
        Design("chain-unused", title: "Chain flag set, no slots (DROP)",
               summary: "the DROP program loaded with BPF_F_CHAIN_CALLS and no slots filled: the chain loop runs and finds nothing",
               family: .chainCalls, groups: [.seed]) { c in
            let d = try c.loadDrop(flags: .chainCalls)
            return DesignSetup(id: c.id, root: d, fds: [d], chainPrev: d)
        },
        Design("chain-pass", title: "XDP chain call (XDP_PASS return)",
               summary: "PASS program whose XDP_PASS chain slot holds the DROP program (N: programs in the chain, the last one DROP)",
               family: .chainCalls, groups: [.seed], parameter: length) { c in
            try chain(c, retcode: verdictPass)
        },
        Design("chain-wildcard", title: "XDP chain call (wildcard return)",
               summary: "PASS program whose wildcard slot holds the DROP program (N: programs in the chain)",
               family: .chainCalls, groups: [.seed], parameter: length) { c in
            try chain(c, retcode: chainWildcard)
        },
    ]
}

import CBPFShims
