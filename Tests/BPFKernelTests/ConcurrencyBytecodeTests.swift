// Bytecode programs run by the interpreter on two threads while this thread flips their
// static key (the configurable jump's site), re-points their prog-array slot at freshly
// loaded bytecode programs (each freed after its grace period) and empties it. Every
// verdict must be one some configuration gives, no reader may reach a freed program, and
// the per-packet atomic count in an array map must equal the packets run. Under
// ThreadSanitizer in Tests/run.sh.
import XCTest
import CBPFShims
import BPFInstructions
import Synchronization
@testable import BPFKernel

final class ConcurrencyBytecodeTests: KernelTestCase {
    func testInterpretedProgramsGiveValidVerdictsWhileKeysAndSlotsChurn() throws {
        let jmp = try progArray(1, name: "jmp")
        let count = try bpf.mapCreate(MapCreateAttr(type: .array, valueSize: 8, maxEntries: 1, name: "count"))
        let key0 = try bpf.mapCreate(MapCreateAttr(type: .staticKey, maxEntries: 1, name: "k"))
        let root = try bpf.progLoad(ProgLoadAttr(insns: try Assembler.assemble("""
            mov %r6, %r1
            \(lookupZero(count, miss: "skip"))
            mov %r1, 1
            lock add [%r0+0], %r1
            skip:
            ja_cfg key 0, keyed
            mov %r1, %r6
            lddw %r2, map \(jmp)
            mov %r3, 0
            call 12
            mov %r0, 2
            exit
            keyed:
            mov %r0, 3
            exit
            """), name: "root", staticKeyFDs: [key0]))
        let rootProg = try bpf.prog(root)
        defer { rootProg.put() }
        nonisolated(unsafe) let rootPtr = UnsafePointer(rootProg.raw)

        let stop = Atomic<Bool>(false)
        let packets = Atomic<UInt64>(0), uaf = Atomic<UInt64>(0), invalid = Atomic<UInt64>(0)
        let domain = kernel.rcu
        var workers: [pthread_t] = []
        for w in 0..<2 {
            workers.append(try kthreadCreate(name: "bc\(w)") {
                let r = domain.registerThread(name: "bc\(w)")
                let h = r.handle
                var md = cbpf_xdp_md()
                var bad: UInt64 = 0, n: UInt64 = 0
                let useAfterFree = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
                useAfterFree.initialize(to: 0)
                while !stop.load(ordering: .relaxed) {
                    for _ in 0..<64 {
                        let v = bpfProgRunChecked(rootPtr, &md, useAfterFree: useAfterFree)
                        if v != XDP_PASS && v != XDP_DROP && v != XDP_TX { bad += 1 }
                    }
                    n += 64
                    h.quiescentState()
                }
                domain.unregisterThread(r)
                packets.add(n, ordering: .relaxed)
                invalid.add(bad, ordering: .relaxed)
                uaf.add(useAfterFree.pointee, ordering: .relaxed)
                useAfterFree.deallocate()
            })
        }
        var rounds = 0
        let deadline = cbpf_ktime_get_ns() + 1_000_000_000
        while cbpf_ktime_get_ns() < deadline {
            try bpf.mapUpdateElem(key0, key: key(0), value: key(UInt32(rounds % 2)))
            if rounds % 3 == 2 {
                try? bpf.mapDeleteElem(jmp, key: key(0))
            } else {
                let t = try bpf.progLoad(ProgLoadAttr(insns: [.mov64(0, imm: Int32(XDP_DROP)), .exit], name: "target"))
                try setSlot(jmp, 0, t)
                try bpf.objClose(t)  // the slot holds the last reference: the next update frees it
            }
            rounds += 1
        }
        stop.store(true, ordering: .relaxed)
        for t in workers { kthreadJoin(t) }
        let n = packets.load(ordering: .relaxed)
        XCTAssertGreaterThan(n, 10_000)
        XCTAssertGreaterThan(rounds, 50)
        XCTAssertEqual(invalid.load(ordering: .relaxed), 0, "a verdict no configuration gives")
        XCTAssertEqual(uaf.load(ordering: .relaxed), 0, "a reader reached a freed program")
        let c = try bpf.mapLookupElem(count, key: key(0))
        XCTAssertEqual(c.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }, n,
                       "every packet's atomic add landed once")
        print("bytecode churn: \(n) packets, \(rounds) rounds, \(kernel.rcu.gracePeriods.load(ordering: .relaxed)) grace periods")
    }
}
