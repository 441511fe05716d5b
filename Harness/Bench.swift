// Bench.swift — the measurement: designs interleaved within one process over repeated
// trials after warm-up, each design's window bracketed by baseline windows
// (B d1 B d2 B … B); Mpps per design; overhead = 1000/Mpps(design) − 1000/Mpps(baseline)
// in ns per packet per core, paired with the mean of the two baseline windows around it,
// with a 95% confidence interval; cycles per packet from the TSC. Workers time batches of
// polls, never single packets.
//
// Why brackets and short windows: this VM runs in two speed modes (the baseline at
// 2.3 ns or at ~4 ns per packet, switching every 0.5–3 s — see Perf/RESULTS.md). A design
// compared with a baseline measured seconds earlier mixes the modes; one measured 10 ms
// before and after almost never does.
import CBPFShims
import BPFKernel
import BPFMachineCode
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A control-plane load to run while traffic flows: `kind:rate` (updates per second).
public struct ChurnSpec: Sendable, Equatable, Codable {
    /// Spelled with '-' like design names ('_' accepted, and read from older files).
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case chain          // CHAIN_ADD / CHAIN_DEL on the root's unused XDP_TX slot
        case progArray = "prog-array"  // prog-array update / delete of a spare slot
        case link           // BPF_LINK_UPDATE of an XDP link (on a second device)
        case dispatcher     // bpf_dispatcher change: image rebuilt, switched, grace period
        case staticKey = "static-key"  // static-key map flipped (the design's own key if any)

        public init?(spelled s: String) { self.init(rawValue: s.replacingOccurrences(of: "_", with: "-")) }

        public init(from decoder: Decoder) throws {
            let s = try decoder.singleValueContainer().decode(String.self)
            guard let k = Kind(spelled: s) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "unknown churn kind '\(s)'"))
            }
            self = k
        }
    }
    public var kind: Kind
    public var rate: Double
    public static let minRate = 1.0
    public static let maxRate = 10_000_000.0

    public init(kind: Kind, rate: Double) {
        self.kind = kind
        self.rate = rate
    }

    public init(parsing s: String) throws {
        let parts = s.split(separator: ":")
        let kinds = Kind.allCases.map(\.rawValue).joined(separator: ", ")
        guard parts.count == 2, let k = Kind(spelled: String(parts[0])) else {
            throw HarnessError("--churn takes KIND:RATE with KIND one of \(kinds) (got '\(s)')")
        }
        // At least one update per second: a window lasts milliseconds, and a slower rate
        // would give no update at all in most windows (and intervals past any timer's range).
        guard let r = Double(parts[1]), r.isFinite, r >= ChurnSpec.minRate, r <= ChurnSpec.maxRate else {
            throw HarnessError("--churn \(k.rawValue):RATE takes \(Int(ChurnSpec.minRate)) ≤ RATE ≤ 1e7 updates per second (got '\(parts[1])')")
        }
        kind = k
        rate = r
    }
}

public struct BenchConfig: Sendable {
    public var designs: [DesignID] = DesignID.seedSuite
    /// N for the designs a sweep varies (the others, and those not named, at their default).
    public var parameters: [DesignID: Int] = [:]
    public var threads: Int = 1
    /// Seconds each design is measured per trial (each baseline window too).
    public var duration: Double = 0.01
    /// Trials every design gets.
    public var trials: Int = 30
    /// After `trials`, further rounds measure only the designs whose overhead CI
    /// half-width is still above this (ns); 0 = exactly `trials` trials.
    public var targetCI: Double = 0.2
    /// Seconds after which no further round starts (the minimum trials always run).
    public var maxTime: Double = 60
    /// Rounds at most (the minimum trials included).
    public var maxTrials: Int = 1000
    public var churn: ChurnSpec?
    public var frames = FrameSpec()
    public var numa: NUMAPolicy = .auto
    /// Quantile of batch times each window reports (0.5 = median).
    public var quantile: Double = 0.5
    /// First CPU to pin workers on (worker i → CPU (first + i) mod online CPUs).
    public var firstCPU: Int = 0
    /// The CPU of each worker (--cpus), instead of firstCPU onwards; one per worker.
    public var cpus: [Int]? = nil

    /// The CPU worker `q` is pinned to.
    public func cpu(forWorker q: Int) -> Int {
        if let cpus, !cpus.isEmpty { return cpus[q % cpus.count] }
        return (firstCPU + q) % max(1, Int(cbpf_nr_cpus_online()))
    }
    /// Independent blocks the trials are split into (each with its own design order);
    /// with more than one, the table adds an interval over block means and the sequential
    /// phase (--target-ci) is off.
    public var blocks: Int = 1
    /// Measure each window's plain-C twin right after it (Perf/Twins): the same objects,
    /// ring and quiescent state, the driver loop and BPF_PROG_RUN in C.
    public var twin = false
    /// Whether generated machine code makes its indirect branches through retpoline thunks.
    public var retpoline: RetpolineMode = .auto
    /// Allow more workers than online CPUs (two workers then share a CPU: their rates do
    /// not add up; the report says so).
    public var oversubscribe = false

    public init() {}

