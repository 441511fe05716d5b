// Packets through chains and tail calls while another thread changes them as fast as it
// can. Every packet must get a verdict some valid configuration gives, no reader may reach
// a freed program (checked mode poisons freed records), and nothing may leak.
import XCTest
import CBPFShims
import Synchronization
@testable import BPFKernel

final class ConcurrencyDispatchTests: KernelTestCase {
    func testPacketsSeeValidVerdictsWhileChainsAndArraysChurn() throws {
        // The chain root returns PASS; its PASS slot flips between a DROP program, a TX
        // program and nothing. The tail-call roots (one per engine) jump through slot 0 of
        // their array, which flips between DROP, TX and empty (fall through → PASS).
        let root = try loadReturning(XDP_PASS, name: "root", flags: .chainCalls)
        let jmpJ = try progArray(1, name: "jmp_jit"), jmpI = try progArray(1, name: "jmp_interp"), jmpD = try progArray(1, name: "jmp_direct")
        let tcJit = try load(ProgLoadAttr(steps: StepProgram([.tailCall(arrayFD: jmpJ, index: .constant(0)), .returnConst(XDP_PASS)]), name: "tc_jit"))
        let tcInterp = try load(ProgLoadAttr(steps: StepProgram([.tailCall(arrayFD: jmpI, index: .constant(0)), .returnConst(XDP_PASS)]), name: "tc_interp", jited: false))
        let tcDirect = try load(ProgLoadAttr(steps: StepProgram([.tailCall(arrayFD: jmpD, index: .constant(0)), .returnConst(XDP_PASS)], directTailCalls: true), name: "tc_direct"))
        let roots = try [root, tcJit, tcInterp, tcDirect].map { try bpf.prog($0) }
        defer { for r in roots { r.put() } }
        nonisolated(unsafe) let rootPtrs = roots.map { UnsafePointer($0.raw) }

        let stop = Atomic<Bool>(false)
        let packets = Atomic<UInt64>(0), uaf = Atomic<UInt64>(0), invalid = Atomic<UInt64>(0)
        let domain = kernel.rcu
        var workers: [pthread_t] = []
        for w in 0..<2 {
            workers.append(try kthreadCreate(name: "rx\(w)") {
                let r = domain.registerThread(name: "rx\(w)")
                let h = r.handle
                var md = cbpf_xdp_md()
                var bad: UInt64 = 0
                var n: UInt64 = 0
                let useAfterFree = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
                useAfterFree.initialize(to: 0)
                while !stop.load(ordering: .relaxed) {
                    for i in 0..<64 {
                        let v = bpfProgRunChecked(rootPtrs[i & 3], &md, useAfterFree: useAfterFree)
                        if v != XDP_PASS && v != XDP_DROP && v != XDP_TX { bad += 1 }
                    }
                    n += 64
                    h.quiescentState()  // between polls, as NAPI
                }
                domain.unregisterThread(r)
                packets.add(n, ordering: .relaxed)
                invalid.add(bad, ordering: .relaxed)
                uaf.add(useAfterFree.pointee, ordering: .relaxed)
                useAfterFree.deallocate()
            })
        }

        // The churner: this thread. New programs are loaded and their fds closed at once,
        // so the slot holds the last reference and every replacement frees a program.
        var updates = 0
        let deadline = cbpf_ktime_get_ns() + 1_000_000_000
        while cbpf_ktime_get_ns() < deadline {
            let verdict = updates % 2 == 0 ? XDP_DROP : XDP_TX
            let fresh = try loadReturning(verdict)
            switch updates % 4 {
            case 0, 1: try bpf.progChainAdd(prev: root, retcode: XDP_PASS, next: fresh)
            default: try? bpf.progChainDel(prev: root, retcode: XDP_PASS)
            }
            for jmp in [jmpJ, jmpI, jmpD] {
                if updates % 3 == 2 {
                    try? bpf.mapDeleteElem(jmp, key: key(0))
                } else {
                    let target = jmp == jmpI ? try load(ProgLoadAttr(steps: StepProgram([.returnConst(verdict)]), jited: false))
                                             : try loadReturning(verdict)
                    try setSlot(jmp, 0, target)
                    try bpf.objClose(target)
                }
            }
            try bpf.objClose(fresh)
            updates += 1
        }
        stop.store(true, ordering: .relaxed)
        for t in workers { kthreadJoin(t) }
        XCTAssertGreaterThan(packets.load(ordering: .relaxed), 10_000)
        XCTAssertGreaterThan(updates, 50)
        XCTAssertEqual(invalid.load(ordering: .relaxed), 0, "a verdict no configuration gives")
        XCTAssertEqual(uaf.load(ordering: .relaxed), 0, "a reader reached a freed program")
        print("churn: \(packets.load(ordering: .relaxed)) packets, \(updates) update rounds, \(kernel.rcu.gracePeriods.load(ordering: .relaxed)) grace periods")
    }
}
