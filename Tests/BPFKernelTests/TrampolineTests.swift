// Trampolines (fentry/fexit/fmod_ret), extensions (freplace), text poking and the
// freplace/prog-array interlock.
import XCTest
import CBPFShims
import BPFPrograms
@testable import BPFKernel

final class TrampolineTests: KernelTestCase {
    /// A target whose main function calls global function "slot" and returns its value.
    func loadTarget(slotReturns v: UInt32 = XDP_PASS, name: String = "target") throws -> Int32 {
        try load(ProgLoadAttr(steps: StepProgram([.count("\(name)_main"), .call(0), .returnLast],
                                                 subprogs: [[.returnConst(v)]], subprogNames: ["slot"]), name: name))
    }

    func tracing(_ kind: AttachType, on fd: Int32, _ steps: [Step], function: String? = nil, name: String = "") throws -> Int32 {
        try load(.tracing(kind, on: fd, function: function, steps: StepProgram(steps), name: name))
    }

    func link(_ fd: Int32, _ kind: AttachType, cookie: UInt64 = 0) throws -> Int32 {
        try bpf.linkCreate(LinkCreateAttr(progFD: fd, attachType: kind, cookie: cookie))
    }

    func testFentryRunsBeforeAndFexitSeesTheReturnValue() throws {
        let t = try loadTarget(slotReturns: XDP_DROP)
        let fe = try tracing(.traceFentry, on: t, [.count("fentry"), .storeFuncRet(0), .returnConst(0)])
        let fx = try tracing(.traceFexit, on: t, [.count("fexit"), .storeFuncRet(0), .returnConst(0)])
        let l1 = try link(fe, .traceFentry), l2 = try link(fx, .traceFexit)
        XCTAssertEqual(try run(t), XDP_DROP, "tracing programs do not change the value")
        XCTAssertEqual(kernel.counter("fentry"), 1)
        XCTAssertEqual(kernel.counter("fexit"), 1)
        XCTAssertEqual(kernel.counter("target_main"), 1)
        XCTAssertEqual(try bpf.prog(fx).also { $0.put() }.getVar(0), UInt64(XDP_DROP), "fexit sees the function's value")
        XCTAssertEqual(try bpf.prog(fe).also { $0.put() }.getVar(0), 0, "fentry runs before there is a value")
        try bpf.objClose(l1); try bpf.objClose(l2)
        XCTAssertEqual(try run(t), XDP_DROP)
        XCTAssertEqual(kernel.counter("fentry"), 1, "detached: the entry was poked back")
        let raw = try bpf.prog(t).also { $0.put() }.raw
        XCTAssertTrue(sameFunc(cbpf_text_func(cbpf_prog_text(raw)), bpfp_step_jit), "entry restored to the body")
    }

    /// fmod_ret on the kernel's error-injectable test function (net/bpf/test_run.c's
    /// bpf_modify_return_test, driven by BPF_PROG_TEST_RUN as the kernel's modify_return
    /// selftest drives it): 0 lets the function run (b changes: side effect 1, ret 1 + 3),
    /// a non-zero value replaces its return and skips it.
    func testFmodRetOverridesTheReturnValueAndSkipsTheFunction() throws {
        let zero = try load(.tracing(.modifyReturn, on: -1, function: "bpf_modify_return_test",
                                     steps: StepProgram([.count("mod0"), .returnConst(0)]), name: "mod0"))
        let fx = try load(.tracing(.traceFexit, on: -1, function: "bpf_modify_return_test",
                                   steps: StepProgram([.storeFuncRet(0), .returnConst(0)]), name: "fx"))
        let l0 = try link(zero, .modifyReturn), l2 = try link(fx, .traceFexit)
        XCTAssertEqual(try run(zero), 1 << 16 | 4, "fmod_ret returning 0 lets the function run")
        XCTAssertEqual(kernel.counter("mod0"), 1)
        XCTAssertEqual(try bpf.prog(fx).also { $0.put() }.getVar(0), 4, "fexit sees the function's value")
        let seven = try load(.tracing(.modifyReturn, on: -1, function: "bpf_modify_return_test",
                                      steps: StepProgram([.returnConst(7)]), name: "mod7"))
        let l1 = try link(seven, .modifyReturn)
        XCTAssertEqual(try run(seven), 7, "a non-zero fmod_ret value replaces the function's; no side effect")
        XCTAssertEqual(try bpf.prog(fx).also { $0.put() }.getVar(0), 7, "fexit sees the overridden value")
        XCTAssertEqual(kernel.trampolineShape(kernelFunction: "bpf_modify_return_test")?.modifyReturn, 2)
        for l in [l0, l1, l2] { try bpf.objClose(l) }
        XCTAssertNil(kernel.trampolineShape(kernelFunction: "bpf_modify_return_test"), "empty trampoline dropped")
        XCTAssertEqual(try run(seven), 1 << 16 | 4, "detached: the function runs again")
    }