    public func validate() throws {
        try frames.validate()
        let online = Int(cbpf_nr_cpus_online())
        guard threads >= 1 && threads <= min(64, max(1, online) * 4) else {
            throw HarnessError("--threads must be between 1 and \(min(64, max(1, online) * 4)) (got \(threads))")
        }
        if threads > max(1, online) && !oversubscribe {
            throw HarnessError("--threads \(threads) is more than the \(online) online CPUs: workers would share CPUs and their rates would not add up (give --oversubscribe to measure that anyway)")
        }
        if let cpus {
            guard cpus.count == threads else {
                throw HarnessError("--cpus names \(cpus.count) CPU\(cpus.count == 1 ? "" : "s") for \(threads) worker\(threads == 1 ? "" : "s"): give one CPU per worker")
            }
            for c in cpus where c < 0 || c >= max(1, online) {
                throw HarnessError("--cpus: CPU \(c) is not online (CPUs 0–\(max(1, online) - 1) are)")
            }
            if Set(cpus).count < cpus.count && !oversubscribe {
                throw HarnessError("--cpus \(cpus.map(String.init).joined(separator: ",")) puts two workers on one CPU: their rates would not add up (give --oversubscribe to measure that anyway)")
            }
        }
        guard duration >= 0.01 && duration <= 60 else { throw HarnessError("--duration must be between 0.01 and 60 seconds (got \(duration))") }
        guard trials >= 2 && trials <= 1000 else { throw HarnessError("--trials must be between 2 and 1000 (got \(trials)): a confidence interval needs two") }
        guard !designs.isEmpty else { throw HarnessError("no designs to run") }
        guard targetCI >= 0 && targetCI.isFinite else { throw HarnessError("--target-ci must be 0 (off) or a positive number of ns (got \(targetCI))") }
        guard maxTime > 0 && maxTime <= 86_400 else { throw HarnessError("--max-time must be between 0 and 86400 seconds (got \(maxTime))") }
        guard blocks >= 1 && blocks <= 20 && trials >= 2 * blocks else {
            throw HarnessError("--blocks must be between 1 and 20, with at least two trials per block (got \(blocks) blocks for \(trials) trials)")
        }
        if twin && churn != nil {
            throw HarnessError("--twin and --churn measure different things: give one of them (the twin pairs each window with the same work in C; churn pairs it with a quiet window)")
        }
        guard quantile > 0 && quantile < 1 else { throw HarnessError("--quantile must be strictly between 0 and 1 (got \(quantile))") }
    }
}

/// One design in one trial.
public struct TrialResult: Sendable, Codable {
    public let design: DesignID
    public let trial: Int
    /// Position within the trial (baseline windows are the even ones).
    public var window: Int = 0
    /// The independent block the window belongs to (--blocks).
    public var block: Int = 0
    public let mpps: Double            // all workers
    public let mppsPerWorker: Double
    public let nsPerPacket: Double     // per core: 1000 / mppsPerWorker
    public let cyclesPerPacket: Double
    public let counters: QueueCounters
    public let perQueue: [QueueCounters]
    public let churnRate: Double?
    public let gracePeriodMeanNs: Double?
    /// The mean ns per packet of the baseline windows just before and after this one.
    public var baselineNs: Double?
    /// With churn: this window is the design measured without it, next to a churned one.
    public var quiet = false
    /// With churn: the ns per packet of the quiet window next to this one.
    public var quietNs: Double?
    /// With --twin: this window is the plain-C twin of the lab window before it.
    public var twin = false
    /// With --twin: the ns per packet of this window's twin.
    public var twinNs: Double?
}

/// A design over all trials.
public struct DesignSummary: Sendable, Codable {
    public let design: DesignID
    public let title: String
    public let mppsMedian: Double
    public let nsPerPacketMedian: Double
    public let cyclesPerPacketMedian: Double
    /// Paired overhead against the baseline: mean and 95% CI half-width, ns per packet.
    public let overheadNs: Double?
    public let overheadCI95: Double?
    /// Windows measured (the baseline's include every bracket).
    public let windows: Int
    /// With churn: the extra time per packet it caused, in % of the quiet window next to
    /// each churned one (mean and 95% CI half-width).
    public let churnCostPct: Double?
    public let churnCostCI95: Double?
    public let churnRateMean: Double?
    public let gracePeriodMeanNs: Double?
    /// The overhead relative to the bracketing baseline windows (% per window, mean and 95%
    /// half-width): what stays comparable between runs at the VM's two speeds.
    public var overheadPct: Double? = nil
    public var overheadPctCI95: Double? = nil
    /// With --blocks N: the mean of the N block means and its 95% half-width (t, N − 1
    /// dof) — an interval over independent blocks, closer to run-to-run than the
    /// windows' interval.
    public var blockOverheadNs: Double? = nil
    public var blockCI95: Double? = nil
    /// The same relative to the baseline (%): mean of the block means and its 95% half-width.
    public var blockOverheadPct: Double? = nil
    public var blockPctCI95: Double? = nil
    /// With --twin: the twin's median ns per packet, and lab / twin per window pair (mean
    /// and 95% half-width) and lab − twin in ns.
    public var twinNsMedian: Double? = nil
    public var labOverTwin: Double? = nil
    public var labOverTwinCI95: Double? = nil
    public var labMinusTwinNs: Double? = nil
    public var labMinusTwinCI95: Double? = nil
    /// When the VM ran at two speeds (SpeedStates): the overhead over the windows in each
    /// state, mean and 95% half-width, and how many windows each had.
    public var fastOverheadNs: Double? = nil
    public var fastOverheadCI95: Double? = nil
    public var fastWindows: Int? = nil
    public var slowOverheadNs: Double? = nil
    public var slowOverheadCI95: Double? = nil
    public var slowWindows: Int? = nil
}

