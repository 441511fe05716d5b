// The packet driver's accounting, the verdict cross-check, NUMA placement and fallback,
// option parsing, and the CLI's handling of bad option values.
import XCTest
import CBPFShims
import Synchronization
@testable import BPFKernel
@testable import PacketHarness
@testable import bpflab

    /// Runs `threads` workers for `ms` on a device running `attr`, returns their counters.
func drive(_ attr: ProgLoadAttr, frames: FrameSpec, threads: Int = 2, ms: UInt32 = 100,
           numa: NUMAPolicy = .auto) throws -> (QueueCounters, [QueueCounters], Kernel) {
    let kernel = Kernel(KernelConfig(checked: true))
    let bpf = BPF(kernel: kernel)
    let dev = NetDevice(kernel: kernel, name: "t0", queues: threads)
    let fd = try bpf.progLoad(attr)
    try bpf.xdpAttach(dev, fd: fd)
    let control = RunControl()
    let workers = try (0..<threads).map { try QueueWorker(queue: $0, cpu: $0 % Int(cbpf_nr_cpus_online()), frames: frames, numa: numa) }
    for w in workers { try w.start(dev: dev, control: control, warmupPolls: 10) }
    while control.ready.load(ordering: .acquiring) < threads { cbpf_usleep(100) }
    control.go.store(true, ordering: .releasing)
    cbpf_usleep(ms * 1000)
    control.stop.store(true, ordering: .relaxed)
    for w in workers { w.join() }
    dev.detachAll()
    bpf.closeAll()
    kernel.quiesce()
    XCTAssertEqual(kernel.liveObjects, 0)
    let per = workers.map(\.result)
    return (per.reduce(.zero, +), per, kernel)
}

final class ConcurrencyDriverTests: XCTestCase {
    func testEveryReceivedPacketGetsExactlyOneVerdict() throws {
        // Verdict = UDP source port % 7: flows map to all five actions and two invalid codes.
        let (sum, per, _) = try drive(ProgLoadAttr(body: .xdpPortMod, data: key(7)), frames: FrameSpec(size: 64, flows: 14))
        for q in per {
            XCTAssertTrue(q.balanced, "received \(q.received) ≠ sum of verdicts \(q.verdicts)")
            XCTAssertEqual(q.received, q.polls * 64, "NAPI budget of 64 per poll")
            XCTAssertGreaterThan(q.received, 0)
        }
        XCTAssertTrue(sum.balanced)
        XCTAssertGreaterThan(sum.invalid, 0, "codes 5 and 6 are invalid actions")
        XCTAssertGreaterThanOrEqual(sum.verdicts[0], sum.invalid, "invalid ones are counted as ABORTED too")
        for v in 1...4 { XCTAssertGreaterThan(sum.verdicts[v], 0, "flows reach \(verdictNames[v])") }
    }

    func testFramesAreWellFormedUDP() throws {
        let spec = FrameSpec(size: 128, flows: 3)
        let f = spec.frame(flow: 2)
        XCTAssertEqual(f.count, 128)
        XCTAssertEqual(Array(f[12...13]), [0x08, 0x00], "IPv4 ethertype")
        XCTAssertEqual(f[23], 17, "UDP")
        XCTAssertEqual(Int(f[34]) << 8 | Int(f[35]), 1026, "flow 2's source port")
        var sum: UInt32 = 0
        for i in stride(from: 14, to: 34, by: 2) { sum += UInt32(f[i]) << 8 | UInt32(f[i + 1]) }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        XCTAssertEqual(sum, 0xffff, "the IPv4 header checksum verifies")
        XCTAssertThrowsError(try FrameSpec(size: 59).validate())
        XCTAssertThrowsError(try FrameSpec(size: 1515).validate())
        XCTAssertThrowsError(try FrameSpec(flows: 0).validate())
    }

