// The machine engine: step programs generated as x86-64 code. Static branch sites are the
// kernel's 5-byte NOP while their key is off and a jmp rel32 when it is on (patched live by
// text_poke_bp); the generated program behaves as the native one does in both states; what
// it does not generate is refused with ENOTSUPP and leaves nothing; its code is freed with
// the program, after its grace period; and flipping a key while workers run the program
// never gives a wrong verdict.
import XCTest
import CBPFShims
import BPFMachineCode
@testable import BPFKernel

final class MachineCodeTests: KernelTestCase {
    private func keyMap() throws -> Int32 { try bpf.mapCreate(MapCreateAttr(type: .staticKey, maxEntries: 1, name: "k")) }
    private func set(_ key: Int32, _ on: Bool) throws { try bpf.mapUpdateElem(key, key: BPFKernelTests.key(0), value: BPFKernelTests.key(on ? 1 : 0)) }

    private func program(_ key: Int32, sites: Int = 1, machine: Bool) throws -> Int32 {
        var a = ProgLoadAttr(steps: StepProgram(Array(repeating: .staticBranch(keyFD: key, call: 0), count: sites) + [.returnLast],
                                                subprogs: [[.returnConst(XDP_PASS)]]), name: machine ? "mc" : "native")
        a.machineCode = machine
        return try load(a)
    }

    private func sites(_ fd: Int32) throws -> [[UInt8]] {
        let p = try bpf.prog(fd)
        defer { p.put() }
        return p.stepImage?.patchSites.map(\.site.bytes) ?? []
    }

    func testABranchSiteIsTheKernelsNopUntilItsKeyIsOnAndBehavesAsTheNativeOne() throws {
        let key = try keyMap()
        let mc = try program(key, sites: 3, machine: true), native = try program(key, sites: 3, machine: false)
        XCTAssertEqual(try sites(mc), Array(repeating: [0x0f, 0x1f, 0x44, 0x00, 0x00], count: 3), "off: the 5-byte NOP")
        XCTAssertEqual(try run(mc), 0, "off: no hook ran, last = 0")
        XCTAssertEqual(try run(mc), try run(native))
        try set(key, true)
        XCTAssertTrue(try sites(mc).allSatisfy { $0[0] == 0xe9 }, "on: every site a jmp rel32")
        XCTAssertEqual(try run(mc), XDP_PASS, "on: the hook ran and its value is returned")
        XCTAssertEqual(try run(mc), try run(native))
        try set(key, false)
        XCTAssertEqual(try sites(mc).first, [0x0f, 0x1f, 0x44, 0x00, 0x00])
        XCTAssertEqual(try run(mc), 0)
        // A program loaded while its key is on starts with its sites on.
        try set(key, true)
        let late = try program(key, machine: true)
        XCTAssertEqual(try sites(late).first?.first, 0xe9)
        XCTAssertEqual(try run(late), XDP_PASS)
    }

    /// KERNEL_RULES, static keys: "sites are flipped one by one, not atomically as a group" —
    /// for machine-code sites too: each text_poke_bp is one site, and a reader between two
    /// sees a mix.
    func testMachineCodeSitesAreFlippedOneAtATime() throws {
        let key = try keyMap()
        let mc = try program(key, sites: 3, machine: true)
        let p = try bpf.prog(mc)
        defer { p.put() }
        let m = try XCTUnwrap(try bpf.map(key) as? StaticKeyMap)
        defer { m.put() }
        let sites = p.stepImage!.patchSites.map(\.site)
        var seen: [[UInt8]] = []
        m.key.onSiteFlipped = { _, _ in seen.append(sites.map { $0.bytes[0] }) }
        try set(key, true)
        XCTAssertEqual(seen, [[0xe9, 0x0f, 0x0f], [0xe9, 0xe9, 0x0f], [0xe9, 0xe9, 0xe9]], "a jmp appears site by site")
        m.key.onSiteFlipped = nil
    }