public struct BenchReport: Sendable, Codable {
    public let machine: MachineInfo
    public let threads: Int
    public let duration: Double
    public let trials: Int
    /// Rounds run in all (≥ trials when the target CI asked for more).
    public let rounds: Int
    public let targetCI: Double
    /// Designs whose CI is still above the target (time or round budget spent).
    public let targetMissed: [DesignID]
    public let packetSize: Int
    public let flows: Int
    public let numa: String
    public let placement: [String]
    public let churn: ChurnSpec?
    public let results: [TrialResult]
    public let summaries: [DesignSummary]
    public let verdictCheck: String
    /// The run was interrupted (SIGINT): these are the windows measured until then.
    public var partial: Bool = false
    /// More workers than CPUs (--oversubscribe).
    public var oversubscribed: Bool = false
    /// Independent blocks (--blocks).
    public var blocks: Int = 1
    /// Each window paired with its plain-C twin (--twin).
    public var twin: Bool = false
    /// How generated machine code made its indirect branches (--retpoline, resolved).
    public var retpolines: String? = nil
    /// Instructions the interpreter runs per packet, by design (bytecode designs only).
    public var instructionsPerPacket: [String: UInt64]? = nil
    /// The VM's two speeds, when the baseline windows show both.
    public var speedStates: SpeedStates? = nil
}

public final class Bench {
    public let config: BenchConfig
    public let kernel: Kernel
    public let bpf: BPF
    public let device: NetDevice

    public init(_ config: BenchConfig, kernel: Kernel? = nil) throws {
        try config.validate()
        let k = kernel ?? Kernel(.fast)
        if k.checked {
            throw HarnessError("benchmarks refuse to run on a checked kernel (poisoning and checks would be measured)")
        }
        self.config = config
        self.kernel = k
        bpf = BPF(kernel: k)
        device = NetDevice(kernel: k, name: "bench0", ifindex: 1, queues: config.threads)
    }

    /// Every design's verdict for each flow's frame; they must all agree.
    public static func crossCheck(_ setups: [DesignSetup], bpf: BPF, device: NetDevice, frames: FrameSpec) throws -> [[UInt32]] {
        var table: [[UInt32]] = []
        defer { try? bpf.xdpAttach(device, fd: -1) }  // never leave a design attached, even on error
        for s in setups {
            try bpf.xdpAttach(device, fd: s.root)
            var verdicts: [UInt32] = []
            for flow in 0..<min(frames.flows, 64) {
                var f = frames.frame(flow: flow)
                let v = withXDPContext(&f, ifindex: device.ifindex) { s.runOnce(device, $0) }
                verdicts.append(v)
            }
            table.append(verdicts)
        }
        for (i, row) in table.enumerated() where row != table[0] {
            throw HarnessError("design \(setups[i].id.rawValue) gives verdicts \(row.prefix(8)) where \(setups[0].id.rawValue) gives \(table[0].prefix(8)): the designs do not implement the same policy")
        }
        return table
    }

    private struct Interrupted: Error {}

