// The kernel rules the lab had wrong (issue 10, section 3; ../shared/KERNEL_RULES.md), one
// test per rule, named for it.
import XCTest
import CBPFShims
@testable import BPFKernel

final class KernelRuleTests: KernelTestCase {
    /// Rule 1 (checked on the live kernel of this machine kind): a direct tail call to an
    /// empty slot takes the patched bypass before the counter — a program that tries an
    /// empty constant slot and then tail-calls itself runs 34 times. The interpreter counts
    /// the empty attempt (17 runs); the JIT's indirect sequence does not (34).
    func testDirectTailCallToAnEmptySlotIsNotCounted() throws {
        for (engine, jited, direct, want) in [("direct", true, true, 34), ("jit", true, false, 34), ("interp", false, false, 17)] {
            kernel.resetCounters()
            let jmp = try progArray(2, name: "jmp_\(engine)")
            let p = try load(ProgLoadAttr(steps: StepProgram([.count("runs"),
                                                              .tailCall(arrayFD: jmp, index: .constant(1)),  // empty
                                                              .tailCall(arrayFD: jmp, index: .constant(0)),
                                                              .returnConst(XDP_PASS)], directTailCalls: direct),
                                          name: "selfloop", jited: jited))
            try setSlot(jmp, 0, p)
            XCTAssertEqual(try run(p), XDP_PASS)
            XCTAssertEqual(kernel.counter("runs"), UInt64(want), "\(engine) engine")
            try bpf.mapDeleteElem(jmp, key: key(0))
            try bpf.objClose(p)
            try bpf.objClose(jmp)
        }
    }

    /// Rule 1, the specialised "tail call K; return R" body of the direct engine.
    func testSpecialisedDirectTailCallBypassesAnEmptySlotUncounted() throws {
        let jmp = try progArray(2)
        let p = try load(ProgLoadAttr(steps: StepProgram([.tailCall(arrayFD: jmp, index: .constant(1)), .returnConst(XDP_DROP)],
                                                         directTailCalls: true), name: "tc"))
        var md = cbpf_xdp_md()
        let raw = try bpf.prog(p).also { $0.put() }.raw
        XCTAssertEqual(bpfProgRun(raw, &md), XDP_DROP)
        XCTAssertEqual(md.tail_call_cnt, 0, "the bypass jump was taken before the increment")
    }

    /// Rule 2: the compatibility check claims the owner before the extended-program EBUSY
    /// check, so an insert refused with EBUSY has still fixed the array's owner.
    func testInsertRefusedWithEBUSYHasStillClaimedTheOwner() throws {
        let jmp = try progArray(2)
        let t = try load(ProgLoadAttr(steps: StepProgram([.call(0), .returnLast], subprogs: [[.returnConst(XDP_PASS)]],
                                                         subprogNames: ["slot"]), name: "t"))
        let ext = try load(.extension(of: t, function: "slot", body: .xdpDrop, name: "ext"))
        let l = try bpf.linkCreate(LinkCreateAttr(progFD: ext, attachType: .unspecified))
        let array = try bpf.map(jmp) as! ProgArray
        array.put()  // bpf.map's reference; the fd keeps it alive
        XCTAssertNil(array.owner)
        XCTAssertThrowsError(try setSlot(jmp, 0, t)) { XCTAssertEqual(($0 as? BPFError)?.errno, .EBUSY) }
        XCTAssertEqual(array.owner?.type, .xdp, "the refused insert fixed the owner")
        let interp = try load(ProgLoadAttr(steps: StepProgram([.returnConst(XDP_PASS)]), name: "i", jited: false))
        assertErrno(.EINVAL, "an interpreted program into an array owned by JIT-ed xdp") { try setSlot(jmp, 1, interp) }
        try bpf.objClose(l)
    }