    /// KERNEL_RULES, the kernel's bpf_dispatcher: up to 48 known targets reached directly;
    /// any other program falls back to the indirect jump and still runs — in the generated
    /// image as in the search.
    func testTheGeneratedImageTakesAtMost48TargetsAndEveryOtherProgramStillRuns() throws {
        let disp = BPFDispatcher(kernel: kernel, name: "xdp_test")
        disp.useImage()
        var known: [BPFProg] = []
        for i in 0..<48 {
            let p = try bpf.prog(try load(ProgLoadAttr(body: .xdpTx, name: "t\(i)")))
            XCTAssertTrue(disp.change(from: nil, to: p))
            known.append(p)
        }
        let extra = try bpf.prog(try load(ProgLoadAttr(body: .xdpDrop, name: "extra")))
        XCTAssertFalse(disp.change(from: nil, to: extra), "a 49th target is not taken")
        XCTAssertFalse(disp.isKnown(extra))
        XCTAssertNil(disp.imageError)
        var ctx = cbpf_xdp_md()
        withUnsafeMutablePointer(to: &ctx) { c in
            XCTAssertEqual(bpfProgRunMachineDispatched(UnsafePointer(disp.raw), UnsafePointer(extra.raw), c), XDP_DROP, "the miss still runs it")
            XCTAssertEqual(bpfProgRunMachineDispatched(UnsafePointer(disp.raw), UnsafePointer(known[17].raw), c), XDP_TX, "a hit")
        }
        disp.releaseImage()
        disp.reset()
        extra.put()
        known.forEach { $0.put() }
    }

    func testWhatTheMachineEngineDoesNotGenerateIsENOTSUPPAndLeavesNothing() throws {
        let before = CodeRegion.shared?.freeBytes, progs = kernel.liveProgs.load(ordering: .relaxed)
        var a = ProgLoadAttr(steps: StepProgram([.call(0), .returnLast], subprogs: [[.returnConst(XDP_DROP)]]), name: "mc")
        a.machineCode = true
        assertErrno(.ENOTSUPP, "a bpf-to-bpf call is not generated yet") { _ = try bpf.progLoad(a) }
        var b = ProgLoadAttr(steps: StepProgram([.returnConst(XDP_DROP)]), name: "mc", jited: false)
        b.machineCode = true
        assertErrno(.EINVAL, "the machine engine is a JIT") { _ = try bpf.progLoad(b) }
        XCTAssertEqual(CodeRegion.shared?.freeBytes, before, "no code memory kept")
        XCTAssertEqual(kernel.liveProgs.load(ordering: .relaxed), progs)
    }

    // MARK: tail calls