    /// check_attach_modify_return: fmod_ret only on error-injectable kernel functions;
    /// never on a BPF program ("can't modify return codes of BPF programs").
    func testFmodRetOnABPFProgramOrANonInjectableFunctionIsEINVAL() throws {
        let t = try loadTarget()
        assertErrno(.EINVAL, "fmod_ret on a BPF program") {
            try load(.tracing(.modifyReturn, on: t, steps: StepProgram([.returnConst(0)])))
        }
        assertErrno(.EINVAL, "fmod_ret on bpf_fentry_test1") {
            try load(.tracing(.modifyReturn, on: -1, function: "bpf_fentry_test1", steps: StepProgram([.returnConst(0)])))
        }
        assertErrno(.EINVAL, "no such kernel function") {
            try load(.tracing(.traceFentry, on: -1, function: "no_such_function", steps: StepProgram([.returnConst(0)])))
        }
        let fe = try load(.tracing(.traceFentry, on: -1, function: "bpf_fentry_test1",
                                   steps: StepProgram([.count("test1"), .returnConst(0)])))
        let l = try link(fe, .traceFentry)
        XCTAssertEqual(try run(fe), 0, "bpf_fentry_test1(1) == 2: test run succeeds with retval 0")
        XCTAssertEqual(kernel.counter("test1"), 1, "the fentry program ran around the kernel function")
        try bpf.objClose(l)
    }

    func testTrampolineHoldsAtMost38Links() throws {
        let t = try loadTarget()
        var links: [Int32] = []
        for i in 0..<maxTrampolineLinks {
            let kind: AttachType = [.traceFentry, .traceFexit][i % 2]
            let p = try tracing(kind, on: t, [.returnConst(0)])
            links.append(try link(p, kind))
            try bpf.objClose(p)
        }
        XCTAssertEqual(maxTrampolineLinks, 38)
        let extra = try tracing(.traceFentry, on: t, [.returnConst(0)])
        assertErrno(.E2BIG, "the 39th link") { try link(extra, .traceFentry) }
        XCTAssertEqual(try run(t), XDP_PASS, "38 programs around the function, value unchanged")
        for l in links { try bpf.objClose(l) }
        settle()
        XCTAssertNil(kernel.trampolineShape(target: try bpf.prog(t).also { $0.put() }), "the empty trampoline is gone")
    }

    func testReplacedImageIsFreedOnlyAfterReadersAreGone() throws {
        let t = try load(ProgLoadAttr(body: .xdpDrop, name: "t"))
        let header = cbpf_text_hdr_of(try bpf.prog(t).also { $0.put() }.raw.pointee.insnsi)!
        let a = try tracing(.traceFentry, on: t, [.returnConst(0)])
        let la = try link(a, .traceFentry)
        let first = header.pointee.image!.assumingMemoryBound(to: cbpf_tramp_image.self)
        // A reader that has not passed a quiescent state holds the grace period open.
        let reader = kernel.rcu.registerThread(name: "held")
        let b = try tracing(.traceFentry, on: t, [.returnConst(0)])
        let lb = try link(b, .traceFentry)
        XCTAssertNotEqual(UnsafeMutableRawPointer(first), header.pointee.image, "a change builds a new image")
        cbpf_usleep(20_000)
        XCTAssertEqual(first.pointee.magic, CBPF_TRAMP_MAGIC, "the old image stays intact while a reader may be in it")
        kernel.rcu.unregisterThread(reader)
        settle()
        XCTAssertEqual(first.pointee.magic, CBPF_POISON_MAGIC, "after the grace period it is freed (poisoned in checked mode)")
        try bpf.objClose(la); try bpf.objClose(lb)
    }

    func testSameProgramTwiceOnOneTrampolineIsEBUSY() throws {
        // On a kernel function (a program target would be EINVAL: its target went to the
        // first link — KernelRuleTests).
        let p = try load(.tracing(.traceFentry, on: -1, function: "bpf_fentry_test1", steps: StepProgram([.returnConst(0)])))
        let l = try link(p, .traceFentry)
        assertErrno(.EBUSY, "the same program twice") { try link(p, .traceFentry) }
        try bpf.objClose(l)
    }

    func linkExt(_ ext: Int32, to t: Int32, _ function: String = "slot") throws -> Int32 {
        try bpf.linkCreate(LinkCreateAttr(progFD: ext, attachType: .unspecified, targetProgFD: t, targetFunc: function))
    }

