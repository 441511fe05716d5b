// Designs.swift — the ways of running "the next program" the harness compares, each set
// up through the facade exactly as a user would, with the seed's pair of programs: one
// that returns XDP_PASS followed by one that returns XDP_DROP (the baseline is the DROP
// program alone). Every design must drop every packet: the harness checks that before it
// measures anything.
import BPFKernel

public enum DesignID: String, CaseIterable, Sendable, Codable {
    case beforePatch = "before-patch"
    case baseline
    case chainUnused = "chain-unused"
    case chainPass = "chain-pass"
    case chainWildcard = "chain-wildcard"
    case tailJIT = "tail-jit"
    case tailInterp = "tail-interp"
    case tailDirect = "tail-direct"

    /// The row name in the seed-shaped table.
    public var title: String {
        switch self {
        case .beforePatch: return "Before patch (XDP DROP program)"
        case .baseline: return "After patch (XDP DROP program)"
        case .chainUnused: return "Chain flag set, no slots (DROP)"
        case .chainPass: return "XDP chain call (XDP_PASS return)"
        case .chainWildcard: return "XDP chain call (wildcard return)"
        case .tailJIT: return "Tail call, JIT style"
        case .tailInterp: return "Tail call, interpreter style"
        case .tailDirect: return "Tail call, direct (patched)"
        }
    }

    /// What runs per packet (for `bpflab bench --list`).
    public var summary: String {
        switch self {
        case .beforePatch: return "the DROP program run by BPF_PROG_RUN without the RFC's chain_calls test"
        case .baseline: return "the DROP program run by BPF_PROG_RUN with the chain_calls test (the reference for overheads, as in the seed)"
        case .chainUnused: return "the DROP program loaded with BPF_F_CHAIN_CALLS and no slots filled: the chain loop runs and finds nothing"
        case .chainPass: return "PASS program whose XDP_PASS chain slot holds the DROP program"
        case .chainWildcard: return "PASS program whose wildcard slot holds the DROP program"
        case .tailJIT: return "program tail-calling the DROP program through a prog array (bounds, count, load, NULL check, jump)"
        case .tailInterp: return "the same, interpreted: the interpreter switches to the target's steps in its loop"
        case .tailDirect: return "the same with a constant key: a patched direct jump, re-pointed on update"
        }
    }

    public static let seedSuite: [DesignID] = allCases

    /// Whether the driver runs this design with the pre-RFC BPF_PROG_RUN.
    public var beforePatch: Bool { self == .beforePatch }

    public static func parseList(_ s: String) throws -> [DesignID] {
        if s == "all" || s == "seed" { return seedSuite }
        var out: [DesignID] = []
        for part in s.split(separator: ",") {
            guard let d = DesignID(rawValue: String(part)) else {
                throw HarnessError("unknown design '\(part)'; known: \(allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if !out.contains(d) { out.append(d) }
        }
        if out.isEmpty { throw HarnessError("--designs is empty") }
        if !out.contains(.baseline) { out.insert(.baseline, at: out.first == .beforePatch ? 1 : 0) }
        return out
    }
}

/// A design's objects: the program to attach, every fd it opened, and what churn may touch.
public struct DesignSetup: Sendable {
    public let id: DesignID
    public let root: Int32
    public let fds: [Int32]
    /// A chain-enabled program whose unused XDP_TX slot churn may fill and empty.
    public let chainPrev: Int32?
    /// A prog array (with a spare slot 1) that churn may update.
    public let progArray: Int32?

    /// Loads the design's programs through `bpf`.
    public static func make(_ id: DesignID, bpf: BPF) throws -> DesignSetup {
        func load(_ a: ProgLoadAttr) throws -> Int32 { try bpf.progLoad(a) }
        let dropName = "xdp_drop"
        switch id {
        case .baseline, .beforePatch:
            let d = try load(ProgLoadAttr(body: .xdpDrop, name: dropName))
            return DesignSetup(id: id, root: d, fds: [d], chainPrev: nil, progArray: nil)
        case .chainUnused:
            let d = try load(ProgLoadAttr(body: .xdpDrop, name: dropName, flags: .chainCalls))
            return DesignSetup(id: id, root: d, fds: [d], chainPrev: d, progArray: nil)
        case .chainPass, .chainWildcard:
            let p = try load(ProgLoadAttr(body: .xdpPass, name: "xdp_pass", flags: .chainCalls))
            let d = try load(ProgLoadAttr(body: .xdpDrop, name: dropName, flags: .chainCalls))
            try bpf.progChainAdd(prev: p, retcode: id == .chainPass ? 2 : chainWildcard, next: d)
            return DesignSetup(id: id, root: p, fds: [p, d], chainPrev: p, progArray: nil)
        case .tailJIT, .tailInterp, .tailDirect:
            let jited = id != .tailInterp
            let jmp = try bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: 2, name: "jmp"))
            let d = jited ? try load(ProgLoadAttr(body: .xdpDrop, name: dropName))
                          : try load(ProgLoadAttr(steps: StepProgram([.returnConst(1)]), name: dropName, jited: false))
            try bpf.mapUpdateElem(jmp, key: [0, 0, 0, 0], value: withUnsafeBytes(of: UInt32(bitPattern: d).littleEndian) { Array($0) })
            let t = try load(ProgLoadAttr(steps: StepProgram([.tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(2)],
                                                             directTailCalls: id == .tailDirect),
                                          name: "xdp_tail", jited: jited))
            return DesignSetup(id: id, root: t, fds: [t, d, jmp], chainPrev: nil, progArray: jmp)
        }
    }

    public func close(_ bpf: BPF) {
        for fd in fds.reversed() { try? bpf.objClose(fd) }
    }
}
