// PerPacket — one benchmark per dispatch design: 1,000 NAPI polls of 64 packets per sample
// through the driver's own poll (Harness/Driver.swift `napiPoll`, the RCU quiescent state
// after each poll), specialised for the design's way of running programs. Time is
// reported per poll (scaling factor 1,000): divide by 64 for a packet — the framework's
// smallest unit is a nanosecond, a packet here takes 2–20. The malloc counter shows the
// per-packet path allocates nothing: one allocation in 64,000 packets would appear.
//
// The designs are set up by the harness's DesignSetup, the same objects `bpflab bench`
// measures, and every design's verdicts are checked (all DROP) before it is timed.
import Benchmark
import BPFKernel
import CBPFShims
import PacketHarness

/// One design, attached to a one-queue device, with a pre-filled RX ring.
final class Lab: @unchecked Sendable {
    let kernel = Kernel(.fast)
    let bpf: BPF
    let device: NetDevice
    let setup: DesignSetup
    let ring: RxRing
    let counts = UnsafeMutablePointer<UInt64>.allocate(capacity: verdictSlots)
    let ctx = UnsafeMutablePointer<cbpf_xdp_md>.allocate(capacity: 1)
    var head = 0

    init(_ design: DesignID) throws {
        bpf = BPF(kernel: kernel)
        device = NetDevice(kernel: kernel, name: "bench0", ifindex: 1)
        setup = try DesignSetup.make(design, bpf: bpf)
        _ = try Bench.crossCheck([setup], bpf: bpf, device: device, frames: FrameSpec())
        try bpf.xdpAttach(device, fd: setup.root)
        ring = try RxRing(frames: FrameSpec(), numa: .auto, cpu: 0)
        counts.initialize(repeating: 0, count: verdictSlots)
        ctx.initialize(to: cbpf_xdp_md())
        ctx.pointee.ingress_ifindex = device.ifindex
    }

    /// `polls` polls of 64 packets, as the driver's worker runs them.
    @inline(never)
    func run<R: ProgRunner>(_ runner: R, polls: Int) {
        let reader = kernel.rcu.registerThread(name: "bench")
        let h = reader.handle
        for _ in 0..<polls {
            napiPoll(runner, ring: ring.buffers, lengths: ring.lengths, mask: ring.mask, head: &head, budget: 64,
                     dev: device, ctx: ctx, counts: counts)
            h.quiescentState()
        }
        kernel.rcu.unregisterThread(reader)
    }

    func run(polls: Int) {
        struct Polls: ProgRunnerBody {
            let lab: Lab, polls: Int
            func callAsFunction<R: ProgRunner>(_ r: R) { lab.run(r, polls: polls) }
        }
        setup.runner.with(Polls(lab: self, polls: polls))
    }

    /// Every packet so far got the design's verdict (DROP) and was counted once.
    func verify() {
        let received = (0..<5).reduce(UInt64(0)) { $0 + counts[$1] }
        precondition(received > 0 && counts[1] == received, "\(setup.id.rawValue): every packet must be dropped")
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        timeUnits: .nanoseconds,
        warmupIterations: 10,
        scalingFactor: .kilo,
        maxDuration: .seconds(1),
        maxIterations: 500
    )
    for design in DesignID.allCases {
        Benchmark("\(design.rawValue) (per 64-packet poll)") { benchmark, lab in
            lab.run(polls: benchmark.scaledIterations.count)
            lab.verify()
        } setup: {
            try Lab(design)
        }
    }
}
