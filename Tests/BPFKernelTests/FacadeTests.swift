// Every errno path of the bpf(2) facade, each checked to leave the kernel unchanged;
// stats; BPF_PROG_TEST_RUN.
import XCTest
import CBPFShims
import BPFPrograms
import Synchronization
@testable import BPFKernel

final class FacadeErrnoTests: KernelTestCase {
    func testProgLoadRejectsBadAttributesWithEINVALOrE2BIG() throws {
        _ = try loadReturning(2, name: "bystander")
        assertErrno(.EINVAL, "unknown flag") {
            var a = ProgLoadAttr.returning(1)
            a.progFlags = 1 << 9
            return try bpf.progLoad(a)
        }
        assertErrno(.EINVAL, "no instructions") { try bpf.progLoad(ProgLoadAttr(body: nil)) }
        assertErrno(.EINVAL, "unknown type") {
            var a = ProgLoadAttr.returning(1)
            a.progType = 0
            return try bpf.progLoad(a)
        }
        assertErrno(.EINVAL, "name too long") { try bpf.progLoad(.returning(1, name: "sixteen_chars_xx")) }
        assertErrno(.EINVAL, "name with a bad character") { try bpf.progLoad(.returning(1, name: "a-b")) }
        assertErrno(.EINVAL, "empty license") {
            var a = ProgLoadAttr.returning(1)
            a.license = ""
            return try bpf.progLoad(a)
        }
        assertErrno(.E2BIG, "data block too large") {
            try bpf.progLoad(ProgLoadAttr(body: .xdpPass, data: [UInt8](repeating: 0, count: progMaxDataBytes + 1)))
        }
        XCTAssertNoThrow(try bpf.progLoad(.returning(1, name: "fifteen_chars_x")))
    }