    /// Runs the whole benchmark. `progress` receives (done, total, message). `shouldStop`
    /// is asked before every window; once it answers true no further window starts and
    /// the report of what was measured is returned, marked partial.
    public func run(shouldStop: () -> Bool = { false }, progress: (Int, Int, String) -> Void = { _, _, _ in }) throws -> BenchReport {
        Retpoline.mode = config.retpoline  // read by generated images as they are built
        // The designs' objects, by ID; rebuilt for each block (see `rebuild`).
        var setups: [DesignID: DesignSetup] = [:]
        defer {
            try? bpf.xdpAttach(device, fd: -1)
            for d in config.designs.reversed() { setups[d]?.close(bpf) }
            kernel.quiesce()
        }
        func build() throws -> [DesignID: DesignSetup] {
            var made: [DesignID: DesignSetup] = [:]
            do {
                for d in config.designs { made[d] = try DesignSetup.make(d, bpf: bpf, n: config.parameters[d]) }
                return made
            } catch {
                for s in made.values { s.close(bpf) }
                throw error
            }
        }
        setups = try build()
        let check = try Bench.crossCheck(config.designs.map { setups[$0]! }, bpf: bpf, device: device, frames: config.frames)
        let verdictLine = "all \(setups.count) designs agree on \(check[0].count) frames: \(Set(check[0]).map { verdictNames[Int($0)] }.sorted().joined(separator: ","))"
        /// A new block builds every design afresh before the old objects go (those of the
        /// bpf_dispatcher designs first: its table holds 48 targets), so each block's
        /// programs, arrays and records sit at new addresses: the memory layout a process
        /// happened to get varies between blocks, and the interval over blocks covers it.
        func rebuild() throws {
            for (d, s) in setups where s.usesDispatcher { s.close(bpf); setups[d] = nil }
            let fresh = try build()
            do { _ = try Bench.crossCheck(config.designs.map { fresh[$0]! }, bpf: bpf, device: device, frames: config.frames) } catch {
                for s in fresh.values { s.close(bpf) }
                throw error
            }
            for (_, s) in setups { s.close(bpf) }
            setups = fresh
            kernel.quiesce()
        }

        let machine = MachineInfo.probe()
        var results: [TrialResult] = []
        var placement: [String] = []
        var base: DesignID? = config.designs.contains(.baseline) ? .baseline : nil
        var others = config.designs.filter { $0 != .baseline }
        if others.isEmpty {  // the baseline alone (e.g. a scaling run): plain windows, no overheads
            others = config.designs
            base = nil
        }
        let perTrial = base == nil ? others.count : 2 * others.count + 1
        var total = config.trials * perTrial
        var done = 0
        let started = cbpf_ktime_get_ns()
        func window(_ id: DesignID, _ trial: Int, _ w: Int) throws -> TrialResult {
            if shouldStop() { throw Interrupted() }
            let s = setups[id]!
            let phase = trial < config.trials ? "trial \(trial + 1)/\(config.trials)" : "round \(trial + 1) (until ±\(config.targetCI) ns)"
            progress(min(done, total - 1), total, "\(phase) \(s.id.rawValue)")
            func one(churn: Bool) throws -> TrialResult {
                try measure(s, trial: trial, churn: churn, twin: false, tscGHz: machine.tscGHz, placement: &placement)
            }
            var r: TrialResult
            if config.churn != nil {
                // The churn's price: the same design measured right before or after
                // without churn (order alternating), kept apart as a quiet window.
                var q: TrialResult
                if (trial + w) % 2 == 0 {
                    r = try one(churn: true)
                    q = try one(churn: false)
                } else {
                    q = try one(churn: false)
                    r = try one(churn: true)
                }
                q.window = w
                q.quiet = true
                r.quietNs = q.nsPerPacket
                results.append(q)
            } else {
                r = try one(churn: false)
            }
            if config.twin {
                var t = try measure(s, trial: trial, churn: false, twin: true, tscGHz: machine.tscGHz, placement: &placement)
                t.window = w
                t.twin = true
                r.twinNs = t.nsPerPacket
                results.append(t)
            }
            r.window = w
            r.block = config.blocks > 1 ? min(config.blocks - 1, trial * config.blocks / config.trials) : 0
            done += 1
            return r
        }
        // Each block runs the designs in its own order (a seeded shuffle), so no order
        // effect is shared by every block.
        var rng = SplitMix64(seed: 0x6b6c_6f63)
        let blockOrders: [[DesignID]] = (0..<config.blocks).map { b in b == 0 ? others : others.shuffled(using: &rng) }
        var open = others
        var trial = 0
        var missed: [DesignID] = []
        var partial = false
        var block = 0
        rounds: while !open.isEmpty {
          do {
            let b = min(config.blocks - 1, trial * config.blocks / config.trials)
            if b != block {
                block = b
                try rebuild()
            }
            // B d1 B d2 … B, then B … d2 B d1 B: no design always runs right after another.
            let blockOrder = config.blocks > 1 ? blockOrders[b].filter { open.contains($0) } : open
            let order = trial % 2 == 0 ? blockOrder : blockOrder.reversed()
            var w = 0
            var before = try base.map { try window($0, trial, 0) }
            if let b = before { results.append(b); w = 1 }
            for s in order {
                var r = try window(s, trial, w)
                if let base, let b0 = before {
                    let b1 = try window(base, trial, w + 1)
                    r.baselineNs = (b0.nsPerPacket + b1.nsPerPacket) / 2
                    results.append(r)
                    results.append(b1)
                    before = b1
                    w += 2
                } else {
                    results.append(r)
                    w += 1
                }
            }
            trial += 1
            if trial < config.trials { continue }
            // Sequential phase: only designs whose interval is still wider than the target.
            guard config.targetCI > 0, base != nil, config.blocks == 1 else { break }
            let summaries = Bench.summarize(results, designs: open)
            open = open.filter { d in summaries.first { $0.design == d }.map { ($0.overheadCI95 ?? .infinity) > config.targetCI } ?? false }
            let elapsed = Double(cbpf_ktime_get_ns() - started) / 1e9
            if !open.isEmpty && (elapsed >= config.maxTime || trial >= config.maxTrials) {
                missed = open
                break
            }
            total = done + (base == nil ? open.count : 2 * open.count + 1)
          } catch is Interrupted {
            partial = true
            break rounds
          }
        }
        progress(total, total, "done")
        var report = BenchReport(machine: machine, threads: config.threads, duration: config.duration, trials: config.trials,
                                 rounds: trial, targetCI: config.targetCI, targetMissed: missed,
                                 packetSize: config.frames.size, flows: config.frames.flows, numa: config.numa.description,
                                 placement: placement, churn: config.churn, results: results,
                                 summaries: Bench.summarize(results, designs: config.designs, blocks: config.blocks), verdictCheck: verdictLine,
                                 partial: partial, oversubscribed: config.threads > machine.onlineCPUs, blocks: config.blocks, twin: config.twin)
        if config.designs.contains(where: { $0.rawValue.contains("@retpoline-") }) {
            report.retpolines = "as each row says, both modes measured in this run"
        } else if config.designs.contains(where: { $0.design.family == .machineCode }) {
            report.retpolines = (config.retpoline.enabled ? "on" : "off") + (config.retpoline == .auto ? " (auto: this kernel's spectre_v2 \(Retpoline.kernelUsesRetpolines ? "uses" : "does not use") retpolines)" : "")
        }
        report.speedStates = SpeedStates.classify(results.filter { $0.design == .baseline && !$0.quiet && !$0.twin }.map(\.nsPerPacket))
        var insns: [String: UInt64] = [:]
        for s in setups.values { if let n = s.instructionsPerPacket(bpf, frame: config.frames.frame(flow: 0)) { insns[s.id.rawValue] = n } }
        if !insns.isEmpty { report.instructionsPerPacket = insns }
        return report
    }

