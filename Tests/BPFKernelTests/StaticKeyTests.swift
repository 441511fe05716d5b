// Static keys: counted enables, sites flipped one at a time, flipping from a map update and
// from a program, the stats key as the first client.
import XCTest
import CBPFShims
@testable import BPFKernel

final class StaticKeyTests: KernelTestCase {
    func keyMap(_ name: String = "dbg_key") throws -> Int32 {
        try bpf.mapCreate(MapCreateAttr(type: .staticKey, maxEntries: 1, name: name))
    }

    func testEnablesAreCountedAndDecBelowZeroIsEINVAL() throws {
        let k = StaticKey(name: "k")
        let s1 = UnsafeMutablePointer<cbpf_static_site>.allocate(capacity: 2)
        defer { s1.deallocate() }
        s1.initialize(repeating: cbpf_static_site(enabled: 0), count: 2)
        k.register(s1)
        k.inc(); k.inc()
        XCTAssertEqual(s1[0].enabled, 1)
        try k.dec()
        XCTAssertEqual(s1[0].enabled, 1, "one enable is still held")
        k.register(s1 + 1)
        XCTAssertEqual(s1[1].enabled, 1, "a new site starts in the key's state")
        try k.dec()
        XCTAssertEqual([s1[0].enabled, s1[1].enabled], [0, 0])
        XCTAssertThrowsError(try k.dec()) { XCTAssertEqual(($0 as? BPFError)?.errno, .EINVAL) }
    }

    func testSitesAreFlippedOneAtATime() throws {
        let k = StaticKey(name: "k")
        let s = UnsafeMutablePointer<cbpf_static_site>.allocate(capacity: 3)
        defer { s.deallocate() }
        s.initialize(repeating: cbpf_static_site(enabled: 0), count: 3)
        for i in 0..<3 { k.register(s + i) }
        var seen: [[UInt32]] = []
        k.onSiteFlipped = { _, _ in seen.append((0..<3).map { s[$0].enabled }) }
        k.inc()
        XCTAssertEqual(seen, [[1, 0, 0], [1, 1, 0], [1, 1, 1]], "a reader between flips sees a mix")
    }

    func testMapUpdateAndKfuncFlipAProgramsBranch() throws {
        let key = try keyMap()
        let p = try load(ProgLoadAttr(steps: StepProgram([.staticBranch(keyFD: key, call: 0), .returnConst(XDP_DROP)],
                                                         subprogs: [[.count("debug"), .returnConst(0)]]), name: "p"))
        XCTAssertEqual(try run(p), XDP_DROP)
        XCTAssertEqual(kernel.counter("debug"), 0, "off: the branch is not taken")
        try bpf.mapUpdateElem(key, key: BPFKernelTests.key(0), value: BPFKernelTests.key(1))
        XCTAssertEqual(try run(p), XDP_DROP)
        XCTAssertEqual(kernel.counter("debug"), 1, "on from user space")
        XCTAssertEqual(u32(try bpf.mapLookupElem(key, key: BPFKernelTests.key(0))), 1)
        assertErrno(.EINVAL, "a value other than 0 or 1") { try bpf.mapUpdateElem(key, key: BPFKernelTests.key(0), value: BPFKernelTests.key(2)) }
        assertErrno(.E2BIG, "element 1") { try bpf.mapUpdateElem(key, key: BPFKernelTests.key(1), value: BPFKernelTests.key(1)) }
        // A program's kfunc holds its own enable.
        let on = try load(ProgLoadAttr(steps: StepProgram([.staticKeySet(keyFD: key, on: true), .returnConst(XDP_PASS)]), name: "on"))
        let off = try load(ProgLoadAttr(steps: StepProgram([.staticKeySet(keyFD: key, on: false), .returnConst(XDP_PASS)]), name: "off"))
        _ = try run(on)
        try bpf.mapUpdateElem(key, key: BPFKernelTests.key(0), value: BPFKernelTests.key(0))
        XCTAssertEqual(try run(p), XDP_DROP)
        XCTAssertEqual(kernel.counter("debug"), 2, "still on: the program's enable")
        _ = try run(off)
        XCTAssertEqual(try run(p), XDP_DROP)
        XCTAssertEqual(kernel.counter("debug"), 2, "off once both clients turned it off")
        assertErrno(.EINVAL, "static-key map with two entries") { try bpf.mapCreate(MapCreateAttr(type: .staticKey, maxEntries: 2)) }
        let jmp = try progArray(1)
        assertErrno(.EINVAL, "a prog array where a key belongs") {
            try load(ProgLoadAttr(steps: StepProgram([.staticBranch(keyFD: jmp, call: 0), .returnConst(0)], subprogs: [[.returnConst(0)]])))
        }
    }

    func testStatsKeyIsTheFirstClient() throws {
        XCTAssertFalse(StaticKey.bpfStats.isEnabled)
        XCTAssertEqual(StaticKey.bpfStats.siteCount, 2, "BPF_PROG_RUN's branch and the trampoline's")
        let fd1 = try bpf.enableStats(), fd2 = try bpf.enableStats()
        XCTAssertEqual(StaticKey.bpfStats.enableCount, 2)
        XCTAssertTrue(cbpf_bpf_stats_enabled())
        try bpf.objClose(fd1)
        XCTAssertTrue(cbpf_bpf_stats_enabled(), "one enable left")
        try bpf.objClose(fd2)
        XCTAssertFalse(cbpf_bpf_stats_enabled())
        XCTAssertFalse(cbpf_bpf_stats_enabled_tracing())
    }
}