    func testNUMAPlacementAndFallback() throws {
        let off = try RxRing(entries: 8, frames: FrameSpec(), numa: .off, cpu: 0)
        XCTAssertEqual(off.placement, "heap (NUMA placement off)")
        let auto = try RxRing(entries: 8, frames: FrameSpec(), numa: .auto, cpu: 0)
        XCTAssertTrue(auto.placement.hasPrefix("node ") || auto.placement.hasPrefix("heap (NUMA unavailable"),
                      "auto places on the CPU's node or says why not: \(auto.placement)")
        XCTAssertThrowsError(try RxRing(entries: 8, frames: FrameSpec(), numa: .node(4096), cpu: 0)) { e in
            XCTAssertTrue("\(e)".contains("4096") || "\(e)".isEmpty == false)
        }
        // Whatever the placement, the driver works and its accounting holds.
        let (sum, _, _) = try drive(ProgLoadAttr(body: .xdpDrop), frames: FrameSpec(), threads: 1, ms: 30, numa: .off)
        XCTAssertTrue(sum.balanced)
        XCTAssertEqual(sum.verdicts[1], sum.received)
    }

    func testOptionParsingErrors() {
        XCTAssertThrowsError(try NUMAPolicy(parsing: "near"))
        XCTAssertEqual(try NUMAPolicy(parsing: "1"), .node(1))
        XCTAssertThrowsError(try ChurnSpec(parsing: "chain"))
        XCTAssertThrowsError(try ChurnSpec(parsing: "teleport:100"))
        XCTAssertThrowsError(try ChurnSpec(parsing: "chain:-5"))
        XCTAssertEqual(try ChurnSpec(parsing: "prog_array:2500"), ChurnSpec(kind: .progArray, rate: 2500))
        XCTAssertThrowsError(try DesignID.parseList("chain-pass,warp-drive"))
        XCTAssertEqual(try DesignID.parseList("tail-jit"), [.baseline, .tailJIT], "the baseline is always measured")
        var c = BenchConfig()
        c.trials = 1
        XCTAssertThrowsError(try c.validate(), "a confidence interval needs two trials")
        c = BenchConfig()
        c.threads = 0
        XCTAssertThrowsError(try c.validate())
        XCTAssertThrowsError(try Bench(BenchConfig(), kernel: Kernel(KernelConfig(checked: true))),
                             "benchmarks refuse a checked kernel")
    }
}

final class ConcurrencyBenchTests: XCTestCase {
    func testCrossCheckRefusesDesignsThatDisagree() throws {
        let kernel = Kernel(.fast)
        let bpf = BPF(kernel: kernel)
        let dev = NetDevice(kernel: kernel, name: "x0")
        let good = try DesignSetup.make(.baseline, bpf: bpf)
        let chain = try DesignSetup.make(.chainPass, bpf: bpf)
        XCTAssertNoThrow(try Bench.crossCheck([good, chain], bpf: bpf, device: dev, frames: FrameSpec(flows: 4)))
        let passFD = try bpf.progLoad(ProgLoadAttr(body: .xdpPass, name: "liar"))
        let bad = DesignSetup(id: .chainUnused, root: passFD, fds: [passFD], chainPrev: nil, progArray: nil)
        XCTAssertThrowsError(try Bench.crossCheck([good, bad], bpf: bpf, device: dev, frames: FrameSpec(flows: 4))) { e in
            XCTAssertTrue("\(e)".contains("do not implement the same policy"), "\(e)")
        }
        bpf.closeAll()
        kernel.quiesce()
        XCTAssertEqual(kernel.liveObjects, 0)
    }