    func testExtensionAndTracingOnOneFunctionExcludeEachOther() throws {
        let t = try loadTarget()
        let ext = try load(.extension(of: t, function: "slot", body: .xdpDrop, name: "ext"))
        let fe = try tracing(.traceFentry, on: t, [.returnConst(0)], function: "slot")
        let le = try link(ext, .unspecified)
        assertErrno(.EBUSY, "fentry on an extended function") { try link(fe, .traceFentry) }
        let ext2 = try load(.extension(of: t, function: "slot", body: .xdpTx, name: "ext2"))
        assertErrno(.EBUSY, "a second extension") { try link(ext2, .unspecified) }
        try bpf.objClose(le)
        let lf = try link(fe, .traceFentry)
        assertErrno(.EBUSY, "an extension on a traced function") { try linkExt(ext, to: t) }
        try bpf.objClose(lf)
        // The main function's trampoline is a different one: fentry on main + extension on slot.
        let feMain = try tracing(.traceFentry, on: t, [.count("main_fentry"), .returnConst(0)])
        let l1 = try link(feMain, .traceFentry), l2 = try linkExt(ext, to: t)
        XCTAssertEqual(try run(t), XDP_DROP)
        XCTAssertEqual(kernel.counter("main_fentry"), 1)
        try bpf.objClose(l1); try bpf.objClose(l2)
    }

    func testLinkCookieReachesTheProgramsRunContext() throws {
        let t = try loadTarget()
        let a = try tracing(.traceFentry, on: t, [.storeCookie(0), .returnConst(0)])
        let b = try tracing(.traceFexit, on: t, [.storeCookie(0), .returnConst(0)])
        let la = try link(a, .traceFentry, cookie: 0xdead_beef_0000_0001), lb = try link(b, .traceFexit, cookie: 42)
        XCTAssertEqual(try run(t), XDP_PASS)
        XCTAssertEqual(try bpf.prog(a).also { $0.put() }.getVar(0), 0xdead_beef_0000_0001)
        XCTAssertEqual(try bpf.prog(b).also { $0.put() }.getVar(0), 42, "each link's own cookie")
        XCTAssertEqual(try bpf.linkGetInfo(la).cookie, 0xdead_beef_0000_0001)
        try bpf.objClose(la); try bpf.objClose(lb)
    }

    func testRecursionThroughTheTrampolineIsCountedAsAMiss() throws {
        let t = try load(ProgLoadAttr(body: .xdpDrop, name: "t"))
        let tp = try bpf.prog(t)
        defer { tp.put() }
        // fentry program that calls the target again (as a helper re-entering it would).
        let helper: bpfp_helper_fn = { ctx, arg in cbpf_prog_call(arg!.assumingMemoryBound(to: cbpf_prog.self), ctx) }
        var d = bpfp_helper_data(fn: helper, arg: UnsafeMutableRawPointer(tp.raw))
        let data = withUnsafeBytes(of: &d) { Array($0) }
        let fe = try load(.tracing(.traceFentry, on: t, body: .callHelper, data: data, name: "reenter"))
        let l = try link(fe, .traceFentry)
        XCTAssertEqual(try run(t), XDP_DROP)
        XCTAssertEqual(try bpf.progGetInfo(fe).recursionMisses, 1, "the nested entry skipped the running fentry program")
        try bpf.objClose(l)
    }

    func testTailCallCounterSurvivesATrampoline() throws {
        // t tail-calls itself; an fentry program on t tail-calls itself too. t is entered
        // once through its trampoline; tail calls land past the entry (no trampoline).
        let jt = try progArray(1, name: "jt"), jf = try progArray(1, name: "jf")
        let t = try load(ProgLoadAttr(steps: StepProgram([.count("t"), .tailCall(arrayFD: jt, index: .constant(0)), .returnConst(XDP_DROP)]), name: "t"))
        try setSlot(jt, 0, t)
        let f = try load(.tracing(.traceFentry, on: t, steps: StepProgram([.count("f"), .tailCall(arrayFD: jf, index: .constant(0)), .returnConst(0)]), name: "f"))
        try setSlot(jf, 0, f)
        let l = try link(f, .traceFentry)
        XCTAssertEqual(try run(t), XDP_DROP)
        XCTAssertEqual(kernel.counter("f"), 34, "the fentry program has its own 33 tail calls")
        XCTAssertEqual(kernel.counter("t"), 34, "the target's counter was not used up by the fentry program")
        try bpf.objClose(l)
        try bpf.mapDeleteElem(jt, key: key(0)); try bpf.mapDeleteElem(jf, key: key(0))
    }

    func testExtensionReplacesThePlaceholderAndDetachRestoresIt() throws {
        let t = try loadTarget(slotReturns: XDP_PASS)
        XCTAssertEqual(try run(t), XDP_PASS)
        let ext = try load(.extension(of: t, function: "slot", body: .xdpDrop, name: "ext"))
        XCTAssertEqual(try refs(t), 2, "the extension holds its target")
        let l = try link(ext, .unspecified)
        XCTAssertEqual(try run(t), XDP_DROP, "the placeholder's call site now reaches the extension")
        assertErrno(.EOPNOTSUPP, "tracing links have no detach") { try bpf.linkDetach(l) }
        XCTAssertEqual(try run(t), XDP_DROP)
        try bpf.objClose(l)
        XCTAssertEqual(try run(t), XDP_PASS, "the link's release restored the placeholder")
    }