    private func progArray(_ n: UInt32 = 4) throws -> Int32 { try bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: n, name: "jmp")) }
    private func mc(_ steps: [Step], direct: Bool, name: String = "mc") throws -> Int32 {
        var a = ProgLoadAttr(steps: StepProgram(steps, directTailCalls: direct), name: name)
        a.machineCode = true
        return try load(a)
    }
    private func slot(_ arr: Int32, _ i: UInt32, _ fd: Int32?) throws {
        if let fd { try bpf.mapUpdateElem(arr, key: BPFKernelTests.key(i), value: BPFKernelTests.key(UInt32(bitPattern: fd))) }
        else { try bpf.mapDeleteElem(arr, key: BPFKernelTests.key(i)) }
    }

    /// bpf_tail_call as the JIT emits it, both ways: the target's value is the run's; an
    /// empty slot, a key past max_entries and a deleted slot fall through; a replaced slot
    /// goes to the new program at once.
    func testAGeneratedTailCallRunsTheSlotsProgramOrFallsThrough() throws {
        for direct in [false, true] {
            let arr = try progArray()
            let drop = try mc([.returnConst(XDP_DROP)], direct: direct, name: "drop")
            let tx = try mc([.returnConst(XDP_TX)], direct: direct, name: "tx")
            let caller = try mc([.tailCall(arrayFD: arr, index: .constant(1)), .returnConst(XDP_PASS)], direct: direct)
            let far = try mc([.tailCall(arrayFD: arr, index: .constant(9)), .returnConst(XDP_ABORTED)], direct: direct, name: "far")
            XCTAssertEqual(try run(caller), XDP_PASS, "direct \(direct): empty slot, fall through")
            try slot(arr, 1, drop)
            XCTAssertEqual(try run(caller), XDP_DROP, "direct \(direct): the target's value")
            try slot(arr, 1, tx)
            XCTAssertEqual(try run(caller), XDP_TX, "direct \(direct): replaced")
            try slot(arr, 1, nil)
            XCTAssertEqual(try run(caller), XDP_PASS, "direct \(direct): deleted")
            XCTAssertEqual(try run(far), XDP_ABORTED, "direct \(direct): a key past max_entries falls through")
            // A program loaded while the slot is full starts pointed at it (the fixup).
            try slot(arr, 1, drop)
            let late = try mc([.tailCall(arrayFD: arr, index: .constant(1)), .returnConst(XDP_PASS)], direct: direct)
            XCTAssertEqual(try run(late), XDP_DROP, "direct \(direct): patched at load")
            if direct {
                let p = try bpf.prog(late)
                defer { p.put() }
                let poke = try XCTUnwrap(p.stepImage?.machinePokes.first?.poke)
                XCTAssertEqual(poke.bypass.bytes, X86Assembler.nop5, "a full slot: the bypass is the NOP")
                XCTAssertEqual(poke.target.bytes.first, 0xe9, "and the target site a jmp")
                try slot(arr, 1, nil)
                XCTAssertEqual(poke.bypass.bytes.first, 0xe9, "an empty slot: the bypass jumps")
                XCTAssertEqual(poke.target.bytes, X86Assembler.nop5, "and the target site is the NOP again")
            }
        }
    }

    /// MAX_TAIL_CALL_CNT in generated code: a program tail-calling itself runs 34 times; a
    /// try on an empty slot first is not counted (the NULL check / bypass comes first) —
    /// KERNEL_RULES.md, as this machine's kernel does.
    func testAGeneratedSelfTailCallRuns34TimesAndAnEmptySlotIsNotCounted() throws {
        for direct in [false, true] {
            kernel.resetCounters()
            let arr = try progArray()
            let loop = try mc([.count("loops"), .tailCall(arrayFD: arr, index: .constant(0)), .returnConst(XDP_PASS)], direct: direct, name: "loop")
            try slot(arr, 0, loop)
            XCTAssertEqual(try run(loop), XDP_PASS)
            XCTAssertEqual(kernel.counter("loops"), 34, "direct \(direct): 1 run + 33 tail calls")
            kernel.resetCounters()
            let tries = try mc([.count("tries"), .tailCall(arrayFD: arr, index: .constant(3)), .tailCall(arrayFD: arr, index: .constant(2)),
                                .returnConst(XDP_DROP)], direct: direct, name: "tries")
            try slot(arr, 2, tries)
            XCTAssertEqual(try run(tries), XDP_DROP)
            XCTAssertEqual(kernel.counter("tries"), 34, "direct \(direct): the empty slot 3 was tried 34 times and never counted")
            try slot(arr, 0, nil); try slot(arr, 2, nil)
        }
    }

    /// KERNEL_RULES, direct tail calls: "delete: restore the bypass, wait a grace period, then
    /// NOP the target" — in generated code: while a reader has not passed a quiescent state,
    /// the deleted slot's bypass already jumps (a new run falls through) but the target site
    /// still jumps to the old program; once the reader is quiescent the target is the NOP.
    func testDeletingADirectSlotRestoresTheBypassThenWaitsAGracePeriodBeforeTheTarget() throws {
        let arr = try progArray()
        let drop = try mc([.returnConst(XDP_DROP)], direct: true, name: "drop")
        let caller = try mc([.tailCall(arrayFD: arr, index: .constant(0)), .returnConst(XDP_PASS)], direct: true)
        try slot(arr, 0, drop)
        let p = try bpf.prog(caller)
        defer { p.put() }
        let poke = try XCTUnwrap(p.stepImage?.machinePokes.first?.poke)
        // A reader that stays in its read-side section until told.
        let release = ManagedAtomicFlag(), registered = ManagedAtomicFlag()
        let domain = kernel.rcu
        let reader = try kthreadCreate(name: "slow-reader") {
            let r = domain.registerThread(name: "slow-reader")
            registered.set()
            while !release.isSet { usleep(1000) }
            r.quiescentState()
            domain.unregisterThread(r)
        }
        while !registered.isSet { usleep(100) }
        let deleted = ManagedAtomicFlag()
        nonisolated(unsafe) let facade = bpf!
        let deleter = try kthreadCreate(name: "deleter") {
            try? facade.mapDeleteElem(arr, key: BPFKernelTests.key(0))
            deleted.set()
        }
        var waited = 0
        while poke.bypass.bytes.first != 0xe9 && waited < 5000 { usleep(1000); waited += 1 }
        usleep(20_000)  // the deleter is now waiting for the grace period
        XCTAssertEqual(poke.bypass.bytes.first, 0xe9, "the bypass jumps first")
        XCTAssertEqual(poke.target.bytes.first, 0xe9, "the target still points at the old program during the grace period")
        XCTAssertFalse(deleted.isSet, "the delete waits for the grace period")
        XCTAssertEqual(try run(caller), XDP_PASS, "a new run takes the bypass")
        release.set()
        kthreadJoin(reader)
        kthreadJoin(deleter)
        XCTAssertTrue(deleted.isSet)
        XCTAssertEqual(poke.target.bytes, X86Assembler.nop5, "after the grace period the target is the NOP")
    }

    /// The code's size is bounded before it is generated: the longest step (an indirect
    /// tail call with retpolines, 98 bytes) at the step limit fits, and runs.
    func testAGeneratedProgramAtTheStepLimitFitsItsCodeAndRuns() throws {
        let arr = try progArray()
        let saved = Retpoline.mode
        Retpoline.mode = .on
        defer { Retpoline.mode = saved }
        let steps = Array(repeating: Step.tailCall(arrayFD: arr, index: .constant(3)), count: stepProgramMaxSteps - 1) + [.returnConst(XDP_TX)]
        let p = try mc(steps, direct: false)
        XCTAssertEqual(try run(p), XDP_TX, "every tail call falls through (slot 3 is empty)")
    }

    /// The owner rule, extended for the generated tail call (it jumps past the target's
    /// generated prologue): a prog array holds programs of one engine — EINVAL both ways,
    /// and nothing changes.
    func testAProgArrayHoldsProgramsOfOneEngine() throws {
        let arr = try progArray()
        let native = try load(ProgLoadAttr(body: .xdpDrop, name: "native"))
        let machine = try mc([.returnConst(XDP_DROP)], direct: true)
        try slot(arr, 0, machine)
        assertErrno(.EINVAL, "a native program into a machine-code array") { try slot(arr, 1, native) }
        XCTAssertThrowsError(try bpf.mapLookupElem(arr, key: BPFKernelTests.key(1)), "slot 1 stays empty")
        assertErrno(.EINVAL, "a native tail-caller of a machine-code array") {
            _ = try load(ProgLoadAttr(steps: StepProgram([.tailCall(arrayFD: arr, index: .constant(0)), .returnConst(XDP_PASS)]), name: "nat"))
        }
        let arr2 = try progArray()
        try slot(arr2, 0, native)
        assertErrno(.EINVAL, "a machine-code program into a native array") { try slot(arr2, 1, machine) }
        assertErrno(.EINVAL, "a machine-code tail-caller of a native array") {
            _ = try mc([.tailCall(arrayFD: arr2, index: .constant(0)), .returnConst(XDP_PASS)], direct: false)
        }
    }

    /// A trampoline attached to the target does not run for a tail call (the jump goes past
    /// the entry), as in the kernel; a call through BPF_PROG_RUN does run it.
    func testAGeneratedTailCallSkipsTheTargetsEntry() throws {
        let arr = try progArray()
        let target = try mc([.returnConst(XDP_DROP)], direct: true, name: "target")
        let caller = try mc([.tailCall(arrayFD: arr, index: .constant(0)), .returnConst(XDP_PASS)], direct: true)
        try slot(arr, 0, target)
        let fe = try load(.tracing(.traceFentry, on: target, function: nil, steps: StepProgram([.count("fentry"), .returnConst(0)]), name: "fe"))
        let l = try bpf.linkCreate(LinkCreateAttr(progFD: fe, attachType: .traceFentry))
        XCTAssertEqual(try run(target), XDP_DROP)
        XCTAssertEqual(kernel.counter("fentry"), 1, "called: the trampoline runs")
        XCTAssertEqual(try run(caller), XDP_DROP)
        XCTAssertEqual(kernel.counter("fentry"), 1, "tail-called: it does not")
        try bpf.objClose(l)
    }

    func testTheCodeIsFreedWithTheProgramAfterItsGracePeriod() throws {
        let key = try keyMap()
        let before = try XCTUnwrap(CodeRegion.shared?.freeBytes)
        let mc = try program(key, sites: 4, machine: true)
        XCTAssertLessThan(CodeRegion.shared!.freeBytes, before)
        try bpf.objClose(mc)
        kernel.quiesce()
        XCTAssertEqual(CodeRegion.shared!.freeBytes, before, "the image went back after the program's grace period")
        try set(key, true)  // the key no longer knows the freed sites: nothing to patch
    }
}