    /// Rule 3: an extension is compared as its target's type, also when it is loaded
    /// using a prog array (bpf_check_tail_call / resolve_prog_type).
    func testExtensionLoadedUsingAProgArrayOwnsItAsItsTargetsType() throws {
        let jmp = try progArray(2)
        let t = try load(ProgLoadAttr(steps: StepProgram([.call(0), .returnLast], subprogs: [[.returnConst(XDP_PASS)]],
                                                         subprogNames: ["slot"]), name: "t"))
        var attr = ProgLoadAttr.tracing(.unspecified, on: t, function: "slot",
                                        steps: StepProgram([.tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(XDP_DROP)]), name: "ext")
        attr.progType = ProgType.ext.rawValue
        let ext = try load(attr)
        let array = try bpf.map(jmp) as! ProgArray
        array.put()  // bpf.map's reference; the fd keeps it alive
        XCTAssertEqual(array.owner?.type, .xdp, "owned as xdp (the target's type), not ext")
        let other = try loadReturning(XDP_PASS, name: "member")
        XCTAssertNoThrow(try setSlot(jmp, 0, other), "an xdp program joins the array")
        try bpf.objClose(ext)
    }

    /// Rule 4: a program that is not JIT-ed may not mix bpf-to-bpf calls with tail calls.
    func testInterpretedProgramMixingCallsAndTailCallsIsRefused() throws {
        let jmp = try progArray(1)
        let sp = StepProgram([.call(0), .tailCall(arrayFD: jmp, index: .constant(0)), .returnLast], subprogs: [[.returnConst(1)]])
        assertErrno(.EINVAL, "interpreted, calls + tail calls") { try load(ProgLoadAttr(steps: sp, name: "mix", jited: false)) }
        XCTAssertNoThrow(try load(ProgLoadAttr(steps: sp, name: "mix", jited: true)), "the JIT allows it")
        XCTAssertNoThrow(try load(ProgLoadAttr(steps: StepProgram([.call(0), .returnLast], subprogs: [[.returnConst(1)]]),
                                               name: "calls", jited: false)), "calls alone are fine")
    }

    /// Rule 6: the first link takes over the load-time target; a second link without a
    /// target is EINVAL, also after the first is closed. Only extensions may name a new
    /// target (target_fd + function) when linking; the same program twice on one
    /// trampoline is EBUSY.
    func testFirstLinkTakesTheTargetAndOnlyExtensionsNameANewOne() throws {
        let slot = StepProgram([.call(0), .returnLast], subprogs: [[.returnConst(XDP_PASS)]], subprogNames: ["slot"])
        let t1 = try load(ProgLoadAttr(steps: slot, name: "t1")), t2 = try load(ProgLoadAttr(steps: slot, name: "t2"))
        let fe = try load(.tracing(.traceFentry, on: t1, steps: StepProgram([.count("fe"), .returnConst(0)]), name: "fe"))
        let l1 = try bpf.linkCreate(LinkCreateAttr(progFD: fe, attachType: .traceFentry))
        assertErrno(.EINVAL, "a second link without a target") { try bpf.linkCreate(LinkCreateAttr(progFD: fe, attachType: .traceFentry)) }
        assertErrno(.EINVAL, "a tracing program naming a new target") {
            try bpf.linkCreate(LinkCreateAttr(progFD: fe, attachType: .traceFentry, targetProgFD: t2, targetFunc: "t2"))
        }
        try bpf.objClose(l1)
        assertErrno(.EINVAL, "again after the first link is closed") { try bpf.linkCreate(LinkCreateAttr(progFD: fe, attachType: .traceFentry)) }

        let ext = try load(.extension(of: t1, function: "slot", body: .xdpDrop, name: "ext"))
        let e1 = try bpf.linkCreate(LinkCreateAttr(progFD: ext, attachType: .unspecified))
        assertErrno(.EINVAL, "an extension's second link without a target") {
            try bpf.linkCreate(LinkCreateAttr(progFD: ext, attachType: .unspecified))
        }
        let e2 = try bpf.linkCreate(LinkCreateAttr(progFD: ext, attachType: .unspecified, targetProgFD: t2, targetFunc: "slot"))
        XCTAssertEqual(try run(t1), XDP_DROP)
        XCTAssertEqual(try run(t2), XDP_DROP, "the extension replaces the new target's function too")
        assertErrno(.EBUSY, "the same extension on the same function again") {
            try bpf.linkCreate(LinkCreateAttr(progFD: ext, attachType: .unspecified, targetProgFD: t2, targetFunc: "slot"))
        }
        assertErrno(.EINVAL, "target_fd without the function") {
            try bpf.linkCreate(LinkCreateAttr(progFD: ext, attachType: .unspecified, targetProgFD: t2))
        }
        try bpf.objClose(e1); try bpf.objClose(e2)

        // A tracing program on a kernel function knows its target from its attach_btf_id:
        // it may link again once its link is gone.
        let k = try load(.tracing(.traceFentry, on: -1, function: "bpf_fentry_test1", steps: StepProgram([.returnConst(0)]), name: "k"))
        let k1 = try bpf.linkCreate(LinkCreateAttr(progFD: k, attachType: .traceFentry))
        assertErrno(.EBUSY, "linked twice on one trampoline") { try bpf.linkCreate(LinkCreateAttr(progFD: k, attachType: .traceFentry)) }
        try bpf.objClose(k1)
        XCTAssertNoThrow(try bpf.objClose(try bpf.linkCreate(LinkCreateAttr(progFD: k, attachType: .traceFentry))))
    }