    /// A tiny run with churn: every trial balances, every design drops every packet, and
    /// the churn happened.
    func testBenchAccountingHoldsUnderChurn() throws {
        for kind in ChurnSpec.Kind.allCases {
            var c = BenchConfig()
            c.designs = [.baseline, .chainPass, .tailDirect, .dispatcherHit, .staticKeyOn]
            c.trials = 2
            c.targetCI = 0
            c.duration = 0.02
            c.churn = ChurnSpec(kind: kind, rate: 2000)
            let bench = try Bench(c)
            let report = try bench.run()
            XCTAssertEqual(report.results.count, 2 * 9 * 2, "B d B d B d B d B per trial, each window also measured quiet")
            // Each churned window sits next to a quiet one of the same design, trial and
            // position; the churn's price is computed from those pairs.
            let quiet = report.results.filter(\.quiet)
            XCTAssertEqual(quiet.count, 18)
            for r in report.results where !r.quiet {
                let q = quiet.first { $0.design == r.design && $0.trial == r.trial && $0.window == r.window }
                XCTAssertEqual(r.quietNs, q?.nsPerPacket, "\(kind): \(r.design) trial \(r.trial) window \(r.window)")
                XCTAssertNil(q?.churnRate, "the quiet window ran no churn")
            }
            XCTAssertTrue(report.summaries.allSatisfy { $0.churnCostPct != nil && $0.windows == ($0.design == .baseline ? 10 : 2) })
            for r in report.results {
                XCTAssertTrue(r.counters.balanced, "\(r.design) trial \(r.trial)")
                XCTAssertEqual(r.counters.verdicts[1], r.counters.received, "\(r.design): every packet dropped")
                XCTAssertGreaterThan(r.counters.received, 0)
                if !r.quiet { XCTAssertGreaterThan(r.churnRate ?? 0, 0, "\(kind): churn ran") }
            }
            XCTAssertEqual(bench.kernel.liveObjects, 0, "designs and churn programs all released")
            XCTAssertTrue(report.table().contains("After patch (XDP DROP program)"))
            XCTAssertTrue(report.csv().hasPrefix("design,trial,"))
            XCTAssertTrue(report.svg().hasPrefix("<svg"))
        }
    }

    /// Every design window sits between two baseline windows and is compared with their
    /// mean; the summary's overhead is the mean of those differences.
    func testEachDesignIsComparedWithTheBaselineWindowsAroundIt() throws {
        var c = BenchConfig()
        c.designs = [.baseline, .chainPass, .tailJIT]
        c.trials = 3
        c.targetCI = 0
        c.duration = 0.01
        let report = try Bench(c).run()
        XCTAssertEqual(report.results.count, 3 * 5)
        XCTAssertEqual(report.rounds, 3)
        for t in 0..<3 {
            let ws = report.results.filter { $0.trial == t }.sorted { $0.window < $1.window }
            XCTAssertEqual(ws.map(\.window), [0, 1, 2, 3, 4])
            XCTAssertEqual(ws.enumerated().filter { $0.offset % 2 == 0 }.map(\.element.design), [.baseline, .baseline, .baseline])
            XCTAssertEqual(Set(ws.filter { $0.design != .baseline }.map(\.design)), [.chainPass, .tailJIT])
            for i in [1, 3] {
                XCTAssertEqual(ws[i].baselineNs!, (ws[i - 1].nsPerPacket + ws[i + 1].nsPerPacket) / 2, accuracy: 1e-9)
            }
            XCTAssertTrue(ws.filter { $0.design == .baseline }.allSatisfy { $0.baselineNs == nil })
        }
        // Alternate trials reverse the order.
        let first = report.results.filter { $0.trial == 0 && $0.window == 1 }[0].design
        let second = report.results.filter { $0.trial == 1 && $0.window == 1 }[0].design
        XCTAssertNotEqual(first, second)
        let cp = report.summaries.first { $0.design == .chainPass }!
        let diffs = report.results.filter { $0.design == .chainPass }.map { $0.nsPerPacket - $0.baselineNs! }
        XCTAssertEqual(cp.overheadNs!, diffs.reduce(0, +) / 3, accuracy: 1e-9)
        XCTAssertEqual(cp.windows, 3)
        XCTAssertEqual(report.summaries.first { $0.design == .baseline }!.windows, 9)
    }

