// dev_xdp_attach's flag rules on the simulated device.
import XCTest
import CBPFShims
@testable import BPFKernel

final class XDPAttachTests: KernelTestCase {
    func testLegacyAttachFlagErrnos() throws {
        let dev = NetDevice(kernel: kernel, name: "veth0")
        defer { dev.detachAll() }
        let a = try load(ProgLoadAttr(body: .xdpPass, name: "a"))
        let b = try load(ProgLoadAttr(body: .xdpDrop, name: "b"))
        let tc = try load(ProgLoadAttr(type: .schedCls, body: .xdpPass, name: "tc"))
        let noExist = XDPFlags.updateIfNoExist.rawValue, replace = XDPFlags.replace.rawValue
        try bpf.xdpAttach(dev, fd: a, flags: noExist)
        XCTAssertEqual(try refs(a), 2, "the device holds a reference")
        assertErrno(.EBUSY, "UPDATE_IF_NOEXIST over a program") { try bpf.xdpAttach(dev, fd: b, flags: noExist) }
        assertErrno(.EEXIST, "REPLACE with the wrong expected program") { try bpf.xdpAttach(dev, fd: b, flags: replace, expectedFD: b) }
        // do_setlink reads the expected fd only with REPLACE, and REPLACE needs one.
        assertErrno(.EINVAL, "REPLACE without an expected program") { try bpf.xdpAttach(dev, fd: b, flags: replace) }
        assertErrno(.EINVAL, "two mode flags") {
            try bpf.xdpAttach(dev, fd: b, flags: XDPFlags.skbMode.rawValue | XDPFlags.drvMode.rawValue)
        }
        assertErrno(.EINVAL, "unknown flag") { try bpf.xdpAttach(dev, fd: b, flags: 1 << 9) }
        assertErrno(.EINVAL, "not an XDP program") { try bpf.xdpAttach(dev, fd: tc) }
        assertErrno(.EBADF, "closed fd") { try bpf.xdpAttach(dev, fd: 77) }
        XCTAssertTrue(dev.program === (try bpf.prog(a)).also { $0.put() })
        try bpf.xdpAttach(dev, fd: b, flags: replace, expectedFD: a)
        XCTAssertEqual(try refs(a), 1, "the replaced program was put")
        var md = cbpf_xdp_md()
        XCTAssertEqual(dev.runXDP(&md), XDP_DROP)
        try bpf.xdpAttach(dev, fd: -1)
        let link = try bpf.linkCreate(LinkCreateAttr(progFD: a, device: dev, attachType: .xdp))
        assertErrno(.EBUSY, "legacy attach over an active link") { try bpf.xdpAttach(dev, fd: b) }
        assertErrno(.EBUSY, "legacy detach under an active link") { try bpf.xdpAttach(dev, fd: -1) }
        try bpf.objClose(link)
        XCTAssertNil(dev.program)
        XCTAssertEqual(dev.runXDP(&md), XDP_PASS, "no program: the driver passes")
        // Without REPLACE an expected fd is not read at all — not even a bad one (the live
        // kernel, through rtnetlink, answers the same).
        try bpf.xdpAttach(dev, fd: b, expectedFD: 77)
        XCTAssertEqual(dev.runXDP(&md), XDP_DROP)
        try bpf.xdpAttach(dev, fd: -1)
    }
}

extension BPFProg {
    func also(_ body: (BPFProg) -> Void) -> BPFProg { body(self); return self }
}