    private func measure(_ s: DesignSetup, trial: Int, churn: Bool, twin: Bool, tscGHz: Double, placement: inout [String]) throws -> TrialResult {
        try bpf.xdpAttach(device, fd: s.root)
        defer { try? bpf.xdpAttach(device, fd: -1) }
        var workers: [QueueWorker] = []
        for q in 0..<config.threads {
            let w = try QueueWorker(queue: q, cpu: config.cpu(forWorker: q), frames: config.frames, numa: config.numa)
            w.quantile = config.quantile
            workers.append(w)
        }
        let control = RunControl()
        var started: [QueueWorker] = []
        /// A thread that cannot be created (EAGAIN) stops the workers already running.
        func abandon(_ error: Error) -> Error {
            control.go.store(true, ordering: .releasing)
            control.stop.store(true, ordering: .relaxed)
            for w in started { w.join() }
            return error
        }
        do {
            for w in workers {
                try w.start(dev: device, control: control, runner: s.runner, twin: twin)
                started.append(w)
            }
        } catch { throw abandon(error) }
        while control.ready.load(ordering: .acquiring) < workers.count { cbpf_usleep(200) }

        let churner = churn ? config.churn.map { Churner(spec: $0, setup: s, bpf: bpf) } : nil
        let gp0 = kernel.rcu.gracePeriods.load(ordering: .relaxed), gpn0 = kernel.rcu.gracePeriodNanos.load(ordering: .relaxed)
        do { try churner?.start() } catch { throw abandon(error) }
        control.go.store(true, ordering: .releasing)
        cbpf_usleep(UInt32(config.duration * 1_000_000))
        control.stop.store(true, ordering: .relaxed)
        for w in workers { w.join() }
        let churnRate = try churner?.stop()
        // Where each worker really ran, once: its pin, and the CPU it found itself on.
        if placement.isEmpty {
            placement = workers.map { w in
                let pin = w.pinned ? "pinned" : "PIN FAILED"
                let ran = w.ranOn >= 0 ? "ran on CPU \(w.ranOn)" : "CPU unknown"
                return "queue \(w.queue) → CPU \(w.cpu) (\(pin), \(ran)), buffers on \(w.ring.placement)"
            }
        }
        let gp1 = kernel.rcu.gracePeriods.load(ordering: .relaxed), gpn1 = kernel.rcu.gracePeriodNanos.load(ordering: .relaxed)

        let per = workers.map(\.result)
        let sum = per.reduce(QueueCounters.zero, +)
        for (i, q) in per.enumerated() where !q.balanced {
            throw HarnessError("queue \(i): received \(q.received) but verdicts add up to \(q.verdicts.reduce(0, +))")
        }
        // Per-worker cost from the median batch of each worker's window (robust to
        // interrupts and steal time); the rate is its inverse, the total their sum.
        let cppPer = per.map { q in q.medianCyclesPerPacket > 0 ? q.medianCyclesPerPacket : Double(q.cycles) / Double(max(1, q.received)) }
        let rates = cppPer.map { c in c > 0 ? 1000 / (c / tscGHz) : 0 }
        let mpps = rates.reduce(0, +)
        let perWorker = mpps / Double(per.count)
        let cpp = cppPer.reduce(0, +) / Double(per.count)
        let gps = gp1 - gp0
        return TrialResult(design: s.id, trial: trial, mpps: mpps, mppsPerWorker: perWorker,
                           nsPerPacket: perWorker > 0 ? 1000 / perWorker : .infinity, cyclesPerPacket: cpp,
                           counters: sum, perQueue: per, churnRate: churnRate,
                           gracePeriodMeanNs: gps > 0 ? Double(gpn1 - gpn0) / Double(gps) : nil)
    }

