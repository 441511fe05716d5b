// KernelBench.swift — the designs that exist in mainline, measured on this machine's own
// kernel: each runs through BPF_PROG_TEST_RUN with `repeat`, timed from user space with the
// TSC around the syscall (one window = one syscall of `repeat` runs, so the syscall's own
// entry and exit, ~1 µs, is spread over them), bracketed by baseline windows exactly as the
// lab's method brackets its designs: overhead = design − the mean of its two baseline
// windows, with a Student-t interval over the trials.
//
// The test-run loop itself costs ~20 ns per run here; it is common to every design and
// cancels in the overheads. Programs are the JIT's (BPF JIT always on here), retpolined
// when the kernel is.
//
// The programs are sched_cls (tc) programs, not XDP ones: an XDP test run with repeat > 1
// puts the program into the bpf_dispatcher and takes it out again (net/bpf/test_run.c,
// bpf_prog_change_xdp), two dispatcher updates with a grace period each — 16 to 40 ms per
// syscall on this machine, which would swamp any window. The tail-call sequences the JIT
// emits are the same for every program type. (XDP programs attached to a device are
// already dispatcher targets and skip that; measuring them needs the veth devices the
// backend does not create yet.)
import BPFInstructions
import BPFKernel
import LiveKernel

/// A design on the live kernel, and the lab design it corresponds to.
public enum KernelDesign: String, CaseIterable, Sendable, Codable {
    case baseline
    /// bpf_tail_call with the key in a register the verifier cannot know (the JIT's
    /// emit_bpf_tail_call_indirect: bounds, count, load, NULL check, retpolined jump).
    case tailVariableKey = "tail-variable-key"
    /// bpf_tail_call with a constant key (the JIT's patched direct jump).
    case tailConstantKey = "tail-constant-key"
    /// A program tail-calling itself with a constant key: 33 tail calls per packet.
    case tailSelf33 = "tail-self-33"
    /// An XDP DROP program attached in native mode to a veth (so a bpf_dispatcher target)
    /// while the dispatcher is full (48 targets): the test run's calls are the image's direct call.
    case dispatcherHit = "dispatcher-hit"
    /// The same program unattached while 48 others fill the dispatcher: it cannot be added,
    /// so every run takes the image's indirect (retpolined) call.
    case dispatcherMiss = "dispatcher-miss"

    public var title: String {
        switch self {
        case .baseline: return "DROP program (kernel, tc)"
        case .tailVariableKey: return "Tail call, variable key (kernel JIT)"
        case .tailConstantKey: return "Tail call, constant key (kernel JIT)"
        case .tailSelf33: return "Self tail call, 33 per packet (kernel)"
        case .dispatcherHit: return "XDP via bpf_dispatcher, hit (kernel)"
        case .dispatcherMiss: return "XDP via bpf_dispatcher, miss (kernel)"
        }
    }

    /// The lab design that does the same, for the lab/kernel ratio.
    public var labDesign: DesignID? {
        switch self {
        case .baseline: return .baseline
        case .tailVariableKey: return .tailJIT
        case .tailConstantKey: return .tailDirect
        case .tailSelf33: return nil
        case .dispatcherHit: return .dispatcherHit
        case .dispatcherMiss: return .dispatcherMiss
        }
    }
}

public struct KernelDesignSummary: Sendable, Codable {
    public let design: KernelDesign
    public let nsPerRunMedian: Double
    /// Overhead against the bracketing baseline windows: mean and 95% CI half-width (ns).
    public let overheadNs: Double?
    public let overheadCI95: Double?
    public let windows: Int
}

public struct KernelBenchReport: Sendable, Codable {
    public let machine: MachineInfo
    public let repeatCount: UInt32
    public let trials: Int
    public let summaries: [KernelDesignSummary]
    public let probe: [String]

