// Prog arrays and bpf_tail_call in the three engines.
import XCTest
import CBPFShims
@testable import BPFKernel

enum Engine: CaseIterable {
    case jit, interpreter, direct
    var jited: Bool { self != .interpreter }
    var direct: Bool { self == .direct }
}

final class TailCallTests: KernelTestCase {
    func stepProg(_ steps: [Step], engine: Engine, subprogs: [[Step]] = [], name: String = "", type: ProgType = .xdp) throws -> Int32 {
        try load(ProgLoadAttr(type: type, steps: StepProgram(steps, subprogs: subprogs, directTailCalls: engine.direct),
                              name: name, jited: engine.jited))
    }

    func testSelfTailCallRuns34TimesInEveryEngine() throws {
        for engine in Engine.allCases {
            kernel.resetCounters()
            let jmp = try progArray(4)
            let p = try stepProg([.count("loops"), .tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(1)], engine: engine)
            try setSlot(jmp, 0, p)
            XCTAssertEqual(try run(p), 1, "\(engine): after the 33rd tail call the program falls through")
            XCTAssertEqual(kernel.counter("loops"), 34, "\(engine): 1 run + 33 tail calls")
            XCTAssertEqual(try run(p), 1)
            XCTAssertEqual(kernel.counter("loops"), 68, "\(engine): the counter resets per top-level run")
            try bpf.mapDeleteElem(jmp, key: key(0))  // break the cycle before closing
        }
    }

    /// "tail call K; return R" is compiled to a specialised body (no step loop) in the JIT
    /// and direct engines; it must keep the limit: a self-loop ends after 33 tail calls.
    func testSpecialisedTailCallBodiesKeepTheLimit() throws {
        for engine in Engine.allCases {
            let jmp = try progArray(1)
            let p = try stepProg([.tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(5)], engine: engine)
            let prog = try bpf.prog(p)
            XCTAssertEqual(prog.body.symbol, ["jit": "bpfp_tc_jit", "interpreter": "bpfp_step_interp", "direct": "bpfp_tc_direct"]["\(engine)"])
            prog.put()
            try setSlot(jmp, 0, p)
            var md = cbpf_xdp_md()
            let p2 = try bpf.prog(p)
            XCTAssertEqual(bpfProgRun(p2.raw, &md), 5, "\(engine)")
            XCTAssertEqual(md.tail_call_cnt, 33, "\(engine): 33 tail calls, then fall through")
            p2.put()
            try bpf.mapDeleteElem(jmp, key: key(0))
        }
    }

    func testTargetReturnValueBecomesTheRunsAndFallThroughRules() throws {
        for engine in Engine.allCases {
            let jmp = try progArray(4)
            let target = try stepProg([.returnConst(XDP_DROP)], engine: engine)
            try setSlot(jmp, 2, target)
            let hit = try stepProg([.tailCall(arrayFD: jmp, index: .constant(2)), .returnConst(XDP_PASS)], engine: engine)
            XCTAssertEqual(try run(hit), XDP_DROP, "\(engine): the target's value is the run's")
            let empty = try stepProg([.tailCall(arrayFD: jmp, index: .constant(1)), .returnConst(XDP_PASS)], engine: engine)
            XCTAssertEqual(try run(empty), XDP_PASS, "\(engine): empty slot falls through")
            let beyond = try stepProg([.tailCall(arrayFD: jmp, index: .constant(4)), .returnConst(XDP_TX)], engine: engine)
            XCTAssertEqual(try run(beyond), XDP_TX, "\(engine): index ≥ max_entries falls through")
            let huge = try stepProg([.tailCall(arrayFD: jmp, index: .constant(0xffff_ffff)), .returnConst(XDP_TX)], engine: engine)
            XCTAssertEqual(try run(huge), XDP_TX, "\(engine): index 2^32-1 falls through")
        }
    }