/// Flipping a key at a high rate while two workers run the generated program through
/// BPF_PROG_RUN: every verdict is one of the program's two (ABORTED off, PASS on), never
/// anything else, and the patching is seen by the runners (both verdicts occur).
final class ConcurrencyMachineCodeTests: KernelTestCase {
    func testFlippingAKeyWhileWorkersRunItNeverGivesAWrongVerdict() throws {
        let key = try bpf.mapCreate(MapCreateAttr(type: .staticKey, maxEntries: 1, name: "k"))
        var a = ProgLoadAttr(steps: StepProgram([.staticBranch(keyFD: key, call: 0), .staticBranch(keyFD: key, call: 0), .returnLast],
                                                subprogs: [[.returnConst(XDP_PASS)]]), name: "mc")
        a.machineCode = true
        let fd = try load(a)
        let p = try bpf.prog(fd)
        defer { p.put() }
        nonisolated(unsafe) let raw = UnsafePointer(p.raw)
        final class Tally: @unchecked Sendable { var v = [0, 0, 0] }
        let stop = ManagedAtomicFlag()
        let tallies = [Tally(), Tally()]
        let threads = try tallies.map { t in
            try kthreadCreate(name: "mc-runner") {
                var ctx = cbpf_xdp_md()
                withUnsafeMutablePointer(to: &ctx) { c in
                    while !stop.isSet {
                        for _ in 0..<1000 {
                            switch bpfProgRun(raw, c) {
                            case 0: t.v[0] += 1
                            case XDP_PASS: t.v[1] += 1
                            default: t.v[2] += 1
                            }
                        }
                    }
                }
            }
        }
        var flips = 0
        let end = Date().addingTimeInterval(1.0)
        while Date() < end {
            try bpf.mapUpdateElem(key, key: BPFKernelTests.key(0), value: BPFKernelTests.key(UInt32(flips % 2 == 0 ? 1 : 0)))
            flips += 1
        }
        stop.set()
        threads.forEach(kthreadJoin)  // pthread_join: the runners' work happens before what follows
        let total = tallies.reduce([0, 0, 0]) { [$0[0] + $1.v[0], $0[1] + $1.v[1], $0[2] + $1.v[2]] }
        print("machine-code static key: \(flips) flips, \(total[0] + total[1]) runs (\(total[0]) off, \(total[1]) on)")
        XCTAssertEqual(total[2], 0, "a verdict neither state gives")
        XCTAssertGreaterThan(total[0], 0)
        XCTAssertGreaterThan(total[1], 0)
        XCTAssertGreaterThan(flips, 100)
    }
}