    /// --twin: every lab window is followed by its C twin on the same objects; the twin
    /// gets every packet's verdict (DROP, as the lab's) and counts each packet once, and
    /// lab / twin is the mean of the window pairs' ratios. Each runner kind has a twin.
    func testEachWindowsCTwinRunsTheSameDesignAndIsPairedWithIt() throws {
        var c = BenchConfig()
        c.designs = [.beforePatch, .baseline, .chainPass, .tailJIT, .dispatcherMiss, .runAll]
        c.trials = 2
        c.targetCI = 0
        c.duration = 0.01
        c.twin = true
        let report = try Bench(c).run()
        let lab = report.results.filter { !$0.twin }, twins = report.results.filter(\.twin)
        XCTAssertEqual(lab.count, 2 * 11)
        XCTAssertEqual(twins.count, lab.count, "one twin window per lab window")
        for t in twins {
            XCTAssertGreaterThan(t.counters.received, 0, "\(t.design): the twin ran")
            XCTAssertTrue(t.counters.balanced, "\(t.design): every packet counted once")
            XCTAssertEqual(t.counters.verdicts[1], t.counters.received, "\(t.design): the twin dropped every packet")
            let partner = lab.first { $0.design == t.design && $0.trial == t.trial && $0.window == t.window }
            XCTAssertEqual(partner?.twinNs, t.nsPerPacket, "\(t.design): paired with the lab window it followed")
        }
        for s in report.summaries {
            let pairs = lab.filter { $0.design == s.design }.map { $0.nsPerPacket / $0.twinNs! }
            XCTAssertEqual(s.labOverTwin!, pairs.reduce(0, +) / Double(pairs.count), accuracy: 1e-9, "\(s.design)")
            XCTAssertEqual(s.windows, lab.filter { $0.design == s.design }.count, "twin windows are not counted as the design's")
        }
        XCTAssertTrue(report.table().contains("lab / C twin"))
        var both = c
        both.churn = ChurnSpec(kind: .chain, rate: 100)
        XCTAssertThrowsError(try both.validate(), "--twin with --churn")
    }

    /// --cpus: each worker pinned where it was told, and the report says where it ran.
    func testEachWorkerRunsOnTheCPUItWasGivenAndTheReportSaysWhere() throws {
        var c = BenchConfig()
        c.designs = [.baseline]
        c.trials = 2
        let last = Int(cbpf_nr_cpus_online()) - 1
        c.cpus = [last]
        XCTAssertEqual(c.cpu(forWorker: 0), last)
        let r = try Bench(c).run()
        XCTAssertEqual(r.placement.count, 1)
        XCTAssertTrue(r.placement[0].contains("CPU \(last) (pinned, ran on CPU \(last))"), r.placement[0])
        XCTAssertFalse(r.table().contains("PIN FAILED"))
    }

    /// The baseline alone (a scaling run) is measured in plain windows, one per trial.
    func testTheBaselineAloneIsMeasured() throws {
        var c = BenchConfig()
        c.designs = [.baseline]
        c.trials = 3
        c.duration = 0.01
        let report = try Bench(c).run()
        XCTAssertEqual(report.results.count, 3)
        XCTAssertTrue(report.results.allSatisfy { $0.design == .baseline && $0.counters.received > 0 && $0.baselineNs == nil })
        XCTAssertEqual(report.rounds, 3)
        XCTAssertNil(report.summaries[0].overheadNs)
    }