    /// Rule 7: tracing links have no detach.
    func testTracingLinksCannotBeDetached() throws {
        let k = try load(.tracing(.traceFexit, on: -1, function: "bpf_fentry_test1", steps: StepProgram([.returnConst(0)]), name: "k"))
        let l = try bpf.linkCreate(LinkCreateAttr(progFD: k, attachType: .traceFexit))
        assertErrno(.EOPNOTSUPP, "LINK_DETACH of a tracing link") { try bpf.linkDetach(l) }
        XCTAssertFalse(try bpf.linkGetInfo(l).detached)
    }

    /// Rule 8: each XDP mode has its own slot; native and generic cannot be active
    /// together (EEXIST); detach and REPLACE name the mode; HW needs an offloaded program.
    func testXDPModesHaveSeparateSlotsAndNativeExcludesGeneric() throws {
        let dev = NetDevice(kernel: kernel, name: "veth0")
        defer { dev.detachAll() }
        let a = try loadReturning(XDP_DROP, name: "a"), b = try loadReturning(XDP_TX, name: "b")
        let skb = XDPFlags.skbMode.rawValue, drv = XDPFlags.drvMode.rawValue
        try bpf.xdpAttach(dev, fd: a, flags: skb)
        XCTAssertEqual(dev.program(mode: .skb)?.name, "a")
        XCTAssertNil(dev.program(mode: .drv))
        XCTAssertEqual(dev.runXDP(&md0), XDP_DROP, "generic XDP runs the packet")
        assertErrno(.EEXIST, "native while generic is active") { try bpf.xdpAttach(dev, fd: b, flags: drv) }
        assertErrno(.EEXIST, "default mode is native") { try bpf.xdpAttach(dev, fd: b) }
        try bpf.xdpAttach(dev, fd: -1)  // detaches native (empty): generic stays
        XCTAssertEqual(dev.program(mode: .skb)?.name, "a", "a detach without a mode flag names native mode")
        assertErrno(.EEXIST, "REPLACE in skb mode with the wrong expected program") {
            try bpf.xdpAttach(dev, fd: b, flags: skb | XDPFlags.replace.rawValue, expectedFD: b)
        }
        try bpf.xdpAttach(dev, fd: b, flags: skb | XDPFlags.replace.rawValue, expectedFD: a)
        XCTAssertEqual(dev.runXDP(&md0), XDP_TX)
        try bpf.xdpAttach(dev, fd: -1, flags: skb)
        XCTAssertNil(dev.program)
        try bpf.xdpAttach(dev, fd: a, flags: drv)
        assertErrno(.EEXIST, "generic while native is active") { try bpf.xdpAttach(dev, fd: b, flags: skb) }
        assertErrno(.EINVAL, "HW mode without an offloaded program") { try bpf.xdpAttach(dev, fd: b, flags: XDPFlags.hwMode.rawValue) }
        try bpf.xdpAttach(dev, fd: -1, flags: drv)
        let l = try bpf.linkCreate(LinkCreateAttr(progFD: b, device: dev, attachType: .xdp, flags: skb))
        XCTAssertTrue(dev.hasLink(mode: .skb))
        assertErrno(.EBUSY, "legacy attach over the skb-mode link") { try bpf.xdpAttach(dev, fd: a, flags: skb) }
        assertErrno(.EEXIST, "native while the generic link is active") { try bpf.xdpAttach(dev, fd: a, flags: drv) }
        try bpf.objClose(l)
        XCTAssertNil(dev.program)
    }