/// The dispatcher's generated image rebuilt and switched over and over (targets added and
/// removed, each update a new image, the old freed after its grace period) while two RCU
/// readers run a program through it: every run returns the program's verdict — whether it
/// is a hit, a miss, or meets an image mid-switch — and no freed image is ever run (freed
/// code memory is int3 again: running it would trap and kill the test).
final class ConcurrencyDispatcherImageTests: KernelTestCase {
    func testImagesRebuiltWhileReadersRunThemAlwaysReachTheProgram() throws {
        let disp = BPFDispatcher(kernel: kernel, name: "xdp_test")
        let dropFD = try load(ProgLoadAttr(body: .xdpDrop, name: "drop"))
        let drop = try bpf.prog(dropFD)
        defer { drop.put() }
        var others: [BPFProg] = []
        for i in 0..<8 {
            let fd = try load(ProgLoadAttr(body: .xdpTx, name: "other\(i)"))
            others.append(try bpf.prog(fd))
        }
        defer { others.forEach { $0.put() } }
        disp.useImage()
        defer {
            disp.releaseImage()
            disp.reset()
        }
        nonisolated(unsafe) let d = UnsafePointer(disp.raw), p = UnsafePointer(drop.raw)
        var n = 0
        let (total, rounds) = try whileTwoReadersRun({ _, c in bpfProgRunMachineDispatched(d, p, c) }) {
            // The DROP program in and out of the table, others around it: hits and misses.
            let o = others[n % others.count]
            n += 1
            disp.change(from: nil, to: o)
            disp.change(from: nil, to: drop)
            disp.change(from: drop, to: nil)
            disp.change(from: o, to: nil)
        }
        let runs = total.values.reduce(0, +)
        print("dispatcher image: \(4 * rounds) updates (each a new image and a grace period), \(runs) runs")
        XCTAssertEqual(Set(total.keys), [XDP_DROP], "every run reached the DROP program")
        XCTAssertGreaterThan(runs, 100_000)
        XCTAssertGreaterThan(rounds, 25)
        XCTAssertNil(disp.imageError)
    }
}

