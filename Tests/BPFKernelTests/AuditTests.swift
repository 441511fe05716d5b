// The auditor finds what it is for: each rule broken on purpose is named, with the
// object and its holders; a clean kernel has no findings.
import XCTest
import CBPFShims
@testable import BPFKernel

final class AuditTests: KernelTestCase {
    func testAReferenceNobodyHoldsIsNamedWithTheHoldersThatExist() throws {
        let jmp = try progArray(1)
        let p = try loadReturning(XDP_PASS, name: "p")
        try setSlot(jmp, 0, p)
        XCTAssertEqual(kernel.audit(), [])
        let leaked = try bpf.prog(p)  // +1 that no holder accounts for
        let v = kernel.audit()
        XCTAssertEqual(v.map(\.rule), ["refcount"])
        XCTAssertTrue(v[0].detail.contains("refcount 3 but 2 holders"), v[0].detail)
        XCTAssertTrue(v[0].detail.contains("fd") && v[0].detail.contains("slot 0"), v[0].detail)
        leaked.put()
        XCTAssertEqual(kernel.audit(), [])
    }

    func testAUserReferenceOutsideAnFdOrPinIsAUsercntViolation() throws {
        let m = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1, name: "m"))
        let map = try bpf.map(m)
        map.incWithUref()
        let rules = Set(kernel.audit().map(\.rule))
        XCTAssertEqual(rules, ["refcount", "usercnt"])
        map.putWithUref()
        map.put()
        XCTAssertEqual(kernel.audit(), [])
    }

    func testAChainCycleThatSlippedPastTheCheckIsReported() throws {
        let a = try loadReturning(XDP_PASS, name: "a", flags: .chainCalls)
        let pa = try bpf.prog(a)
        // Bypass the ELOOP check: a in its own wildcard slot, holding a reference.
        _ = cbpf_prog_chain_xchg(pa.aux, 0, pa.raw)
        let v = kernel.audit()
        XCTAssertTrue(v.contains { $0.rule == "cycle" && $0.detail.contains("chain slot 0") }, "\(v)")
        _ = cbpf_prog_chain_xchg(pa.aux, 0, nil)
        pa.put()
        XCTAssertEqual(kernel.audit(), [])
    }

    func testAnIDPublishedForNoLiveObjectIsReported() throws {
        let p = try loadReturning(XDP_PASS, name: "p")
        let pp = try bpf.prog(p)
        let id = pp.id
        cbpf_store_release_u32(cbpf_prog_aux_id(pp.aux), 0)
        let v = kernel.audit().map(\.detail)
        XCTAssertTrue(v.contains("live prog 'p' has ID 0"), "\(v)")
        XCTAssertTrue(v.contains("program ID \(id) is published for no live program"), "\(v)")
        cbpf_store_release_u32(cbpf_prog_aux_id(pp.aux), id)
        pp.put()
        XCTAssertEqual(kernel.audit(), [])
    }

    func testTheGraphHasAnEdgePerHolder() throws {
        let dev = NetDevice(kernel: kernel, name: "veth0")
        defer { dev.detachAll() }
        let jmp = try progArray(2)
        let loop = try load(ProgLoadAttr(steps: StepProgram([.tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(1)]), name: "loop"))
        try setSlot(jmp, 0, loop)
        try bpf.xdpAttach(dev, fd: loop)
        try bpf.objPin(jmp, path: "/sys/fs/bpf/jmp")
        let g = kernel.referenceGraph()
        let kinds = Set(g.edges.map { "\($0.kind)" })
        for k in ["fd 3", "fd 4", "slot 0", "used map", "veth0 (drv)", "pin /sys/fs/bpf/jmp"] {
            XCTAssertTrue(kinds.contains(k), "missing \(k) in \(kinds)")
        }
        XCTAssertTrue(g.cycleEdges.isEmpty, "the prog ↔ prog-array cycle is breakable (uref flush)")
    }
}