    /// After the minimum trials only designs whose interval is still wider than the target
    /// are measured again; the time budget ends the rounds and names what missed.
    func testSequentialRoundsStopAtTheTargetOrTheTimeBudget() throws {
        var c = BenchConfig()
        c.designs = [.baseline, .chainPass, .tailJIT]
        c.trials = 2
        c.duration = 0.01
        c.targetCI = 1e9  // met at once
        var report = try Bench(c).run()
        XCTAssertEqual(report.rounds, 2)
        XCTAssertTrue(report.targetMissed.isEmpty)
        c.targetCI = 1e-6  // never met: the round limit ends it
        c.maxTrials = 4
        report = try Bench(c).run()
        XCTAssertEqual(report.rounds, 4, "rounds continued after the minimum trials, up to the limit")
        XCTAssertEqual(Set(report.targetMissed), [.chainPass, .tailJIT])
        XCTAssertTrue(report.table().contains("not reached"))
        XCTAssertTrue(report.json().contains("\"target_missed\":[\""))
        for s in report.summaries where s.design != .baseline {
            XCTAssertEqual(s.windows, 4, "an open design is measured every round")
        }
        c.maxTrials = 1000
        c.maxTime = 0.001  // spent before the first check: only the minimum trials run
        report = try Bench(c).run()
        XCTAssertEqual(report.rounds, 2)
        XCTAssertEqual(Set(report.targetMissed), [.chainPass, .tailJIT])
    }

    /// Each churn kind's updates undo each other: after any number of them the design's
    /// objects are as they were (dispatcher table, static key, chain slot, array slot), a
    /// full bpf_dispatcher keeps the design's program a hit, and every packet meanwhile
    /// got the design's verdict.
    func testChurnLeavesTheDesignAsItFoundIt() throws {
        let cases: [(ChurnSpec.Kind, DesignID)] = [(.dispatcher, .dispatcherHit), (.dispatcher, .baseline),
                                                   (.staticKey, .staticKeyOn), (.staticKey, .staticKeyOff),
                                                   (.chain, .chainPass), (.progArray, .tailJIT), (.link, .baseline)]
        for (kind, design) in cases {
            let kernel = Kernel(.fast)
            let bpf = BPF(kernel: kernel)
            let dev = NetDevice(kernel: kernel, name: "t0", ifindex: 1)
            let s = try DesignSetup.make(design, bpf: bpf)
            let disp = kernel.xdpDispatcher!
            let targetsBefore = Set(disp.knownTargets.map(ObjectIdentifier.init))
            let keyBefore = try s.staticKey.map { try bpf.mapLookupElem($0, key: [0, 0, 0, 0]) }
            let root = try bpf.prog(s.root)
            let slotsBefore = (0..<Int(CBPF_NUM_CHAIN_SLOTS)).map { root.chainSlot($0).map(ObjectIdentifier.init) }
            let updatesBefore = disp.updates
            try bpf.xdpAttach(dev, fd: s.root)
            for rounds in [1, 2, 5] {  // odd counts leave an update to undo
                let ch = Churner(spec: ChurnSpec(kind: kind, rate: 1_000_000), setup: s, bpf: bpf)
                // This thread runs packets while the churner updates: it must be an RCU
                // reader reporting quiescent states, as the driver's workers are.
                let reader = kernel.rcu.registerThread(name: "test")
                try ch.start()
                var f = FrameSpec().frame(flow: 0)
                while ch.updates < rounds {
                    reader.quiescentState()
                    XCTAssertEqual(f.withUnsafeMutableBufferPointer { b in
                        var md = cbpf_xdp_md()
                        md.data = b.baseAddress!
                        md.data_end = b.baseAddress! + b.count
                        return s.runOnce(dev, &md)
                    }, UInt32(1), "\(kind) on \(design): DROP while churning")
                    if design == .dispatcherHit {
                        // isKnown takes the dispatcher's mutex, which an update holds while it
                        // waits a grace period: a reader must not block online.
                        reader.handle.offline()
                        XCTAssertTrue(disp.isKnown(root), "\(kind): the design's program stays a hit")
                        reader.handle.online()
                    }
                }
                reader.handle.offline()  // before waiting for a churner that may be waiting for us
                XCTAssertGreaterThan(try ch.stop(), 0)
                kernel.rcu.unregisterThread(reader)
                XCTAssertEqual(Set(disp.knownTargets.map(ObjectIdentifier.init)), targetsBefore, "\(kind) on \(design): dispatcher table restored")
                XCTAssertEqual(try s.staticKey.map { try bpf.mapLookupElem($0, key: [0, 0, 0, 0]) }, keyBefore, "\(kind) on \(design): key restored")
                XCTAssertEqual((0..<Int(CBPF_NUM_CHAIN_SLOTS)).map { root.chainSlot($0).map(ObjectIdentifier.init) }, slotsBefore, "\(kind) on \(design): chain slots restored")
                if let a = s.progArray {
                    XCTAssertThrowsError(try bpf.mapLookupElem(a, key: [1, 0, 0, 0]), "\(kind) on \(design): spare slot empty again")
                }
            }
            if kind == .dispatcher { XCTAssertGreaterThan(disp.updates, updatesBefore + 3, "every dispatcher update rebuilt the image") }
            root.put()
            try bpf.xdpAttach(dev, fd: -1)
            s.close(bpf)
            bpf.closeAll()
            kernel.quiesce()
            XCTAssertEqual(kernel.liveObjects, 0, "\(kind) on \(design): nothing leaked")
        }
    }