    func testIndexIsTruncatedToU32() throws {
        for engine in Engine.allCases {
            let jmp = try progArray(4)
            try setSlot(jmp, 2, try stepProg([.returnConst(XDP_DROP)], engine: engine))
            let c = try stepProg([.tailCall(arrayFD: jmp, index: .constant(0x1_0000_0002)), .returnConst(XDP_PASS)], engine: engine)
            XCTAssertEqual(try run(c), XDP_DROP, "\(engine): 2^32 + 2 is index 2")
            let v = try stepProg([.setVar(0, 0xdead_0000_0000_0002), .tailCall(arrayFD: jmp, index: .variable(0)), .returnConst(XDP_PASS)], engine: engine)
            XCTAssertEqual(try run(v), XDP_DROP, "\(engine): a 64-bit variable index is truncated")
        }
    }

    func testTailCallIndexFromAVariableSetByTheFacade() throws {
        let jmp = try progArray(4)
        try setSlot(jmp, 1, try stepProg([.returnConst(XDP_DROP)], engine: .jit))
        try setSlot(jmp, 3, try stepProg([.returnConst(XDP_TX)], engine: .jit))
        let p = try stepProg([.tailCall(arrayFD: jmp, index: .variable(2)), .returnConst(XDP_PASS)], engine: .jit)
        XCTAssertEqual(try run(p), XDP_PASS)
        try bpf.progSetVar(p, index: 2, value: 1)
        XCTAssertEqual(try run(p), XDP_DROP)
        try bpf.progSetVar(p, index: 2, value: 3)
        XCTAssertEqual(try run(p), XDP_TX)
        assertErrno(.E2BIG, "variable out of range") { try bpf.progSetVar(p, index: 8, value: 0) }
        let native = try loadReturning(1)
        assertErrno(.EINVAL, "not a step program") { try bpf.progSetVar(native, index: 0, value: 0) }
    }

    /// The counter belongs to the run: a subprogram shares it, and a tail call inside a
    /// subprogram replaces the subprogram's frame (its caller gets the target's value).
    func testCounterIsSharedWithSubprograms() throws {
        // (The interpreter may not mix bpf-to-bpf calls with tail calls: KernelRuleTests.)
        for engine in Engine.allCases where engine != .interpreter {
            kernel.resetCounters()
            let jmp = try progArray(1)
            let p = try stepProg([.count("entries"), .call(0), .returnLast], engine: engine,
                                 subprogs: [[.tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(7)]])
            try setSlot(jmp, 0, p)
            XCTAssertEqual(try run(p), 7)
            XCTAssertEqual(kernel.counter("entries"), 34, "\(engine): 33 tail calls in total across subprogram frames")
            try bpf.mapDeleteElem(jmp, key: key(0))
        }
        // The subprogram's tail call replaces only the subprogram's frame.
        let jmp = try progArray(1)
        try setSlot(jmp, 0, try stepProg([.returnConst(40)], engine: .jit))
        let p = try stepProg([.call(0), .count("after_call"), .returnLast], engine: .jit,
                             subprogs: [[.tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(1)]])
        kernel.resetCounters()
        XCTAssertEqual(try run(p), 40)
        XCTAssertEqual(kernel.counter("after_call"), 1, "control came back to the caller of the subprogram")
    }

    /// The interpreter counts a tail call into an empty slot; the x86 JIT counts only after
    /// the NULL check, and the direct form takes its patched bypass jump before the counter
    /// (checked on the live kernel). A program that tries an empty slot, then itself, shows
    /// the difference: 34 runs when empty attempts are free, 17 when each run spends two.
    func testInterpreterAndJITDifferOnEmptySlots() throws {
        let expected: [Engine: UInt64] = [.jit: 34, .interpreter: 17, .direct: 34]
        for engine in Engine.allCases {
            kernel.resetCounters()
            let jmp = try progArray(2)
            let p = try stepProg([.count("runs"), .tailCall(arrayFD: jmp, index: .constant(1)),
                                  .tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(1)], engine: engine)
            try setSlot(jmp, 0, p)
            XCTAssertEqual(try run(p), 1)
            XCTAssertEqual(kernel.counter("runs"), expected[engine], "\(engine)")
            try bpf.mapDeleteElem(jmp, key: key(0))
        }
    }

