// Driver.swift — the packet driver: one RX ring per queue with pre-filled buffers, one
// worker thread per queue pinned to a CPU, NAPI-style polling with a budget of 64.
//
// Mirrors the shape of an XDP-capable driver's receive path (e.g. drivers/net/veth.c
// veth_xdp_rcv, and the mlx5/i40e NAPI poll loops): for each descriptor up to the budget,
// build the xdp_buff, run the device's program (rcu_dereference(dev->xdp_prog) then
// bpf_prog_run_xdp), act on the verdict, recycle the buffer; after the poll the CPU passes
// through a quiescent state (here: an explicit QSBR report). A verdict that is not a valid
// XDP action is treated as XDP_ABORTED and counted as invalid, as drivers do
// (bpf_warn_invalid_xdp_action).
//
// The per-packet path touches raw memory only: the ring, the context on the worker's
// stack, the counters block. No ARC, lock, allocation or existential per packet.
import CBPFShims
import CNuma
import BPFKernel
import BPFLabTwins
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where RX buffers live.
public enum NUMAPolicy: Sendable, Equatable, CustomStringConvertible {
    case auto        // the node of the worker's CPU, if libnuma says NUMA is available
    case off         // ordinary aligned memory
    case node(Int)   // a fixed node

    public init(parsing s: String) throws {
        switch s {
        case "auto": self = .auto
        case "off": self = .off
        default:
            guard let n = Int(s), n >= 0 else {
                throw HarnessError("--numa takes auto, off or a node number (got '\(s)')")
            }
            self = .node(n)
        }
    }

    /// Every value --numa can take on this machine: auto, off, and each node's number.
    public static var spellings: [String] {
        ["auto", "off"] + (numa_available() < 0 ? ["0"] : (0...Int(numa_max_node())).map(String.init))
    }

    public var description: String {
        switch self {
        case .auto: return "auto"
        case .off: return "off"
        case let .node(n): return "node \(n)"
        }
    }
}

/// Verdict counter slots: the five XDP actions, then "invalid" (also counted as ABORTED).
public let verdictSlots = 6
public let verdictNames = ["ABORTED", "DROP", "PASS", "TX", "REDIRECT"]

/// One RX ring: `entries` descriptors, each a 2 KiB buffer with XDP headroom, filled with
/// frames of the flows round-robin.
public final class RxRing: @unchecked Sendable {
    public static let bufferSize = 2048
    public let entries: Int
    public let mask: Int
    public let buffers: UnsafeMutableRawPointer
    public let lengths: UnsafeMutablePointer<Int32>
    /// Where the buffers were placed, in words ("node 0", or why not).
    public let placement: String
    private let numaAllocated: Bool
    private let bytes: Int

    public init(entries: Int = 512, frames: FrameSpec, numa: NUMAPolicy, cpu: Int) throws {
        precondition(entries > 0 && entries & (entries - 1) == 0)
        self.entries = entries
        self.mask = entries - 1
        bytes = entries * RxRing.bufferSize
        var placed: UnsafeMutableRawPointer?
        var where_ = ""
        var numaOK = false
        switch numa {
        case .off:
            where_ = "heap (NUMA placement off)"
        case .auto, .node:
            if numa_available() < 0 {
                where_ = "heap (NUMA unavailable: libnuma's numa_available() < 0)"
            } else {
                let node: Int32
                if case let .node(n) = numa {
                    guard n <= Int(numa_max_node()) else {
                        throw HarnessError("NUMA node \(n) does not exist (highest is \(numa_max_node()))")
                    }
                    node = Int32(n)
                } else {
                    node = max(0, numa_node_of_cpu(Int32(cpu)))
                }
                if let p = numa_alloc_onnode(bytes, node) {
                    placed = p
                    numaOK = true
                    where_ = "node \(node)"
                } else {
                    where_ = "heap (numa_alloc_onnode(\(node)) failed)"
                }
            }
        }
        if placed == nil {
            placed = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        }
        buffers = placed!
        numaAllocated = numaOK
        placement = where_
        buffers.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        lengths = .allocate(capacity: entries)
        for i in 0..<entries {
            let f = frames.frame(flow: i % frames.flows)
            f.withUnsafeBytes { (buffers + i * RxRing.bufferSize + xdpPacketHeadroom).copyMemory(from: $0.baseAddress!, byteCount: f.count) }
            lengths[i] = Int32(f.count)
        }
    }

