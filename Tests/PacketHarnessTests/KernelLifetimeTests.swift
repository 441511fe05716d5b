import XCTest
#if canImport(Glibc)
import Glibc
#endif
@testable import BPFKernel
@testable import PacketHarness

final class ConcurrencyKernelLifetimeTests: XCTestCase {
    func testAKernelIsReleasedWhenItsUsersAre() throws {
        weak var weakKernel: Kernel?
        do {
            let kernel = Kernel(.fast)
            weakKernel = kernel
            let bpf = BPF(kernel: kernel)
            let dev = NetDevice(kernel: kernel, name: "x0")
            let good = try DesignSetup.make(.baseline, bpf: bpf)
            let chain = try DesignSetup.make(.chainPass, bpf: bpf)
            _ = try Bench.crossCheck([good, chain], bpf: bpf, device: dev, frames: FrameSpec(flows: 4))
            bpf.closeAll()
            kernel.quiesce()
        }
        for _ in 0..<100 where weakKernel != nil { usleep(1000) }  // the reclaimer may drop the last reference
        XCTAssertNil(weakKernel, "a Kernel (and its reclaimer thread) must go away with its last user")
    }

    func testDriverReleasesItsKernel() throws {
        weak var weakKernel: Kernel?
        do {
            let (_, _, k) = try drive(ProgLoadAttr(body: .xdpDrop), frames: FrameSpec(), threads: 1, ms: 10)
            weakKernel = k
        }
        for _ in 0..<100 where weakKernel != nil { usleep(1000) }
        XCTAssertNil(weakKernel)
    }

    func testCrossCheckFailureDetachesAndReleases() throws {
        weak var weakKernel: Kernel?
        do {
            let kernel = Kernel(.fast)
            weakKernel = kernel
            let bpf = BPF(kernel: kernel)
            let dev = NetDevice(kernel: kernel, name: "x0")
            let good = try DesignSetup.make(.baseline, bpf: bpf)
            let passFD = try bpf.progLoad(ProgLoadAttr(body: .xdpPass, name: "liar"))
            let bad = DesignSetup(id: .chainUnused, root: passFD, fds: [passFD], chainPrev: nil, progArray: nil)
            XCTAssertThrowsError(try Bench.crossCheck([good, bad], bpf: bpf, device: dev, frames: FrameSpec()))
            XCTAssertNil(dev.program, "a failed cross-check leaves nothing attached")
            bpf.closeAll()
            kernel.quiesce()
        }
        for _ in 0..<100 where weakKernel != nil { usleep(1000) }
        XCTAssertNil(weakKernel)
    }
}