    func testConfidenceIntervalMath() {
        let (m, h) = meanCI95([1, 2, 3, 4, 5])
        XCTAssertEqual(m, 3, accuracy: 1e-12)
        XCTAssertEqual(h, 2.7764451 * (2.5 / 5).squareRoot(), accuracy: 1e-6)  // t(4), exact to 7 digits
        XCTAssertEqual(median([5, 1, 3]), 3)
        XCTAssertEqual(median([4, 1, 3, 2]), 2.5)
        XCTAssertTrue(meanCI95([7]).1.isNaN)
    }
}

final class CLITests: XCTestCase {
    func testInvalidOptionValuesAreErrorsNotCrashes() {
        let bad: [[String]] = [
            ["bench", "--threads", "many"],
            ["bench", "--threads", "0"],
            ["bench", "--trials", "1"],
            ["bench", "--format", "xml"],
            ["bench", "--churn", "chain"],
            ["bench", "--numa", "far"],
            ["bench", "--designs", "nope"],
            ["bench", "--packet-size", "10"],
            ["bench", "--target-ci", "-1"],
            ["bench", "--max-time", "0"],
            ["prog", "frobnicate"],
            ["bench", "--cpus", "0,x"],
            ["bench", "--cpus", "99"],
            ["bench", "--cpus", "0,0"],
            ["bench", "--cpus", "0", "--threads", "2"],
            ["sweep", "--designs", "ext-slot"],
            ["sweep", "--n", "4-1"],
            ["bench", "--twin", "--churn", "chain:100"],
        ]
        for args in bad {
            do {
                var cmd = try BPFLab.parseAsRoot(args)
                try cmd.run()
                XCTFail("\(args) was accepted")
            } catch {
                let code = BPFLab.exitCode(for: error)
                XCTAssertNotEqual(code.rawValue, 0, "\(args)")
                XCTAssertFalse(BPFLab.message(for: error).isEmpty, "\(args) gives a message")
            }
        }
    }

    func testABadBenchOptionShowsTheBenchUsageNotTheRoots() {
        // Options are checked in validate(), where ArgumentParser knows the subcommand.
        for args in [["bench", "--designs", "tail-jitt"], ["bench", "--threads", "64"], ["bench", "--numa", "far"]] {
            do {
                _ = try BPFLab.parseAsRoot(args)
                XCTFail("\(args) was accepted")
            } catch {
                let text = BPFLab.fullMessage(for: error)
                XCTAssertTrue(text.contains("Usage: bpflab bench"), "\(args): \(text)")
            }
        }
    }

    func testListAndVersion() throws {
        var list = try BPFLab.parseAsRoot(["bench", "--list"])
        XCTAssertNoThrow(try list.run())
        XCTAssertEqual(BPFLab.configuration.version, bpflabVersion)
    }
}

func key(_ i: UInt32) -> [UInt8] { withUnsafeBytes(of: i.littleEndian) { Array($0) } }