    func testDirectTailCallIsRepointedOnEveryChangeOfItsSlot() throws {
        let jmp = try progArray(2)
        let p = try stepProg([.tailCall(arrayFD: jmp, index: .constant(1)), .returnConst(XDP_PASS)], engine: .direct)
        XCTAssertEqual(try run(p), XDP_PASS, "empty slot: bypass")
        try setSlot(jmp, 1, try stepProg([.returnConst(XDP_DROP)], engine: .jit))
        XCTAssertEqual(try run(p), XDP_DROP, "insert: jump to the target")
        try setSlot(jmp, 1, try stepProg([.returnConst(XDP_TX)], engine: .jit))
        XCTAssertEqual(try run(p), XDP_TX, "replace: retarget")
        try bpf.mapDeleteElem(jmp, key: key(1))
        XCTAssertEqual(try run(p), XDP_PASS, "delete: bypass restored")
        // A program loaded after the slot is filled picks the target up at once.
        try setSlot(jmp, 1, try stepProg([.returnConst(XDP_REDIRECT)], engine: .jit))
        let late = try stepProg([.tailCall(arrayFD: jmp, index: .constant(1)), .returnConst(XDP_PASS)], engine: .direct)
        XCTAssertEqual(try run(late), XDP_REDIRECT)
    }