/// A stop flag for test threads.
final class ManagedAtomicFlag: @unchecked Sendable {
    private let p = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    init() { p.initialize(to: 0) }
    deinit { p.deallocate() }
    var isSet: Bool { cbpf_load_acquire_u32(p) != 0 }
    func set() { cbpf_store_release_u32(p, 1) }
}

/// Direct tail calls re-pointed at a high rate (insert, replace, delete: each a text_poke_bp
/// of the target site and the bypass, with a grace period on delete) while two RCU readers
/// run the generated caller, and the indirect sequence reading the same slot: every run
/// ends in one of the programs the slot held or in the fall-through, never anything else;
/// no stray SIGTRAP (a wrong jump into int3-filled memory would kill the process).
final class ConcurrencyMachineTailCallTests: KernelTestCase {
    func testRepointedDirectTailCallsAlwaysReachAProgramOrFallThrough() throws {
        let arr = try bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: 2, name: "jmp"))
        func mc(_ steps: [Step], direct: Bool, _ name: String) throws -> Int32 {
            var a = ProgLoadAttr(steps: StepProgram(steps, directTailCalls: direct), name: name)
            a.machineCode = true
            return try load(a)
        }
        let drop = try mc([.returnConst(XDP_DROP)], direct: true, "drop")
        let tx = try mc([.returnConst(XDP_TX)], direct: true, "tx")
        let direct = try mc([.tailCall(arrayFD: arr, index: .constant(0)), .returnConst(XDP_PASS)], direct: true, "direct")
        let indirect = try mc([.tailCall(arrayFD: arr, index: .constant(0)), .returnConst(XDP_PASS)], direct: false, "indirect")
        let progs = try [direct, indirect].map { try bpf.prog($0) }
        defer { progs.forEach { $0.put() } }
        nonisolated(unsafe) let raws = progs.map { UnsafePointer($0.raw) }
        let (total, updates) = try whileTwoReadersRun({ n, c in bpfProgRun(raws[n & 1], c) }) {  // both callers, alternately
            try bpf.mapUpdateElem(arr, key: BPFKernelTests.key(0), value: BPFKernelTests.key(UInt32(bitPattern: drop)))
            try bpf.mapUpdateElem(arr, key: BPFKernelTests.key(0), value: BPFKernelTests.key(UInt32(bitPattern: tx)))
            try bpf.mapDeleteElem(arr, key: BPFKernelTests.key(0))
        }
        let runs = total.values.reduce(0, +)
        print("machine tail calls: \(3 * updates) slot updates (direct sites re-pointed), \(runs) runs: \(total.sorted { $0.key < $1.key })")
        XCTAssertEqual(Set(total.keys).subtracting([XDP_DROP, XDP_TX, XDP_PASS]), [], "a verdict the slot never gave")
        XCTAssertGreaterThan(total[XDP_DROP] ?? 0, 0)
        XCTAssertGreaterThan(total[XDP_TX] ?? 0, 0)
        XCTAssertGreaterThan(total[XDP_PASS] ?? 0, 0)
        XCTAssertGreaterThan(updates, 30)
        let owner = try XCTUnwrap(try bpf.map(arr) as? ProgArray)
        defer { owner.put() }
        XCTAssertEqual(owner.pokeFailures, 0)
    }
}