    /// Medians, and the overhead against the bracketing baseline windows with a 95% CI
    /// (Student's t over the design's windows).
    public static func summarize(_ results: [TrialResult], designs: [DesignID], blocks: Int = 1) -> [DesignSummary] {
        let states = SpeedStates.classify(results.filter { $0.design == .baseline && !$0.quiet && !$0.twin }.map(\.nsPerPacket))
        return designs.map { d in
            let rs = results.filter { $0.design == d && !$0.quiet && !$0.twin }
            var overhead: Double?, ci: Double?
            let diffs = rs.compactMap { r in r.baselineNs.map { r.nsPerPacket - $0 } }
            if !diffs.isEmpty { (overhead, ci) = meanCI95(diffs) }
            var pct: Double?, pctCI: Double?
            let rel = rs.compactMap { r in r.baselineNs.map { (r.nsPerPacket - $0) / $0 * 100 } }
            if !rel.isEmpty { (pct, pctCI) = meanCI95(rel) }
            var blockMean: Double?, blockCI: Double?, blockPct: Double?, blockPctCI: Double?
            if blocks > 1 {
                let means = (0..<blocks).compactMap { b -> Double? in
                    let xs = rs.filter { $0.block == b }.compactMap { r in r.baselineNs.map { r.nsPerPacket - $0 } }
                    return xs.isEmpty ? nil : xs.reduce(0, +) / Double(xs.count)
                }
                if means.count >= 2 { (blockMean, blockCI) = meanCI95(means) }
                let pctMeans = (0..<blocks).compactMap { b -> Double? in
                    let xs = rs.filter { $0.block == b }.compactMap { r in r.baselineNs.map { (r.nsPerPacket - $0) / $0 * 100 } }
                    return xs.isEmpty ? nil : xs.reduce(0, +) / Double(xs.count)
                }
                if pctMeans.count >= 2 { (blockPct, blockPctCI) = meanCI95(pctMeans) }
            }
            var cost: Double?, costCI: Double?
            let costs = rs.compactMap { r in r.quietNs.map { (r.nsPerPacket - $0) / $0 * 100 } }
            if !costs.isEmpty { (cost, costCI) = meanCI95(costs) }
            let churn = rs.compactMap(\.churnRate)
            let gp = rs.compactMap(\.gracePeriodMeanNs)
            let twins = results.filter { $0.design == d && $0.twin }
            var twinRatio: Double?, twinRatioCI: Double?, twinDiff: Double?, twinDiffCI: Double?
            let pairs = rs.compactMap { r in r.twinNs.map { (r.nsPerPacket, $0) } }
            if !pairs.isEmpty {
                (twinRatio, twinRatioCI) = meanCI95(pairs.map { $0.0 / $0.1 })
                (twinDiff, twinDiffCI) = meanCI95(pairs.map { $0.0 - $0.1 })
            }
            var summary = DesignSummary(design: d, title: d.title, mppsMedian: median(rs.map(\.mpps)),
                                 nsPerPacketMedian: median(rs.map(\.nsPerPacket)),
                                 cyclesPerPacketMedian: median(rs.map(\.cyclesPerPacket)),
                                 overheadNs: overhead, overheadCI95: ci, windows: rs.count,
                                 churnCostPct: cost, churnCostCI95: costCI,
                                 churnRateMean: churn.isEmpty ? nil : churn.reduce(0, +) / Double(churn.count),
                                 gracePeriodMeanNs: gp.isEmpty ? nil : gp.reduce(0, +) / Double(gp.count),
                                 overheadPct: pct, overheadPctCI95: pctCI, blockOverheadNs: blockMean, blockCI95: blockCI)
            summary.blockOverheadPct = blockPct
            summary.blockPctCI95 = blockPctCI
            if let states {
                let diffs = rs.compactMap { r in r.baselineNs.map { (states.isFast(baselineNs: $0), r.nsPerPacket - $0) } }
                let fast = diffs.filter(\.0).map(\.1), slow = diffs.filter { !$0.0 }.map(\.1)
                if !fast.isEmpty { (summary.fastOverheadNs, summary.fastOverheadCI95) = meanCI95(fast); summary.fastWindows = fast.count }
                if !slow.isEmpty { (summary.slowOverheadNs, summary.slowOverheadCI95) = meanCI95(slow); summary.slowWindows = slow.count }
            }
            if !twins.isEmpty {
                summary.twinNsMedian = median(twins.map(\.nsPerPacket))
                summary.labOverTwin = twinRatio
                summary.labOverTwinCI95 = twinRatioCI
                summary.labMinusTwinNs = twinDiff
                summary.labMinusTwinCI95 = twinDiffCI
            }
            return summary
        }
    }
}

