// A Kernel — and with it its RCU reclaimer thread — goes away with its last user, including
// when that last reference is dropped inside an RCU callback on the reclaimer itself.
import XCTest
#if canImport(Glibc)
import Glibc
#endif
@testable import BPFKernel
@testable import PacketHarness

final class ConcurrencyKernelLifetimeTests: XCTestCase {
    /// Runs `body` with the only reference to a new kernel, then asserts the kernel was
    /// freed (allowing the reclaimer a moment: it may hold the last reference briefly).
    func assertReleased(file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Kernel) rethrows {
        weak var weakKernel: Kernel?
        do { weakKernel = try body() }
        for _ in 0..<100 where weakKernel != nil { usleep(1000) }
        XCTAssertNil(weakKernel, "a Kernel (and its reclaimer thread) must go away with its last user", file: file, line: line)
    }

    /// A fast kernel with a device and the baseline design; `body` adds to it, then
    /// everything is closed.
    func withDesignKernel(_ body: (BPF, NetDevice, DesignSetup) throws -> Void) throws -> Kernel {
        let kernel = Kernel(.fast)
        let bpf = BPF(kernel: kernel)
        let dev = NetDevice(kernel: kernel, name: "x0")
        try body(bpf, dev, try DesignSetup.make(.baseline, bpf: bpf))
        bpf.closeAll()
        kernel.quiesce()
        return kernel
    }

    func testAKernelIsReleasedWhenItsUsersAre() throws {
        try assertReleased {
            try withDesignKernel { bpf, dev, good in
                let chain = try DesignSetup.make(.chainPass, bpf: bpf)
                _ = try Bench.crossCheck([good, chain], bpf: bpf, device: dev, frames: FrameSpec(flows: 4))
            }
        }
    }

    func testDriverReleasesItsKernel() throws {
        try assertReleased {
            try drive(ProgLoadAttr(body: .xdpDrop), frames: FrameSpec(), threads: 1, ms: 10).2
        }
    }

    func testCrossCheckFailureDetachesAndReleases() throws {
        try assertReleased {
            try withDesignKernel { bpf, dev, good in
                let passFD = try bpf.progLoad(ProgLoadAttr(body: .xdpPass, name: "liar"))
                let bad = DesignSetup(id: .chainUnused, root: passFD, fds: [passFD], chainPrev: nil, progArray: nil)
                XCTAssertThrowsError(try Bench.crossCheck([good, bad], bpf: bpf, device: dev, frames: FrameSpec()))
                XCTAssertNil(dev.program, "a failed cross-check leaves nothing attached")
            }
        }
    }
}