    /// JSON with the results files' encoder (sorted keys, snake case).
    public func json() -> String {
        (try? BenchResultsFile.encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}

public enum KernelBench {
    /// Builds each design on the live kernel and measures it. `progress` gets (done, total).
    public static func run(designs: [KernelDesign] = KernelDesign.allCases, trials: Int = 20, repeatCount: UInt32 = 400_000,
                           frame: [UInt8], progress: (Int, Int) -> Void = { _, _ in }) throws -> KernelBenchReport {
        if let why = LiveBPF.unavailableReason() { throw HarnessError("the live kernel cannot run the bench: \(why)") }
        let live = LiveBPF()
        defer { live.closeAll() }
        let machine = MachineInfo.probe()
        var roots: [KernelDesign: Int32] = [:]
        let drop: [BPFInsn] = [.mov64(0, imm: 1), .exit]
        let tc = ProgType.schedCls.rawValue
        let base = try live.progLoad(type: tc, insns: drop, name: "tc_drop")
        roots[.baseline] = base
        for d in designs where d != .baseline && d != .dispatcherHit && d != .dispatcherMiss {
            let jmp = try live.mapCreate(type: 3, keySize: 4, valueSize: 4, maxEntries: 2, name: "jmp")
            let mapRef = BPFInsn.ldImm64(2, UInt64(UInt32(bitPattern: jmp)), src: Pseudo.mapFD)
            let root: Int32
            switch d {
            case .baseline, .dispatcherHit, .dispatcherMiss:
                continue
            case .tailVariableKey:
                // r3 = skb->mark (0 in a test run): a key the verifier cannot know.
                let t = try live.progLoad(type: tc, insns: drop, name: "tc_drop")
                try live.mapUpdate(jmp, key: u32Bytes(0), value: u32Bytes(UInt32(bitPattern: t)))
                root = try live.progLoad(type: tc,
                                         insns: [.ldx(.w, dst: 3, src: 1, off: 8)] + mapRef + [.call(helper: 12), .mov64(0, imm: 2), .exit],
                                         name: "tc_tail_var")
            case .tailConstantKey:
                let t = try live.progLoad(type: tc, insns: drop, name: "tc_drop")
                try live.mapUpdate(jmp, key: u32Bytes(0), value: u32Bytes(UInt32(bitPattern: t)))
                root = try live.progLoad(type: tc,
                                         insns: mapRef + [.mov64(3, imm: 0), .call(helper: 12), .mov64(0, imm: 2), .exit],
                                         name: "tc_tail_const")
            case .tailSelf33:
                // Tail-calls itself until the 33rd; then returns DROP.
                root = try live.progLoad(type: tc,
                                         insns: mapRef + [.mov64(3, imm: 0), .call(helper: 12), .mov64(0, imm: 1), .exit],
                                         name: "tc_tail_self")
                try live.mapUpdate(jmp, key: u32Bytes(0), value: u32Bytes(UInt32(bitPattern: root)))
            }
            roots[d] = root
        }
        // The bpf_dispatcher designs: 48 XDP programs attached in native mode to veths in a
        // private namespace fill the dispatcher; the hit design is one of them, the miss
        // design a 49th program no device runs.
        var netns: LiveNetns?
        defer { netns?.close() }  // deleting the namespace detaches every program
        if designs.contains(.dispatcherHit) || designs.contains(.dispatcherMiss) {
            let ns = try LiveNetns(tag: "dispatcher")
            netns = ns
            let devices = ["veth0", "veth1"] + (try ns.addPairs(23))
            var attached: [Int32] = []
            for (i, dev) in devices.enumerated() {
                let p = try live.progLoad(type: ProgType.xdp.rawValue, insns: drop, name: "disp\(i)")
                try ns.xdpAttach(live, device: dev, fd: p, flags: 4)  // XDP_FLAGS_DRV_MODE
                attached.append(p)
            }
            roots[.dispatcherHit] = attached[0]
            roots[.dispatcherMiss] = try live.progLoad(type: ProgType.xdp.rawValue, insns: drop, name: "disp_miss")
        }
        // The verdicts first: every design must drop the frame.
        for (d, fd) in roots {
            let v = try live.testRun(fd, data: frame).retval
            guard v == 1 else { throw HarnessError("kernel design \(d.rawValue) gives \(v), not the DROP program's 1") }
        }
        let others = designs.filter { $0 != .baseline }
        var samples: [KernelDesign: [Double]] = [:], overheads: [KernelDesign: [Double]] = [:]
        func window(_ d: KernelDesign) throws -> Double {
            let (_, ticks) = try live.timedTestRun(roots[d]!, data: frame, repeat: repeatCount)
            let ns = Double(ticks) / machine.tscGHz / Double(repeatCount)
            samples[d, default: []].append(ns)
            return ns
        }
        let total = trials * (2 * others.count + 1)
        var done = 0
        for t in 0..<trials {
            // Each trial in its own order (rotated), so no design always follows another.
            let order = others.indices.map { others[($0 + t) % others.count] }
            var before = try window(.baseline)
            done += 1
            for d in order {
                let x = try window(d)
                let after = try window(.baseline)
                overheads[d, default: []].append(x - (before + after) / 2)
                before = after
                done += 2
                progress(done, total)
            }
        }
        func median(_ xs: [Double]) -> Double { let s = xs.sorted(); return s.isEmpty ? 0 : s[(s.count - 1) / 2] }
        let summaries = designs.map { d -> KernelDesignSummary in
            let o = overheads[d] ?? []
            let (m, ci) = o.count >= 2 ? meanCI95(o) : (0, 0)
            return KernelDesignSummary(design: d, nsPerRunMedian: median(samples[d] ?? []), overheadNs: o.isEmpty ? nil : m,
                                       overheadCI95: o.count >= 2 ? ci : nil, windows: (samples[d] ?? []).count)
        }
        return KernelBenchReport(machine: machine, repeatCount: repeatCount, trials: trials, summaries: summaries,
                                 probe: LiveProbe.run().map(\.line))
    }

    /// The report as a Markdown table, with the lab's overheads beside it when given.
    public static func table(_ r: KernelBenchReport, lab: BenchReport? = nil) -> String {
        var header = ["Design (kernel)", "ns per run", "Overhead (95% CI)"]
        if lab != nil { header += ["Lab design", "Lab overhead", "lab / kernel"] }
        var rows: [[String]] = []
        for s in r.summaries {
            var row = [s.design.title, String(format1: s.nsPerRunMedian, digits: 2),
                       s.overheadNs.map { "\(String(format1: $0, digits: 2)) ± \(String(format1: s.overheadCI95 ?? 0, digits: 2)) ns" } ?? ""]
            if let lab {
                if let ld = s.design.labDesign, let ls = lab.summaries.first(where: { $0.design == ld }) {
                    row.append(ld.rawValue)
                    row.append(ls.overheadNs.map { "\(String(format1: $0, digits: 2)) ± \(String(format1: ls.overheadCI95 ?? 0, digits: 2)) ns" } ?? "(reference)")
                    if s.design == .dispatcherHit || s.design == .dispatcherMiss {
                        row.append("miss − hit below")  // against the tc baseline: no ratio means anything
                    } else if let lo = ls.overheadNs, let ko = s.overheadNs, abs(ko) > 1e-9 {
                        row.append(String(format1: lo / ko, digits: 2))
                    } else {
                        row.append("")
                    }
                } else {
                    row += ["kernel only", "", ""]
                }
            }
            rows.append(row)
        }
        var widths = header.map(\.count)
        for row in rows { for (i, c) in row.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String { "| " + cells.enumerated().map { $1.padding(widths[$0]) }.joined(separator: " | ") + " |" }
        var s = "live kernel: " + r.probe.joined(separator: "; ") + "\n\n"
        s += line(header) + "\n|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|\n"
        for row in rows { s += line(row) + "\n" }
        if let hit = r.summaries.first(where: { $0.design == .dispatcherHit })?.overheadNs,
           let miss = r.summaries.first(where: { $0.design == .dispatcherMiss })?.overheadNs {
            s += "\nbpf_dispatcher: miss − hit = \(String(format1: miss - hit, digits: 2)) ns per run (the XDP rows' overheads are against the tc baseline and include the XDP test run's own setup; their difference is the dispatcher's).\n"
            if let lab, let lh = lab.summaries.first(where: { $0.design == .dispatcherHit })?.overheadNs,
               let lm = lab.summaries.first(where: { $0.design == .dispatcherMiss })?.overheadNs {
                s += "lab: miss − hit = \(String(format1: lm - lh, digits: 2)) ns per packet\n"
            }
        }
        s += "\n" + r.machine.line(workers: 1) + "\n"
        s += "\(r.trials) trials; one window = one BPF_PROG_TEST_RUN of \(r.repeatCount) runs of a sched_cls program, timed with the TSC around the syscall, each design between two baseline windows; ± covers this run's windows only. The test-run loop (~25 ns per run here) is common to every design and cancels in the overheads. (XDP test runs with repeat put the program into the bpf_dispatcher and out again: two grace periods, 16–40 ms per syscall here, hence tc programs.)\n"
        if lab != nil {
            s += "Lab designs with no mainline counterpart (the RFC's chain calls, the lab's static keys, …) are lab only.\n"
        }
        return s
    }
}