    deinit {
        if numaAllocated { numa_free(buffers, bytes) } else { buffers.deallocate() }
        lengths.deallocate()
    }
}

/// A worker's counters, in raw memory the poll loop writes.
public struct QueueCounters: Sendable, Equatable, Codable {
    public var verdicts: [UInt64]   // ABORTED, DROP, PASS, TX, REDIRECT
    public var invalid: UInt64
    public var received: UInt64
    public var cycles: UInt64
    public var polls: UInt64
    /// TSC cycles per packet of the window's batches at the chosen quantile (the median
    /// by default: robust to interrupts and steal time); 0 if no batch completed.
    public var medianCyclesPerPacket: Double = 0

    public static let zero = QueueCounters(verdicts: [0, 0, 0, 0, 0], invalid: 0, received: 0, cycles: 0, polls: 0)

    /// received = ABORTED + DROP + PASS + TX + REDIRECT (invalid ones are in ABORTED).
    public var balanced: Bool { verdicts.reduce(0, +) == received }

    public static func + (a: QueueCounters, b: QueueCounters) -> QueueCounters {
        QueueCounters(verdicts: zip(a.verdicts, b.verdicts).map { $0 + $1 }, invalid: a.invalid + b.invalid,
                      received: a.received + b.received, cycles: a.cycles + b.cycles, polls: a.polls + b.polls,
                      medianCyclesPerPacket: a.medianCyclesPerPacket + b.medianCyclesPerPacket)
    }
}

/// How the driver runs the device's program: BPF_PROG_RUN as patched by the RFC (the
/// chain-calls test on every run), as before the patch, through the kernel's
/// bpf_dispatcher, or — for the run-all design — BPF_PROG_RUN_ARRAY over a run array
/// instead of the device's program. A generic parameter, so each worker loop is
/// specialised and the per-packet path has no existential or branch for it.
public protocol ProgRunner {
    func run(_ prog: ProgPtr?, _ ctx: XDPContext) -> UInt32
}

/// BPF_PROG_RUN with the RFC's chain-calls test (the lab's normal path).
public struct PatchedProgRun: ProgRunner {
    public init() {}
    @inlinable @inline(__always)
    public func run(_ prog: ProgPtr?, _ ctx: XDPContext) -> UInt32 {
        guard let prog else { return UInt32(CBPF_XDP_PASS) }
        return bpfProgRun(prog, ctx)
    }
}

/// BPF_PROG_RUN before the RFC: no chain-calls test.
public struct UnpatchedProgRun: ProgRunner {
    public init() {}
    @inlinable @inline(__always)
    public func run(_ prog: ProgPtr?, _ ctx: XDPContext) -> UInt32 {
        guard let prog else { return UInt32(CBPF_XDP_PASS) }
        return bpfProgRunBeforePatch(prog, ctx)
    }
}

/// bpf_prog_run_xdp through BPF_DISPATCHER_FUNC(xdp).
public struct DispatchedProgRun: ProgRunner {
    public let dispatcher: UnsafePointer<cbpf_dispatcher>
    public init(dispatcher: UnsafePointer<cbpf_dispatcher>) { self.dispatcher = dispatcher }
    @inlinable @inline(__always)
    public func run(_ prog: ProgPtr?, _ ctx: XDPContext) -> UInt32 {
        guard let prog else { return UInt32(CBPF_XDP_PASS) }
        return bpfProgRunDispatched(dispatcher, prog, ctx)
    }
}

