// Every bench design is built by a test: set up through the facade on a checked kernel,
// its verdicts checked against the baseline's, torn down, nothing leaked, no rule broken.
import XCTest
import BPFKernel
@testable import PacketHarness

final class DesignTests: XCTestCase {
    func testEveryDesignBuildsAgreesWithTheBaselineAndLeavesNothing() throws {
        for d in DesignID.allCases {
            let kernel = Kernel(KernelConfig(checked: true))
            let bpf = BPF(kernel: kernel)
            let dev = NetDevice(kernel: kernel, name: "d0")
            let base = try DesignSetup.make(.baseline, bpf: bpf)
            let s = try DesignSetup.make(d, bpf: bpf)
            XCTAssertNoThrow(try Bench.crossCheck([base, s], bpf: bpf, device: dev, frames: FrameSpec(flows: 8)), "\(d.rawValue)")
            kernel.quiesce()
            XCTAssertEqual(kernel.audit(), [], "\(d.rawValue): the auditor on the design's objects")
            s.close(bpf)
            base.close(bpf)
            dev.detachAll()
            bpf.closeAll()
            kernel.unpinAll()
            kernel.xdpDispatcher.reset()
            kernel.quiesce()
            XCTAssertEqual(kernel.liveObjects, 0, "\(d.rawValue) leaked")
            XCTAssertEqual(kernel.violations, [], "\(d.rawValue)")
        }
    }
}
