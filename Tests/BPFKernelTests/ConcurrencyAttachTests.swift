// Dispatcher rebuilds, link updates, trampoline attach/detach and static-key flips while two
// threads run packets: every packet must see one whole configuration (never a mix), no
// reader may reach a freed program, nothing may leak. Runs under ThreadSanitizer in CI.
import XCTest
import CBPFShims
import Synchronization
@testable import BPFKernel

final class ConcurrencyAttachTests: KernelTestCase {
    func testPacketsSeeOneWholeConfigurationWhileAttachmentsChurn() throws {
        // dispA: libxdp dispatcher flipping between {a1: PASS → a2: DROP} and
        //        {b1: TX, a1, a2}; only PASS (a1 without a2) could come of a torn one.
        // devL:  an XDP link flipping between DROP and TX programs.
        // t:     a program returning DROP; an fexit program (whose value is ignored) is attached
        //        and detached, and an fentry program counting runs comes and goes.
        // s:     a program whose static branch calls a subprogram returning TX.
        let devA = NetDevice(kernel: kernel, name: "dispA", ifindex: 2)
        let devL = NetDevice(kernel: kernel, name: "linkL", ifindex: 3)
        defer { devA.detachAll(); devL.detachAll() }
        let x = LibXDP(bpf: bpf)
        func step(_ n: String, _ v: UInt32) -> XDPProgramSpec {
            XDPProgramSpec(name: n, attr: ProgLoadAttr(steps: StepProgram([.returnConst(v)]), name: n))
        }
        try x.attach([step("a1", XDP_PASS), step("a2", XDP_DROP)], to: devA)
        let drop = try loadReturning(XDP_DROP, name: "drop"), tx = try loadReturning(XDP_TX, name: "tx")
        let link = try bpf.linkCreate(LinkCreateAttr(progFD: drop, device: devL, attachType: .xdp))
        let t = try load(ProgLoadAttr(steps: StepProgram([.returnConst(XDP_DROP)]), name: "t"))
        let keyFD = try bpf.mapCreate(MapCreateAttr(type: .staticKey, maxEntries: 1, name: "k"))
        let s = try load(ProgLoadAttr(steps: StepProgram([.staticBranch(keyFD: keyFD, call: 0), .returnConst(XDP_DROP)],
                                                         subprogs: [[.returnConst(XDP_TX)]]), name: "s"))
        let tp = try bpf.prog(t), sp = try bpf.prog(s)
        defer { tp.put(); sp.put() }
        nonisolated(unsafe) let tRaw = UnsafePointer(tp.raw), sRaw = UnsafePointer(sp.raw)

        let stop = Atomic<Bool>(false)
        let packets = Atomic<UInt64>(0), invalid = Atomic<UInt64>(0)
        let domain = kernel.rcu
        var workers: [pthread_t] = []
        for w in 0..<2 {
            workers.append(try kthreadCreate(name: "rx\(w)") {
                let r = domain.registerThread(name: "rx\(w)")
                var md = cbpf_xdp_md()
                var bad: UInt64 = 0, n: UInt64 = 0
                while !stop.load(ordering: .relaxed) {
                    for _ in 0..<16 {
                        let va = devA.runXDP(&md), vl = devL.runXDP(&md)
                        let vt = bpfProgRun(tRaw, &md), vs = bpfProgRun(sRaw, &md)
                        for (i, v) in [va, vl, vt, vs].enumerated() where v != XDP_DROP && v != XDP_TX {
                            bad += 1
                            if bad < 5 { print("invalid verdict \(v) from source \(i)") }
                        }
                    }
                    n += 64
                    r.handle.quiescentState()
                }
                domain.unregisterThread(r)
                packets.add(n, ordering: .relaxed)
                invalid.add(bad, ordering: .relaxed)
            })
        }

        var rounds = 0
        let deadline = cbpf_ktime_get_ns() + 1_000_000_000
        // A failing call must not leave the packet threads running into teardown.
        var joined = false
        defer { if !joined { stop.store(true, ordering: .relaxed); for w in workers { kthreadJoin(w) } } }
        while cbpf_ktime_get_ns() < deadline {
            // Each change builds a whole new dispatcher and swaps it in.
            if rounds % 2 == 0 {
                var b1 = step("b1", XDP_TX)
                b1.runPrio = 1
                try x.attach([b1], to: devA)
            } else {
                try x.detach(["b1"], from: devA)
            }
            try bpf.linkUpdate(link, newProgFD: rounds % 2 == 0 ? tx : drop)
            // (fmod_ret cannot target a BPF program: an fexit comes and goes instead.)
            let mod = try load(.tracing(.traceFexit, on: t, steps: StepProgram([.count("fexit"), .returnConst(XDP_TX)])))
            let fe = try load(.tracing(.traceFentry, on: t, steps: StepProgram([.count("fentry"), .returnConst(0)])))
            let lm = try bpf.linkCreate(LinkCreateAttr(progFD: mod, attachType: .traceFexit))
            let lf = try bpf.linkCreate(LinkCreateAttr(progFD: fe, attachType: .traceFentry))
            try bpf.objClose(mod); try bpf.objClose(fe)
            try bpf.objClose(lf); try bpf.objClose(lm)
            try bpf.mapUpdateElem(keyFD, key: key(0), value: key(UInt32(rounds % 2)))
            rounds += 1
        }
        stop.store(true, ordering: .relaxed)
        for w in workers { kthreadJoin(w) }
        joined = true
        try x.detach(x.programs(on: devA)!.map(\.name), from: devA)
        XCTAssertGreaterThan(rounds, 5)
        XCTAssertGreaterThan(packets.load(ordering: .relaxed), 10_000)
        XCTAssertEqual(invalid.load(ordering: .relaxed), 0, "a packet saw a mix of two configurations")
        print("attach churn: \(packets.load(ordering: .relaxed)) packets, \(rounds) rounds, \(kernel.rcu.gracePeriods.load(ordering: .relaxed)) grace periods")
    }
}