    func testProgLoadWithBadMapFdsLeavesMapsUntouched() throws {
        let mfd = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 2, name: "m"))
        let pfd = try loadReturning(1)
        assertErrno(.EBADF, "closed map fd") { try bpf.progLoad(ProgLoadAttr(body: .xdpPass, mapFDs: [mfd, 99])) }
        assertErrno(.EINVAL, "program fd as map fd") { try bpf.progLoad(ProgLoadAttr(body: .xdpPass, mapFDs: [mfd, pfd])) }
        assertErrno(.EINVAL, "bad flag after maps resolved") {
            var a = ProgLoadAttr(body: .xdpPass, mapFDs: [mfd])
            a.progFlags = 1 << 20
            return try bpf.progLoad(a)
        }
    }

    func testFdErrnos() throws {
        let pfd = try loadReturning(1)
        let mfd = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 2))
        assertErrno(.EBADF, "close of a closed fd") { try bpf.objClose(1234) }
        assertErrno(.EBADF, "info of a closed fd") { try bpf.progGetInfo(77) }
        assertErrno(.EINVAL, "map fd where a program belongs") { try bpf.progGetInfo(mfd) }
        assertErrno(.EINVAL, "program fd where a map belongs") { try bpf.mapGetInfo(pfd) }
        assertErrno(.EINVAL, "program fd to map lookup") { try bpf.mapLookupElem(pfd, key: key(0)) }
        assertErrno(.EBADF, "test run of a closed fd") { try bpf.progTestRun(TestRunAttr(progFD: 50, data: testPacket)) }
    }

    func testFdTableExhaustionIsEMFILEAndChangesNothing() throws {
        bpf = BPF(kernel: kernel, fdLimit: 6)
        for i in 0..<3 { _ = try loadReturning(UInt32(i)) }
        let before = kernel.liveObjects
        assertErrno(.EMFILE, "table full") { try loadReturning(9) }
        settle()
        XCTAssertEqual(kernel.liveObjects, before, "the program loaded for the fd was released again")
        let id = kernel.progIDR.ids[0]
        assertErrno(.EMFILE, "get fd by id with table full") { try bpf.progGetFdById(id) }
        assertErrno(.EMFILE, "map create with table full") { try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1)) }
        settle()
        XCTAssertEqual(kernel.liveObjects, before)
    }

    func testMapCreateErrnos() throws {
        assertErrno(.EINVAL, "unknown type") {
            var a = MapCreateAttr(type: .array, maxEntries: 1)
            a.mapType = 99
            return try bpf.mapCreate(a)
        }
        assertErrno(.EINVAL, "max_entries 0") { try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 0)) }
        assertErrno(.EINVAL, "key size 8") { try bpf.mapCreate(MapCreateAttr(type: .array, keySize: 8, maxEntries: 1)) }
        assertErrno(.EINVAL, "value size 0") { try bpf.mapCreate(MapCreateAttr(type: .array, valueSize: 0, maxEntries: 1)) }
        assertErrno(.E2BIG, "value too large") { try bpf.mapCreate(MapCreateAttr(type: .array, valueSize: 2 << 20, maxEntries: 1)) }
        assertErrno(.EINVAL, "map flags") { try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1, flags: 4)) }
        assertErrno(.EINVAL, "bad name") { try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1, name: "a b")) }
        assertErrno(.EINVAL, "prog array value size") { try bpf.mapCreate(MapCreateAttr(type: .progArray, valueSize: 8, maxEntries: 1)) }
        assertErrno(.EINVAL, "prog array key size") { try bpf.mapCreate(MapCreateAttr(type: .progArray, keySize: 8, maxEntries: 1)) }
        assertErrno(.EINVAL, "prog array max_entries 0") { try bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: 0)) }
    }

    func testArrayMapElementErrnos() throws {
        let mfd = try bpf.mapCreate(MapCreateAttr(type: .array, valueSize: 8, maxEntries: 4, name: "arr"))
        let v: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8]
        try bpf.mapUpdateElem(mfd, key: key(3), value: v)
        XCTAssertEqual(try bpf.mapLookupElem(mfd, key: key(3)), v)
        XCTAssertEqual(try bpf.mapLookupElem(mfd, key: key(0)), [UInt8](repeating: 0, count: 8))
        assertErrno(.E2BIG, "update index out of range") { try bpf.mapUpdateElem(mfd, key: key(4), value: v) }
        assertErrno(.ENOENT, "lookup index out of range") { try bpf.mapLookupElem(mfd, key: key(4)) }
        assertErrno(.EEXIST, "NOEXIST on an array") { try bpf.mapUpdateElem(mfd, key: key(1), value: v, flags: 1) }
        assertErrno(.EINVAL, "unknown flags") { try bpf.mapUpdateElem(mfd, key: key(1), value: v, flags: 8) }
        assertErrno(.EINVAL, "short key") { try bpf.mapUpdateElem(mfd, key: [1], value: v) }
        assertErrno(.EINVAL, "wrong value size") { try bpf.mapUpdateElem(mfd, key: key(1), value: [1]) }
        assertErrno(.EINVAL, "delete from an array") { try bpf.mapDeleteElem(mfd, key: key(1)) }
        XCTAssertEqual(u32(try bpf.mapGetNextKey(mfd, key: nil)), 0)
        XCTAssertEqual(u32(try bpf.mapGetNextKey(mfd, key: key(2))), 3)
        assertErrno(.ENOENT, "next key after the last") { try bpf.mapGetNextKey(mfd, key: key(3)) }
        XCTAssertEqual(try bpf.mapLookupElem(mfd, key: key(3)), v, "failed updates changed nothing")
    }

    func testMapIDLookupsAndIteration() throws {
        let a = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1, name: "a"))
        let b = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1, name: "b"))
        let ida = try bpf.mapGetInfo(a).id, idb = try bpf.mapGetInfo(b).id
        XCTAssertEqual(try bpf.mapGetNextId(0), ida)
        XCTAssertEqual(try bpf.mapGetNextId(ida), idb)
        assertErrno(.ENOENT, "past the last map") { try bpf.mapGetNextId(idb) }
        let a2 = try bpf.mapGetFdById(ida)
        XCTAssertEqual(try bpf.mapGetInfo(a2).usercnt, 2, "an fd from an ID holds a user reference")
        try bpf.objClose(a)
        try bpf.objClose(a2)
        assertErrno(.ENOENT, "closed map's ID") { try bpf.mapGetFdById(ida) }
    }

    func testEnableStatsRejectsUnknownType() {
        assertErrno(.EINVAL, "stats type 1") { try bpf.enableStats(1) }
        XCTAssertEqual(StatsEnable.enableCount, 0)
    }

    func testBPFErrorPrintsErrnoNameAndSentence() {
        let e = BPFError(.E2BIG, "slot 9 is out of range")
        XCTAssertEqual(e.description, "E2BIG (7): slot 9 is out of range")
        XCTAssertEqual(Errno(name: "ELOOP"), .ELOOP)
        XCTAssertNil(Errno(name: "EWHATEVER"))
    }
}

final class TestRunTests: KernelTestCase {
    func testTestRunReturnsTheRawReturnValue() throws {
        for v: UInt32 in [0, 1, 2, 3, 4, 42, 0xffff_ffff] {
            let fd = try loadReturning(v)
            let r = try bpf.progTestRun(TestRunAttr(progFD: fd, data: testPacket, repeat: 10))
            XCTAssertEqual(r.retval, v)
            XCTAssertEqual(r.dataOut, testPacket)
        }
    }