    func testProgArrayElementErrnos() throws {
        let jmp = try progArray(4)
        let p = try stepProg([.returnConst(1)], engine: .jit, name: "member")
        let map = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1))
        try setSlot(jmp, 0, p)
        assertErrno(.EINVAL, "flags other than BPF_ANY") { try bpf.mapUpdateElem(jmp, key: key(1), value: fdValue(p), flags: 1) }
        assertErrno(.E2BIG, "index ≥ max_entries") { try setSlot(jmp, 4, p) }
        assertErrno(.EBADF, "closed program fd") { try setSlot(jmp, 1, 77) }
        assertErrno(.EINVAL, "map fd as value") { try setSlot(jmp, 1, map) }
        assertErrno(.EINVAL, "short value") { try bpf.mapUpdateElem(jmp, key: key(1), value: [1, 0]) }
        assertErrno(.E2BIG, "delete index ≥ max_entries") { try bpf.mapDeleteElem(jmp, key: key(9)) }
        assertErrno(.ENOENT, "delete of an empty slot") { try bpf.mapDeleteElem(jmp, key: key(1)) }
        assertErrno(.ENOENT, "lookup of an empty slot") { try bpf.mapLookupElem(jmp, key: key(1)) }
        XCTAssertEqual(u32(try bpf.mapLookupElem(jmp, key: key(0))), try id(p), "lookup returns the program ID")
        let target = try bpf.progLoad(ProgLoadAttr(steps: StepProgram([.call(0), .returnLast], subprogs: [[.returnConst(0)]]), name: "target"))
        let ext = try bpf.progLoad(.extension(of: target, function: "sub0", body: .xdpDrop))
        assertErrno(.EINVAL, "extension program") { try setSlot(jmp, 1, ext) }
    }

    func testOwnerRuleFixesTypeAndJITedness() throws {
        let jmp = try progArray(4)
        _ = try stepProg([.tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(1)], engine: .jit, name: "user")
        let tc = try stepProg([.returnConst(1)], engine: .jit, type: .schedCls)
        assertErrno(.EINVAL, "sched_cls into an xdp array") { try setSlot(jmp, 0, tc) }
        let interp = try stepProg([.returnConst(1)], engine: .interpreter)
        assertErrno(.EINVAL, "interpreted into a JIT-ed array") { try setSlot(jmp, 0, interp) }
        assertErrno(.EINVAL, "loading an interpreted user of a JIT-ed array") {
            try stepProg([.tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(1)], engine: .interpreter)
        }
        let frags = try load(ProgLoadAttr(steps: StepProgram([.returnConst(1)]), flags: .xdpHasFrags))
        assertErrno(.EINVAL, "frags into a non-frags array") { try setSlot(jmp, 0, frags) }
        try setSlot(jmp, 0, try stepProg([.returnConst(2)], engine: .jit))
        let a = try bpf.map(jmp)
        defer { a.put() }
        XCTAssertEqual((a as? ProgArray)?.owner?.type, .xdp)
    }

    func testStepProgramVerifierErrnos() throws {
        let arr = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1))
        assertErrno(.EINVAL, "no steps") { try stepProg([], engine: .jit) }
        assertErrno(.EINVAL, "no return at the end") { try stepProg([.count("x")], engine: .jit) }
        assertErrno(.EINVAL, "missing subprogram") { try stepProg([.call(1), .returnLast], engine: .jit, subprogs: [[.returnConst(1)]]) }
        assertErrno(.EINVAL, "recursion") { try stepProg([.call(0), .returnLast], engine: .jit, subprogs: [[.call(0), .returnLast]]) }
        assertErrno(.EINVAL, "variable out of range") { try stepProg([.returnVar(9)], engine: .jit) }
        assertErrno(.EINVAL, "tail call through a plain array") { try stepProg([.tailCall(arrayFD: arr, index: .constant(0)), .returnConst(1)], engine: .jit) }
        assertErrno(.EBADF, "tail call through a closed fd") { try stepProg([.tailCall(arrayFD: 88, index: .constant(0)), .returnConst(1)], engine: .jit) }
        assertErrno(.EINVAL, "both body and steps") {
            var a = ProgLoadAttr(steps: StepProgram([.returnConst(1)]))
            a.body = .xdpPass
            return try bpf.progLoad(a)
        }
    }

    /// A program that tail-calls through an array and sits in it keeps itself alive
    /// through the array — until the array's last user reference goes and it is flushed.
    func testUserReferenceFlushFreesAProgramInItsOwnArray() throws {
        let jmp = try progArray(1)
        let p = try stepProg([.tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(1)], engine: .jit, name: "selfish")
        try setSlot(jmp, 0, p)
        let pid = try id(p)
        try bpf.objClose(p)
        settle()
        XCTAssertNotNil(try? bpf.objClose(try bpf.progGetFdById(pid)), "alive: its array slot holds it")
        kernel.startEventLog()
        try bpf.objClose(jmp)  // the last user reference: flush
        settle()
        XCTAssertThrowsError(try bpf.progGetFdById(pid))
        XCTAssertEqual(kernel.liveObjects, 0, "the flush broke the program ↔ array cycle")
        XCTAssertTrue(kernel.events.contains { $0.kind == "map" && $0.stage == .flushed })
    }

    func testPinnedArraySurvivesItsFdsAndUnpinFlushesIt() throws {
        let jmp = try progArray(2)
        let p = try stepProg([.tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(1)], engine: .jit)
        try setSlot(jmp, 0, p)
        let pid = try id(p)
        try bpf.objPin(jmp, path: "/sys/fs/bpf/jmp")
        assertErrno(.EEXIST, "pin twice") { try bpf.objPin(jmp, path: "/sys/fs/bpf/jmp") }
        assertErrno(.EPERM, "outside bpffs") { try bpf.objPin(jmp, path: "/tmp/jmp") }
        assertErrno(.ENOENT, "get of a missing pin") { try bpf.objGet(path: "/sys/fs/bpf/nope") }
        try bpf.objClose(p)
        try bpf.objClose(jmp)
        settle()
        let again = try bpf.objGet(path: "/sys/fs/bpf/jmp")
        XCTAssertEqual(u32(try bpf.mapLookupElem(again, key: key(0))), pid, "the pin kept a user reference: no flush")
        try bpf.objClose(again)
        try bpf.unpin(path: "/sys/fs/bpf/jmp")
        settle()
        XCTAssertEqual(kernel.liveObjects, 0)
    }
}