/// bpf_prog_run_xdp through the dispatcher's generated image (the machine engine).
public struct MachineDispatchedProgRun: ProgRunner {
    public let dispatcher: UnsafePointer<cbpf_dispatcher>
    public init(dispatcher: UnsafePointer<cbpf_dispatcher>) { self.dispatcher = dispatcher }
    @inlinable @inline(__always)
    public func run(_ prog: ProgPtr?, _ ctx: XDPContext) -> UInt32 {
        guard let prog else { return UInt32(CBPF_XDP_PASS) }
        return bpfProgRunMachineDispatched(dispatcher, prog, ctx)
    }
}

/// BPF_PROG_RUN_ARRAY over a run array (the device's own program is not used).
public struct RunArrayRun: ProgRunner {
    public let slot: UnsafePointer<UnsafeMutableRawPointer?>
    public init(slot: UnsafePointer<UnsafeMutableRawPointer?>) { self.slot = slot }
    @inlinable @inline(__always)
    public func run(_ prog: ProgPtr?, _ ctx: XDPContext) -> UInt32 {
        bpfProgRunArray(slot, ctx)  // each item starts with a fresh tail-call counter
    }
}

/// Which runner a design needs.
/// Generic (skb-mode) XDP: each packet goes through the do_xdp_generic kernel function,
/// which trampolines can attach to (scenarios; not a bench runner).
public struct GenericXDPRun: ProgRunner {
    public unowned(unsafe) let dev: NetDevice  // no ARC per packet; the caller keeps the device
    public init(dev: NetDevice) { self.dev = dev }
    public func run(_ prog: ProgPtr?, _ ctx: XDPContext) -> UInt32 {
        if let v = dev.receiveGeneric(ctx) { return v }
        guard let prog else { return UInt32(CBPF_XDP_PASS) }
        return bpfProgRun(prog, ctx)
    }
}

public enum RunnerKind: @unchecked Sendable {
    case patched
    case unpatched
    case dispatched(UnsafePointer<cbpf_dispatcher>)
    /// Through the dispatcher's generated image (the machine engine).
    case machineDispatched(UnsafePointer<cbpf_dispatcher>)
    case runArray(UnsafePointer<UnsafeMutableRawPointer?>)

    /// Calls `body` with this kind's runner as a concrete type, so whatever loop `body`
    /// runs is specialised for it. The one place the kinds are switched on.
    @inlinable @inline(__always)
    public func with<B: ProgRunnerBody>(_ body: B) -> B.Result {
        switch self {
        case .patched: return body(PatchedProgRun())
        case .unpatched: return body(UnpatchedProgRun())
        case let .dispatched(d): return body(DispatchedProgRun(dispatcher: d))
        case let .machineDispatched(d): return body(MachineDispatchedProgRun(dispatcher: d))
        case let .runArray(slot): return body(RunArrayRun(slot: slot))
        }
    }
}

/// Something to do with a runner of whichever concrete type a `RunnerKind` names (Swift
/// has no generic closures; this is one).
public protocol ProgRunnerBody {
    associatedtype Result
    func callAsFunction<R: ProgRunner>(_ runner: R) -> Result
}

/// One NAPI poll: up to `budget` packets from the ring, starting at `*head`.
/// Returns nothing; counts go to `counts` (slots per `verdictSlots`).
@inlinable @inline(__always)
public func napiPoll<R: ProgRunner>(_ runner: R, ring buffers: UnsafeMutableRawPointer, lengths: UnsafeMutablePointer<Int32>, mask: Int,
                     head: inout Int, budget: Int, dev: NetDevice, ctx: XDPContext,
                     counts: UnsafeMutablePointer<UInt64>) {
    let prog = dev.currentProg  // rcu_dereference once per poll, as drivers do
    for _ in 0..<budget {
        let i = head & mask
        head &+= 1
        let buf = (buffers + i &* RxRing.bufferSize).assumingMemoryBound(to: UInt8.self)
        let data = buf + xdpPacketHeadroom
        ctx.pointee.data_hard_start = buf
        ctx.pointee.data = data
        ctx.pointee.data_meta = data
        ctx.pointee.data_end = data + Int(lengths[i])
        let v: UInt32
        v = runner.run(prog, ctx)
        if _fastPath(v <= UInt32(CBPF_XDP_REDIRECT)) {
            counts[Int(v)] &+= 1
        } else {
            counts[0] &+= 1   // treated as XDP_ABORTED
            counts[5] &+= 1   // and counted as invalid
        }
        // DROP/ABORTED/PASS/TX/REDIRECT: the buffer goes back to the ring (recycled).
    }
}