    func testTestRunErrnos() throws {
        let fd = try loadReturning(2)
        assertErrno(.EINVAL, "packet shorter than ETH_HLEN") { try bpf.progTestRun(TestRunAttr(progFD: fd, data: [1, 2, 3])) }
        assertErrno(.EINVAL, "packet too large") {
            try bpf.progTestRun(TestRunAttr(progFD: fd, data: [UInt8](repeating: 0, count: testRunMaxData + 1)))
        }
        assertErrno(.EINVAL, "unknown flags") { try bpf.progTestRun(TestRunAttr(progFD: fd, data: testPacket, flags: 2)) }
        assertErrno(.EINVAL, "cpu without flag") { try bpf.progTestRun(TestRunAttr(progFD: fd, data: testPacket, cpu: 1)) }
        let traced = try bpf.progLoad(ProgLoadAttr(steps: StepProgram([.call(0), .returnLast], subprogs: [[.returnConst(0)]]), name: "traced"))
        let efd = try bpf.progLoad(.extension(of: traced, function: "sub0", body: .xdpPass))
        assertErrno(.ENOTSUPP, "extensions have no test_run") { try bpf.progTestRun(TestRunAttr(progFD: efd, data: testPacket)) }
        let tfd = try bpf.progLoad(.tracing(.traceFentry, on: traced, body: .xdpPass))
        assertErrno(.EINVAL, "tracing test runs take no repeat") { try bpf.progTestRun(TestRunAttr(progFD: tfd, data: testPacket, repeat: 2)) }
        XCTAssertEqual(try bpf.progTestRun(TestRunAttr(progFD: tfd, data: [])).retval, 0, "bpf_prog_test_run_tracing: the kernel's test functions are called")
    }

    func testRedirectBodySetsTheTargetIfindex() throws {
        let fd = try load(ProgLoadAttr(body: .xdpRedirect, data: key(7)))
        let r = try bpf.progTestRun(TestRunAttr(progFD: fd, data: testPacket))
        XCTAssertEqual(r.retval, UInt32(CBPF_XDP_REDIRECT))
        let p = try bpf.prog(fd)
        defer { p.put() }
        var md = cbpf_xdp_md()
        _ = bpfProgRun(p.raw, &md)
        XCTAssertEqual(md.redirect_ifindex, 7)
    }
}

final class StatsTests: KernelTestCase {
    func testStatsAreCollectedOnlyWhileEnabled() throws {
        let fd = try loadReturning(1, name: "counted")
        _ = try bpf.progTestRun(TestRunAttr(progFD: fd, data: testPacket, repeat: 100))
        XCTAssertEqual(try bpf.progGetInfo(fd).runCount, 0, "stats are off by default")
        let s = try bpf.enableStats()
        XCTAssertEqual(StatsEnable.enableCount, 1)
        _ = try bpf.progTestRun(TestRunAttr(progFD: fd, data: testPacket, repeat: 100))
        let info = try bpf.progGetInfo(fd)
        XCTAssertEqual(info.runCount, 100)
        XCTAssertGreaterThan(info.runTimeNs, 0)
        try bpf.objClose(s)
        _ = try bpf.progTestRun(TestRunAttr(progFD: fd, data: testPacket, repeat: 100))
        XCTAssertEqual(try bpf.progGetInfo(fd).runCount, 100, "nothing counted after the last enable fd closed")
    }

    func testStatsEnableIsCounted() throws {
        let a = try bpf.enableStats(), b = try bpf.enableStats()
        XCTAssertEqual(StatsEnable.enableCount, 2)
        try bpf.objClose(a)
        XCTAssertEqual(StatsEnable.enableCount, 1, "still on while one enable fd is open")
        try bpf.objClose(b)
        XCTAssertEqual(StatsEnable.enableCount, 0)
    }

    /// A program that re-enters itself through the tracing entry is skipped, and the skip
    /// is counted in `misses` (the recursion guard of __bpf_prog_enter).
    func testRecursionIsCountedInMisses() throws {
        let self_ = UnsafeMutablePointer<UnsafePointer<cbpf_prog>?>.allocate(capacity: 1)
        defer { self_.deallocate() }
        let helper: bpfp_helper_fn = { ctx, arg in
            let prog = arg!.assumingMemoryBound(to: UnsafePointer<cbpf_prog>?.self).pointee!
            let depth = UnsafeMutablePointer(mutating: ctx!.assumingMemoryBound(to: cbpf_xdp_md.self))
            depth.pointee.rx_queue_index += 1
            if depth.pointee.rx_queue_index > 3 { return 9 }
            return bpfProgRunTracing(prog, depth) &+ 100
        }
        var d = bpfp_helper_data(fn: helper, arg: UnsafeMutableRawPointer(self_))
        let data = withUnsafeBytes(of: &d) { Array($0) }
        let fd = try load(ProgLoadAttr(body: .callHelper, data: data, name: "recurse"))
        let p = try bpf.prog(fd)
        defer { p.put() }
        self_.pointee = UnsafePointer(p.raw)
        var md = cbpf_xdp_md()
        let ret = bpfProgRunTracing(p.raw, &md)
        XCTAssertEqual(ret, 100, "the nested run was skipped and returned 0")
        XCTAssertEqual(md.rx_queue_index, 1, "the body ran once")
        XCTAssertEqual(try bpf.progGetInfo(fd).recursionMisses, 1)
    }
}
