// Links: XDP links on a device (create, update with the expected old program, detach,
// device gone), IDs, pins, and what a link holds.
import XCTest
import CBPFShims
@testable import BPFKernel

final class LinkTests: KernelTestCase {
    func testXDPLinkOwnsTheAttachmentAndItsLastPutDetaches() throws {
        let dev = NetDevice(kernel: kernel, name: "veth0", ifindex: 7)
        defer { dev.detachAll() }
        let a = try load(ProgLoadAttr(body: .xdpDrop, name: "a"))
        let l = try bpf.linkCreate(LinkCreateAttr(progFD: a, device: dev, attachType: .xdp))
        var md = cbpf_xdp_md()
        XCTAssertEqual(dev.runXDP(&md), XDP_DROP)
        XCTAssertEqual(try refs(a), 3, "fd, link and device each hold one")
        let info = try bpf.linkGetInfo(l)
        XCTAssertEqual(info.type, .xdp)
        XCTAssertEqual(info.targetID, 7)
        XCTAssertEqual(info.progID, try id(a))
        XCTAssertEqual(try bpf.linkGetNextId(0), info.id)
        let l2 = try bpf.linkGetFdById(info.id)
        try bpf.objClose(l)
        XCTAssertEqual(dev.runXDP(&md), XDP_DROP, "another fd still holds the link")
        try bpf.objPin(l2, path: "/sys/fs/bpf/xdp_link")
        try bpf.objClose(l2)
        XCTAssertEqual(dev.runXDP(&md), XDP_DROP, "the pin holds the link")
        try bpf.unpin(path: "/sys/fs/bpf/xdp_link")
        XCTAssertNil(dev.program, "the last put detached")
        XCTAssertEqual(try refs(a), 1)
        assertErrno(.ENOENT, "the freed link's ID") { try bpf.linkGetFdById(info.id) }
    }

    func testXDPLinkCreateErrnos() throws {
        let dev = NetDevice(kernel: kernel, name: "veth0")
        defer { dev.detachAll() }
        let a = try load(ProgLoadAttr(body: .xdpDrop, name: "a"))
        let tc = try load(ProgLoadAttr(type: .schedCls, body: .xdpPass, name: "tc"))
        assertErrno(.EINVAL, "no device") { try bpf.linkCreate(LinkCreateAttr(progFD: a, attachType: .xdp)) }
        assertErrno(.EINVAL, "REPLACE is not a link flag") {
            try bpf.linkCreate(LinkCreateAttr(progFD: a, device: dev, attachType: .xdp, flags: XDPFlags.replace.rawValue))
        }
        assertErrno(.EINVAL, "two modes") {
            try bpf.linkCreate(LinkCreateAttr(progFD: a, device: dev, attachType: .xdp, flags: XDPFlags.skbMode.rawValue | XDPFlags.drvMode.rawValue))
        }
        assertErrno(.EINVAL, "a sched_cls program") { try bpf.linkCreate(LinkCreateAttr(progFD: tc, device: dev, attachType: .xdp)) }
        assertErrno(.EBADF, "bad prog fd") { try bpf.linkCreate(LinkCreateAttr(progFD: 55, device: dev, attachType: .xdp)) }
        try bpf.xdpAttach(dev, fd: a)
        assertErrno(.EBUSY, "a link over a legacy attachment") { try bpf.linkCreate(LinkCreateAttr(progFD: a, device: dev, attachType: .xdp)) }
        try bpf.xdpAttach(dev, fd: -1)
        let l = try bpf.linkCreate(LinkCreateAttr(progFD: a, device: dev, attachType: .xdp))
        assertErrno(.EBUSY, "a second link") { try bpf.linkCreate(LinkCreateAttr(progFD: a, device: dev, attachType: .xdp)) }
        try bpf.objClose(l)
    }

    func testLinkUpdateRulesEPERMEINVALENOLINK() throws {
        let dev = NetDevice(kernel: kernel, name: "veth0")
        defer { dev.detachAll() }
        let a = try load(ProgLoadAttr(body: .xdpDrop, name: "a"))
        let b = try load(ProgLoadAttr(body: .xdpTx, name: "b"))
        let tc = try load(ProgLoadAttr(type: .schedCls, body: .xdpPass, name: "tc"))
        let l = try bpf.linkCreate(LinkCreateAttr(progFD: a, device: dev, attachType: .xdp))
        assertErrno(.EPERM, "expected old program mismatch") { try bpf.linkUpdate(l, newProgFD: b, flags: linkUpdateReplace, expectedOldFD: b) }
        assertErrno(.EINVAL, "unknown flag") { try bpf.linkUpdate(l, newProgFD: b, flags: 1) }
        assertErrno(.EINVAL, "old program without BPF_F_REPLACE") { try bpf.linkUpdate(l, newProgFD: b, expectedOldFD: a) }
        assertErrno(.EINVAL, "a program of another type") { try bpf.linkUpdate(l, newProgFD: tc) }
        assertErrno(.EINVAL, "not a link fd") { try bpf.linkUpdate(a, newProgFD: b) }
        try bpf.linkUpdate(l, newProgFD: b, flags: linkUpdateReplace, expectedOldFD: a)
        var md = cbpf_xdp_md()
        XCTAssertEqual(dev.runXDP(&md), XDP_TX)
        XCTAssertEqual(try refs(a), 1, "the old program was put")
        XCTAssertEqual(try refs(b), 3)
        try bpf.linkUpdate(l, newProgFD: a)
        XCTAssertEqual(dev.runXDP(&md), XDP_DROP)
        try bpf.linkDetach(l)
        XCTAssertNil(dev.program)
        assertErrno(.ENOLINK, "update after LINK_DETACH") { try bpf.linkUpdate(l, newProgFD: b) }
        try bpf.objClose(l)
        // The device going away leaves its link detached.
        let l2 = try bpf.linkCreate(LinkCreateAttr(progFD: a, device: dev, attachType: .xdp))
        dev.unregister()
        XCTAssertTrue(try bpf.linkGetInfo(l2).detached)
        assertErrno(.ENOLINK, "update after the device went away") { try bpf.linkUpdate(l2, newProgFD: b) }
        try bpf.objClose(l2)
    }

    func testLinkReferencesPointOneWay() throws {
        // The link holds the program; closing the program's fd first leaves it running.
        let dev = NetDevice(kernel: kernel, name: "veth0")
        defer { dev.detachAll() }
        let a = try load(ProgLoadAttr(body: .xdpDrop, name: "a"))
        let aID = try id(a)
        let l = try bpf.linkCreate(LinkCreateAttr(progFD: a, device: dev, attachType: .xdp))
        try bpf.objClose(a)
        settle()
        var md = cbpf_xdp_md()
        XCTAssertEqual(dev.runXDP(&md), XDP_DROP)
        XCTAssertEqual(try bpf.linkGetInfo(l).progID, aID)
        try bpf.objClose(l)
        settle()
        XCTAssertEqual(kernel.liveObjects, 0)
    }
}