/// The control block shared by the workers of one run.
public final class RunControl: @unchecked Sendable {
    public let go = Atomic<Bool>(false)
    public let stop = Atomic<Bool>(false)
    public let ready = Atomic<Int>(0)
    public init() {}
}

/// One queue's worker: pinned thread, RCU reader, its own ring.
public final class QueueWorker: @unchecked Sendable {
    /// Polls per timed batch (256 × 64 = 16,384 packets).
    public static let batchPolls = 256
    public static let maxBatches = 1 << 16
    public let queue: Int
    public let cpu: Int
    public let ring: RxRing
    public private(set) var result = QueueCounters.zero
    private var thread: pthread_t?
    public private(set) var pinned = false
    /// The CPU the worker found itself on after pinning (sched_getcpu), -1 if unknown.
    public private(set) var ranOn: Int32 = -1

    public init(queue: Int, cpu: Int, frames: FrameSpec, numa: NUMAPolicy) throws {
        self.queue = queue
        self.cpu = cpu
        ring = try RxRing(frames: frames, numa: numa, cpu: cpu)
    }

    /// Starts the thread: warm up until `control.go`, measure until `control.stop`.
    /// Which quantile of the batch times a window reports (0.5 = median).
    public var quantile = 0.5

    /// `twin`: run the plain-C twin of the driver loop (Perf/Twins) on the same ring and
    /// objects instead of the Swift one.
    public func start(dev: NetDevice, control: RunControl, runner: RunnerKind = .patched, twin: Bool = false,
                      warmupPolls: Int = 500, budget: Int = 64) throws {
        struct Loop: ProgRunnerBody {
            let worker: QueueWorker, dev: NetDevice, control: RunControl, warmupPolls: Int, budget: Int
            func callAsFunction<R: ProgRunner>(_ r: R) {
                worker.body(dev: dev, control: control, warmupPolls: warmupPolls, budget: budget) { h, head, ctx, counts, polls in
                    let ring = worker.ring
                    let buffers = ring.buffers, lengths = ring.lengths, mask = ring.mask
                    for _ in 0..<polls {
                        napiPoll(r, ring: buffers, lengths: lengths, mask: mask, head: &head, budget: budget, dev: dev, ctx: ctx, counts: counts)
                        h.quiescentState()
                    }
                }
            }
        }
        let loop = Loop(worker: self, dev: dev, control: control, warmupPolls: warmupPolls, budget: budget)
        let me = self
        if twin {
            thread = try kthreadCreate(name: "rxq\(queue)c") { me.twinBody(dev: dev, runner: runner, control: control, warmupPolls: warmupPolls, budget: budget) }
        } else {
            thread = try kthreadCreate(name: "rxq\(queue)") { runner.with(loop) }
        }
    }