    func testClosingInEveryOrderLeaksNothingAndTheTargetNeverHoldsTheExtension() throws {
        let orders: [[Int]] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]
        for order in orders {
            let t = try loadTarget(slotReturns: XDP_PASS)
            let ext = try load(.extension(of: t, function: "slot", body: .xdpTx, name: "ext"))
            let l = try link(ext, .unspecified)
            let extID = try id(ext), tID = try id(t)
            var fds = [t, ext, l]
            for i in order {
                try bpf.objClose(fds[i])
                fds[i] = -1
                settle()
                if fds[0] >= 0 { XCTAssertEqual(try run(fds[0]), fds[2] >= 0 ? XDP_TX : XDP_PASS, "order \(order)") }
                if fds[1] < 0 && fds[2] < 0 {
                    XCTAssertThrowsError(try bpf.progGetFdById(extID), "order \(order): the target kept the extension alive")
                }
            }
            settle()
            XCTAssertThrowsError(try bpf.progGetFdById(tID))
            XCTAssertEqual(kernel.liveObjects, 0, "order \(order) leaked")
        }
    }

    func testFreplaceAndProgArrayExcludeEachOther() throws {
        let jmp = try progArray(2)
        let member = try loadTarget(name: "member")
        try setSlot(jmp, 0, member)
        let ext = try load(.extension(of: member, function: "slot", body: .xdpDrop, name: "ext"))
        assertErrno(.EBUSY, "extending a prog-array member") { try link(ext, .unspecified) }
        assertErrno(.EINVAL, "an extension into a prog array") { try setSlot(jmp, 1, ext) }
        try bpf.mapDeleteElem(jmp, key: key(0))
        let l = try link(ext, .unspecified)
        assertErrno(.EBUSY, "an extended program into a prog array") { try setSlot(jmp, 0, member) }
        try bpf.objClose(l)
        try setSlot(jmp, 0, member)
        try bpf.mapDeleteElem(jmp, key: key(0))
    }

    func testAttachTargetErrnos() throws {
        let t = try loadTarget()
        assertErrno(.EINVAL, "extension without a target") { try load(ProgLoadAttr(type: .ext, body: .xdpDrop)) }
        assertErrno(.EINVAL, "no such function") { try load(.extension(of: t, function: "nope", body: .xdpDrop)) }
        assertErrno(.EINVAL, "replacing the main function") { try load(.extension(of: t, function: "target", body: .xdpDrop)) }
        assertErrno(.EBADF, "bad target fd") { try load(.extension(of: 99, function: "slot", body: .xdpDrop)) }
        let ext = try load(.extension(of: t, function: "slot", body: .xdpDrop))
        assertErrno(.EINVAL, "an extension of an extension") { try load(ProgLoadAttr.tracing(.unspecified, on: ext, function: "x", steps: StepProgram([.returnConst(0)]))) }
        assertErrno(.EINVAL, "tracing with a non-tracing attach type") { try load(.tracing(.xdp, on: t, body: .xdpPass)) }
        var xdp = ProgLoadAttr(body: .xdpPass)
        xdp.attachProgFD = t
        assertErrno(.EINVAL, "an xdp program with attach_prog_fd") { try load(xdp) }
        let fe = try tracing(.traceFentry, on: t, [.returnConst(0)])
        assertErrno(.EINVAL, "link attach type differs from the load's") { try link(fe, .traceFexit) }
        assertErrno(.EINVAL, "tracing on a tracing program") { try tracing(.traceFentry, on: fe, [.returnConst(0)]) }
    }

    func testTextPokeWithTheWrongExpectedTargetIsEBUSYAndChangesNothing() throws {
        let t = try load(ProgLoadAttr(body: .xdpDrop, name: "t"))
        let p = try bpf.prog(t)
        defer { p.put() }
        let site = UnsafeMutablePointer<cbpf_text>(OpaquePointer(p.raw))
        XCTAssertThrowsError(try textPoke(site, expected: bpfp_xdp_pass, new: bpfp_xdp_tx, what: "test")) {
            XCTAssertEqual(($0 as? BPFError)?.errno, .EBUSY)
        }
        XCTAssertEqual(try run(t), XDP_DROP, "the site still calls its body")
        try textPoke(site, expected: bpfp_xdp_drop, new: bpfp_xdp_tx, what: "test")
        XCTAssertEqual(try run(t), XDP_TX)
        try textPoke(site, expected: bpfp_xdp_tx, new: bpfp_xdp_drop, what: "test")
    }
}