    /// Rule 9: an extension's reference on its target moves into its link and is put when
    /// the link is released: after the link closes, the target's last fd frees it.
    func testExtensionTargetReferenceMovesIntoTheLink() throws {
        let t = try load(ProgLoadAttr(steps: StepProgram([.call(0), .returnLast], subprogs: [[.returnConst(XDP_PASS)]],
                                                         subprogNames: ["slot"]), name: "t"))
        let ext = try load(.extension(of: t, function: "slot", body: .xdpDrop, name: "ext"))
        XCTAssertEqual(try refs(t), 2, "fd + the extension's aux")
        let l = try bpf.linkCreate(LinkCreateAttr(progFD: ext, attachType: .unspecified))
        XCTAssertEqual(try refs(t), 2, "fd + the link (moved, not added)")
        let tid = try id(t)
        try bpf.objClose(l)
        settle()
        XCTAssertEqual(try refs(t), 1, "the link's release put the target; the extension holds nothing now")
        try bpf.objClose(t)
        settle()
        XCTAssertThrowsError(try bpf.progGetFdById(tid), "the target's last fd freed it while the extension lives")
        XCTAssertNoThrow(try bpf.progGetInfo(ext))
    }

    /// Rule 10: bpffs paths — missing parent ENOENT, a dot EPERM, outside bpffs EPERM,
    /// existing EEXIST; directories are made with mkdir and removed when empty.
    func testBPFFSPathRules() throws {
        let m = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1, name: "m"))
        assertErrno(.ENOENT, "missing parent") { try bpf.objPin(m, path: "/sys/fs/bpf/dir/m") }
        assertErrno(.EPERM, "a dot in the name") { try bpf.objPin(m, path: "/sys/fs/bpf/m.pin") }
        assertErrno(.EPERM, "outside bpffs") { try bpf.objPin(m, path: "/tmp/m") }
        // A lookup outside bpffs finds nothing (the live kernel: ENOENT for a missing path).
        assertErrno(.ENOENT, "BPF_OBJ_GET outside bpffs") { try bpf.objGet(path: "/tmp/m") }
        assertErrno(.ENOENT, "unlink outside bpffs") { try bpf.unpin(path: "/tmp/m") }
        assertErrno(.ENOENT, "a pin path ending in '/'") { try bpf.objPin(m, path: "/sys/fs/bpf/m/") }
        assertErrno(.EPERM, "a dotted directory") { try bpf.bpffsMkdir("/sys/fs/bpf/a.b") }
        try bpf.bpffsMkdir("/sys/fs/bpf/dir")
        assertErrno(.EEXIST, "mkdir twice") { try bpf.bpffsMkdir("/sys/fs/bpf/dir") }
        try bpf.objPin(m, path: "/sys/fs/bpf/dir/m")
        assertErrno(.EEXIST, "pin over an existing name") { try bpf.objPin(m, path: "/sys/fs/bpf/dir/m") }
        assertErrno(.EEXIST, "pin over a directory") { try bpf.objPin(m, path: "/sys/fs/bpf/dir") }
        assertErrno(.ENOTDIR, "a pin as a parent") { try bpf.objPin(m, path: "/sys/fs/bpf/dir/m/x") }
        assertErrno(.ENOTEMPTY, "rmdir of a non-empty directory") { try bpf.bpffsRmdir("/sys/fs/bpf/dir") }
        assertErrno(.EACCES, "obj_get of a directory") { try bpf.objGet(path: "/sys/fs/bpf/dir") }
        assertErrno(.EISDIR, "unlink of a directory") { try bpf.unpin(path: "/sys/fs/bpf/dir") }
        try bpf.objClose(m)
        let g = try bpf.objGet(path: "/sys/fs/bpf/dir/m")
        XCTAssertEqual(try bpf.mapGetInfo(g).name, "m", "the pin kept the map after its last fd")
        try bpf.objClose(g)
        try bpf.unpin(path: "/sys/fs/bpf/dir/m")
        try bpf.bpffsRmdir("/sys/fs/bpf/dir")
        assertErrno(.ENOENT, "rmdir of a missing directory") { try bpf.bpffsRmdir("/sys/fs/bpf/dir") }
    }

    func testStandardDescriptorsAreOpenFilesThatAreNotBPFObjects() throws {
        // __bpf_map_get / bpf_prog_get: a file of another kind is EINVAL; a closed fd EBADF
        // (the lab's process has stdin, stdout and stderr, as the live kernel's does).
        let jmp = try progArray(2)
        for fd: Int32 in [0, 1, 2] {
            assertErrno(.EINVAL, "fd \(fd) as a program") { try bpf.mapUpdateElem(jmp, key: key(0), value: fdValue(fd)) }
            assertErrno(.EINVAL, "fd \(fd) as a map") { try bpf.mapLookupElem(fd, key: key(0)) }
        }
        assertErrno(.EBADF, "a closed fd") { try bpf.mapLookupElem(999, key: key(0)) }
    }

    /// bpffs pins (KERNEL_RULES.md: a missing parent is ENOENT, an existing name EEXIST) and
    /// the path walk under them, as this machine's kernel answers: a pinned object on the way
    /// is not a directory (ENOTDIR) for pin, obj_get, mkdir, rmdir and unlink alike; a pin
    /// asked for with a trailing '/' is ENOTDIR; a new object named with one is ENOENT.
    func testBpffsPathWalkAPinOnTheWayIsENOTDIRAMissingDirectoryENOENT() throws {
        let m = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1, name: "m"))
        try bpf.objPin(m, path: "/sys/fs/bpf/p")
        defer { try? bpf.unpin(path: "/sys/fs/bpf/p") }
        assertErrno(.ENOTDIR, "pin through a pin") { try bpf.objPin(m, path: "/sys/fs/bpf/p/x") }
        assertErrno(.ENOTDIR, "obj_get through a pin") { try bpf.objGet(path: "/sys/fs/bpf/p/x/y") }
        assertErrno(.ENOTDIR, "mkdir through a pin") { try bpf.bpffsMkdir("/sys/fs/bpf/p/x") }
        assertErrno(.ENOTDIR, "rmdir through a pin") { try bpf.bpffsRmdir("/sys/fs/bpf/p/x") }
        assertErrno(.ENOTDIR, "unlink through a pin") { try bpf.unpin(path: "/sys/fs/bpf/p/x") }
        assertErrno(.ENOTDIR, "a pin with a trailing '/'") { try bpf.objGet(path: "/sys/fs/bpf/p/") }
        assertErrno(.EEXIST, "an existing pin, with a trailing '/'") { try bpf.objPin(m, path: "/sys/fs/bpf/p/") }
        assertErrno(.ENOENT, "a new object named with a trailing '/'") { try bpf.objPin(m, path: "/sys/fs/bpf/q/") }
        assertErrno(.ENOENT, "a missing directory on the way") { try bpf.objGet(path: "/sys/fs/bpf/none/x") }
        assertErrno(.ENOENT, "a missing parent") { try bpf.objPin(m, path: "/sys/fs/bpf/none/x") }
    }
}

/// A context for single packets through a device.
nonisolated(unsafe) var md0 = cbpf_xdp_md()