    /// The twin's worker: the same timing loop around the C twin's polls.
    private func twinBody(dev: NetDevice, runner: RunnerKind, control: RunControl, warmupPolls: Int, budget: Int) {
        var q = twin_queue()
        switch runner {
        case .patched: q.kind = Int32(TWIN_PATCHED.rawValue)
        case .unpatched: q.kind = Int32(TWIN_UNPATCHED.rawValue)
        case let .dispatched(d):
            q.kind = Int32(TWIN_DISPATCHED.rawValue)
            q.dispatcher = d
        case let .machineDispatched(d):
            q.kind = Int32(TWIN_MACHINE_DISPATCHED.rawValue)
            q.dispatcher = d
        case let .runArray(slot):
            q.kind = Int32(TWIN_RUN_ARRAY.rawValue)
            q.run_array = UnsafeRawPointer(slot).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        }
        q.budget = Int32(budget)
        q.buffers = ring.buffers
        q.lengths = UnsafePointer(ring.lengths)
        q.mask = UInt64(ring.mask)
        q.dev_prog = UnsafeRawPointer(dev.xdpSlot).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        withUnsafeMutablePointer(to: &q) { qp in
            body(dev: dev, control: control, warmupPolls: warmupPolls, budget: budget) { h, head, ctx, counts, polls in
                if qp.pointee.rcu_rec == nil {  // the first call: the worker's own objects
                    qp.pointee.ctx = ctx
                    let w = h.rawWords
                    qp.pointee.rcu_rec = w.counter
                    qp.pointee.rcu_gp = UnsafePointer(w.gracePeriod)
                    qp.pointee.rcu_futex = w.futex
                }
                qp.pointee.counts = counts
                qp.pointee.head = UInt64(head)
                twin_run_polls(qp, UInt64(polls))
                head = Int(qp.pointee.head)
            }
        }
    }

    /// The worker thread: pinned, registered as an RCU reader; warm-up, then batches of
    /// `QueueWorker.batchPolls` polls timed until `control.stop`. `polls(h, &head, ctx,
    /// counts, n)` runs n polls, each followed by a quiescent state — specialised for one
    /// way of running programs (a closure call per batch, never per packet).
    fileprivate func body(dev: NetDevice, control: RunControl, warmupPolls: Int, budget: Int,
                          polls: (RCUReaderHandle, inout Int, XDPContext, UnsafeMutablePointer<UInt64>, Int) -> Void) {
        let domain = dev.kernel.rcu
        let me = self
        let quantile = self.quantile
        me.pinned = cbpf_set_affinity(Int32(me.cpu)) == 0
        cbpf_set_this_cpu(Int32(me.cpu))
        me.ranOn = cbpf_sched_getcpu()
        let reader = domain.registerThread(name: "rxq\(me.queue)")
        let h = reader.handle
        let counts = UnsafeMutablePointer<UInt64>.allocate(capacity: verdictSlots)
        counts.initialize(repeating: 0, count: verdictSlots)
        var md = cbpf_xdp_md()
        md.ingress_ifindex = dev.ifindex
        md.rx_queue_index = UInt32(me.queue)
        var head = 0
        let batches = UnsafeMutablePointer<UInt64>.allocate(capacity: QueueWorker.maxBatches)
        withUnsafeMutablePointer(to: &md) { ctx in
            polls(h, &head, ctx, counts, warmupPolls)
            control.ready.add(1, ordering: .releasing)
            while !control.go.load(ordering: .acquiring) { polls(h, &head, ctx, counts, 1) }
            counts.update(repeating: 0, count: verdictSlots)
            var total: UInt64 = 0
            var nb = 0
            let t0 = cbpf_rdtsc()
            var tb = t0
            // Time batches of `QueueWorker.batchPolls` polls, never single packets.
            while !control.stop.load(ordering: .relaxed) {
                polls(h, &head, ctx, counts, QueueWorker.batchPolls)
                total &+= UInt64(QueueWorker.batchPolls)
                let t = cbpf_rdtsc()
                if nb < QueueWorker.maxBatches { batches[nb] = t &- tb; nb += 1 }
                tb = t
            }
            let t1 = cbpf_rdtsc()
            var r = QueueCounters(verdicts: Array(UnsafeBufferPointer(start: counts, count: 5)), invalid: counts[5],
                                  received: total &* UInt64(budget), cycles: t1 &- t0, polls: total)
            let sorted = UnsafeBufferPointer(start: batches, count: nb).sorted()
            if !sorted.isEmpty {
                let q = Double(sorted[min(nb - 1, Int(Double(nb - 1) * quantile))])
                r.medianCyclesPerPacket = q / Double(QueueWorker.batchPolls * budget)
            }
            me.result = r
        }
        counts.deallocate()
        batches.deallocate()
        domain.unregisterThread(reader)
    }

    public func join() {
        if let t = thread { kthreadJoin(t) }
        thread = nil
    }
}