public func median(_ xs: [Double]) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Mean and the half-width of its 95% confidence interval (Student's t, n − 1 dof).
public func meanCI95(_ xs: [Double]) -> (Double, Double) {
    let n = xs.count
    guard n >= 2 else { return (xs.first ?? .nan, .nan) }
    let m = xs.reduce(0, +) / Double(n)
    let v = xs.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(n - 1)
    return (m, studentT975(n - 1) * (v / Double(n)).squareRoot())
}

/// The 97.5th percentile of Student's t with `dof` degrees of freedom, for any dof:
/// the t where the two-sided tail 1 − CDF is 0.025, found by bisection on the CDF
/// (which is the regularized incomplete beta I_{ν/(ν+t²)}(ν/2, 1/2)).
public func studentT975(_ dof: Int) -> Double {
    studentTQuantile(0.975, dof: dof)
}

/// The p-quantile (p > 0.5) of Student's t with `dof` degrees of freedom.
public func studentTQuantile(_ p: Double, dof: Int) -> Double {
    guard dof >= 1, p > 0.5, p < 1 else { return .nan }
    let nu = Double(dof)
    // Upper tail P(T > t) = I_{ν/(ν+t²)}(ν/2, 1/2) / 2.
    func tail(_ t: Double) -> Double { 0.5 * regularizedIncompleteBeta(nu / (nu + t * t), a: nu / 2, b: 0.5) }
    var lo = 0.0, hi = 1.0
    while tail(hi) > 1 - p { hi *= 2 }
    for _ in 0..<200 {
        let mid = (lo + hi) / 2
        if tail(mid) > 1 - p { lo = mid } else { hi = mid }
        if hi - lo < 1e-12 { break }
    }
    return (lo + hi) / 2
}

/// I_x(a, b), by the continued fraction (modified Lentz), using the symmetry
/// I_x(a, b) = 1 − I_{1−x}(b, a) where the fraction converges slowly.
func regularizedIncompleteBeta(_ x: Double, a: Double, b: Double) -> Double {
    if x <= 0 { return 0 }
    if x >= 1 { return 1 }
    let lnFront = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log(1 - x)
    if x > (a + 1) / (a + b + 2) { return 1 - regularizedIncompleteBeta(1 - x, a: b, b: a) }
    let tiny = 1e-300
    var c = 1.0, d = 1 - (a + b) * x / (a + 1)
    if abs(d) < tiny { d = tiny }
    d = 1 / d
    var f = d
    for m in 1...300 {
        let m = Double(m)
        // even step
        var num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1 + num * d; if abs(d) < tiny { d = tiny }
        c = 1 + num / c; if abs(c) < tiny { c = tiny }
        d = 1 / d
        f *= d * c
        // odd step
        num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 + num * d; if abs(d) < tiny { d = tiny }
        c = 1 + num / c; if abs(c) < tiny { c = tiny }
        d = 1 / d
        let delta = d * c
        f *= delta
        if abs(delta - 1) < 1e-15 { break }
    }
    return exp(lnFront) * f / a
}

/// The control-plane churn thread: one update kind at a steady rate. Each kind works on
/// the design's own objects when it has them (so packets cross the update), otherwise on
/// side objects of the same kind (so the cost is the shared machinery: fd table, ID
/// registry, locks, grace periods, deferred frees). Every update leaves the design's
/// verdicts unchanged, and the design is left as it was found.
final class Churner: @unchecked Sendable {
    let spec: ChurnSpec
    let setup: DesignSetup
    let bpf: BPF
    private let stopFlag = Atomic<Bool>(false)
    private let count = Atomic<UInt64>(0)
    private var thread: pthread_t?
    private var started: UInt64 = 0
    private var error: Error?
    private var sideFDs: [Int32] = []

    init(spec: ChurnSpec, setup: DesignSetup, bpf: BPF) {
        self.spec = spec
        self.setup = setup
        self.bpf = bpf
    }

    func start() throws {
        let me = self
        started = cbpf_ktime_get_ns()
        thread = try kthreadCreate(name: "churn") { me.loop() }
    }

    /// Updates done so far.
    var updates: UInt64 { count.load(ordering: .relaxed) }

    /// Stops; returns the achieved rate (updates per second).
    func stop() throws -> Double {
        stopFlag.store(true, ordering: .relaxed)
        if let t = thread { kthreadJoin(t) }
        let secs = Double(cbpf_ktime_get_ns() - started) / 1e9
        for fd in sideFDs.reversed() { try? bpf.objClose(fd) }
        if let error { throw error }
        return Double(count.load(ordering: .relaxed)) / secs
    }

    /// One kind of update: `step(n)` performs update n (even and odd undo each other),
    /// `finish(n)` restores the design after n updates.
    private struct Op {
        var step: (UInt64) throws -> Void
        var finish: (UInt64) -> Void = { _ in }
    }

    /// A freshly loaded program, as a control plane would load a new version each time.
    private func fresh() throws -> Int32 {
        setup.id == .tailInterp
            ? try bpf.progLoad(ProgLoadAttr(steps: StepProgram([.returnConst(3)]), name: "churn", jited: false))
            : try bpf.progLoad(ProgLoadAttr(body: .xdpTx, name: "churn"))
    }

    private func side(_ fd: Int32) -> Int32 {
        sideFDs.append(fd)
        return fd
    }

    private func makeOp() throws -> Op {
        let zero: [UInt8] = [0, 0, 0, 0]
        switch spec.kind {
        case .chain:
            // CHAIN_ADD / CHAIN_DEL of the XDP_TX slot (unused by every design).
            let prev = try setup.chainPrev ?? side(bpf.progLoad(ProgLoadAttr(body: .xdpPass, name: "churn_prev", flags: .chainCalls)))
            return Op(step: { [self] n in
                if n % 2 == 0 {
                    let p = try fresh()
                    defer { try? bpf.objClose(p) }
                    try bpf.progChainAdd(prev: prev, retcode: 3, next: p)
                } else {
                    try bpf.progChainDel(prev: prev, retcode: 3)
                }
            }, finish: { [self] n in if n % 2 == 1 { try? bpf.progChainDel(prev: prev, retcode: 3) } })
        case .progArray:
            // Update / delete of the design's spare slot (no packet jumps through it).
            let array = try setup.progArray ?? side(bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: 2, name: "churn_jmp")))
            let key = u32Bytes(setup.progArray == nil ? 1 : setup.spareSlot)
            return Op(step: { [self] n in
                if n % 2 == 0 {
                    let p = try fresh()
                    defer { try? bpf.objClose(p) }
                    try bpf.mapUpdateElem(array, key: key, value: u32Bytes(UInt32(bitPattern: p)))
                } else {
                    try bpf.mapDeleteElem(array, key: key)
                }
            }, finish: { [self] n in if n % 2 == 1 { try? bpf.mapDeleteElem(array, key: key) } })
        case .link:
            // BPF_LINK_UPDATE of an XDP link on a second device, to a newly loaded program
            // each time (the old one is freed after a grace period). The bench device keeps
            // its legacy attachment, so every design's packets run unchanged.
            let dev = NetDevice(kernel: bpf.kernel, name: "churn0", ifindex: 98)
            let first = try side(bpf.progLoad(ProgLoadAttr(body: .xdpDrop, name: "churn_link")))
            let link = try side(bpf.linkCreate(LinkCreateAttr(progFD: first, device: dev, attachType: .xdp)))
            return Op(step: { [self] _ in
                let p = try bpf.progLoad(ProgLoadAttr(body: .xdpDrop, name: "churn_link"))
                defer { try? bpf.objClose(p) }
                try bpf.linkUpdate(link, newProgFD: p)
            })
        case .dispatcher:
            // bpf_dispatcher_change_prog on the kernel's XDP dispatcher: a new program in,
            // then out again; each change rebuilds the inactive half and waits a grace
            // period. When the table is full, a known target other than the design's own is
            // swapped out for the new program and back, so a hit stays a hit.
            let disp = bpf.kernel.xdpDispatcher!
            let own = try bpf.prog(setup.root)
            defer { own.put() }
            let known = disp.knownTargets
            let victim = known.count >= Int(CBPF_DISPATCHER_MAX) ? known.first { $0 !== own } : nil
            victim?.inc()  // the churner's own reference while it may be out of the table
            var current: BPFProg?
            return Op(step: { [self] n in
                if n % 2 == 0 {
                    let fd = try fresh()
                    defer { try? bpf.objClose(fd) }
                    let p = try bpf.prog(fd)
                    current = p
                    disp.change(from: victim, to: p)
                } else {
                    disp.change(from: current, to: victim)
                    current?.put()
                    current = nil
                }
            }, finish: { _ in
                if let p = current {
                    disp.change(from: p, to: victim)
                    p.put()
                }
                victim?.put()
            })
        case .staticKey:
            // Static-key map updates: the design's key flipped and back (the hook it
            // guards returns PASS, which the DROP after it ignores), or a side key whose
            // one branch site sits in a side program.
            var key = setup.staticKey ?? -1
            if key < 0 {
                key = try side(bpf.mapCreate(MapCreateAttr(type: .staticKey, maxEntries: 1, name: "churn_key")))
                _ = try side(bpf.progLoad(ProgLoadAttr(steps: StepProgram([.staticBranch(keyFD: key, call: 0), .returnConst(1)],
                                                                       subprogs: [[.returnConst(2)]], subprogNames: ["hook"]),
                                                     name: "churn_site")))
            }
            let initial: UInt8 = setup.id == .staticKeyOn ? 1 : 0
            return Op(step: { [self] n in
                try bpf.mapUpdateElem(key, key: zero, value: [n % 2 == 0 ? 1 - initial : initial, 0, 0, 0])
            }, finish: { [self] n in
                if n % 2 == 1 { try? bpf.mapUpdateElem(key, key: zero, value: [initial, 0, 0, 0]) }
            })
        }
    }

    private func loop() {
        var n: UInt64 = 0
        var op: Op?
        do {
            op = try makeOp()
            let interval = UInt64(1e9 / min(ChurnSpec.maxRate, max(ChurnSpec.minRate, spec.rate)))
            var next = cbpf_ktime_get_ns()
            while !stopFlag.load(ordering: .relaxed) {
                try op!.step(n)
                n += 1
                count.store(n, ordering: .relaxed)
                next += interval
                while !stopFlag.load(ordering: .relaxed) {
                    let now = cbpf_ktime_get_ns()
                    if now >= next { break }
                    let left = next - now
                    // Sleep in slices of at most 1 ms, so stop() is seen within 1 ms
                    // however slow the rate.
                    if left > 200_000 { cbpf_usleep(UInt32(min(1000, left / 2000))) } else { cbpf_sched_yield() }
                }
            }
        } catch {
            self.error = error
        }
        op?.finish(n)  // leave the design as it was
    }
}
