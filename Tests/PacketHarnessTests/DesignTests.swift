// Every bench design is built by a test: set up through the facade on a checked kernel,
// its verdicts checked against the baseline's, torn down, nothing leaked, no rule broken —
// at its default size and, for the designs a sweep can vary, at both ends of its range.
import XCTest
import BPFKernel
import BPFMachineCode
@testable import PacketHarness

final class DesignTests: XCTestCase {
    /// Builds `d` at `n` beside the baseline on a fresh checked kernel and checks it.
    private func check(_ d: DesignID, n: Int?, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let what = "\(d.rawValue)\(n.map { " at N = \($0)" } ?? "")"
        let kernel = Kernel(KernelConfig(checked: true))
        let bpf = BPF(kernel: kernel)
        let dev = NetDevice(kernel: kernel, name: "d0")
        let base = try DesignSetup.make(.baseline, bpf: bpf)
        let s = try DesignSetup.make(d, bpf: bpf, n: n)
        XCTAssertNoThrow(try Bench.crossCheck([base, s], bpf: bpf, device: dev, frames: FrameSpec(flows: 8)), what, file: file, line: line)
        kernel.quiesce()
        XCTAssertEqual(kernel.audit(), [], "\(what): the auditor on the design's objects", file: file, line: line)
        // Its size: objects alive, plus the branch sites of a static key.
        var size = kernel.liveObjects
        if let k = s.staticKey, let m = try? bpf.map(k) as? StaticKeyMap {
            size += m.key.siteCount
            m.put()  // bpf.map's
        }
        s.close(bpf)
        base.close(bpf)
        dev.detachAll()
        bpf.closeAll()
        kernel.unpinAll()
        kernel.xdpDispatcher.reset()
        kernel.quiesce()
        XCTAssertEqual(kernel.liveObjects, 0, "\(what) leaked", file: file, line: line)
        XCTAssertEqual(kernel.violations, [], what, file: file, line: line)
        return size
    }

    func testEveryDesignBuildsAgreesWithTheBaselineAndLeavesNothing() throws {
        for d in DesignID.allCases { _ = try check(d, n: nil) }
    }

    /// N is real: a bigger N builds more objects, and both ends of the range (the kernel's
    /// limits: 32 chained programs, 33 tail calls, 38 trampoline links, 10 libxdp
    /// programs, 48 dispatcher targets, 64 run-array programs) build and drop every packet.
    func testEverySweepableDesignBuildsAtBothEndsOfItsRange() throws {
        for d in DesignRegistry.sweepable {
            let p = d.parameter!
            let low = try check(d.id, n: p.range.lowerBound)
            let high = try check(d.id, n: p.range.upperBound)
            XCTAssertGreaterThan(high, low, "\(d.id.rawValue): N = \(p.range.upperBound) built no more objects (or branch sites) than N = \(p.range.lowerBound)")
        }
    }

    func testAParameterOutsideItsRangeOrOnADesignWithoutOneIsRefused() {
        let bpf = BPF(kernel: Kernel(KernelConfig(checked: true)))
        XCTAssertThrowsError(try DesignSetup.make(.tailJIT, bpf: bpf, n: 34)) { e in
            XCTAssertTrue("\(e)".contains("from 1 to 33"), "\(e)")
        }
        XCTAssertThrowsError(try DesignSetup.make(.extSlot, bpf: bpf, n: 2)) { e in
            XCTAssertTrue("\(e)".contains("no parameter"), "\(e)")
        }
    }

    /// The registry is the one list: names unique, every group non-empty and holding the
    /// baseline, and `--designs` accepting each group by name.
    func testTheRegistryNamesEachDesignOnceAndEveryGroupHasTheBaseline() throws {
        let ids = DesignRegistry.all.map(\.id)
        XCTAssertEqual(Set(ids).count, ids.count)
        for g in DesignGroup.allCases {
            let members = try DesignID.parseList(g.rawValue)
            XCTAssertTrue(members.contains(.baseline), g.rawValue)
            XCTAssertEqual(members, DesignRegistry.group(g))
        }
        XCTAssertEqual(try DesignID.parseList(" tail_jit , chain-pass "), [.baseline, .tailJIT, .chainPass])
    }
}

/// `bench --retpoline off,on`: every machine-code design becomes one design per mode (the
/// others are left alone), each built with its mode — the indirect tail call's jump is
/// `jmp *rcx` off and a jmp to the retpoline thunk on — and both agree with the baseline.
final class RetpolineVariantTests: XCTestCase {
    func testAListOfModesMakesOneDesignPerModeBuiltWithThatMode() throws {
        let ids = try RetpolineVariants.expand([.tailJIT, .machineTailJIT], modes: [.off, .on])
        XCTAssertEqual(ids.map(\.rawValue), ["tail-jit", "mc-tail-jit@retpoline-off", "mc-tail-jit@retpoline-on"])
        XCTAssertEqual(try RetpolineVariants.expand([.machineTailJIT], modes: [.off, .on]), Array(ids.dropFirst()), "registered once, found again")
        let kernel = Kernel(KernelConfig(checked: true))
        let bpf = BPF(kernel: kernel)
        let dev = NetDevice(kernel: kernel, name: "d0")
        let base = try DesignSetup.make(.baseline, bpf: bpf)
        var plainJumps: [Bool] = []
        for id in ids.dropFirst() {
            let s = try DesignSetup.make(id, bpf: bpf)
            XCTAssertEqual(s.id, id)
            XCTAssertNoThrow(try Bench.crossCheck([base, s], bpf: bpf, device: dev, frames: FrameSpec(flows: 1)), id.rawValue)
            let p = try bpf.prog(s.root)
            let entry = try XCTUnwrap(p.raw.pointee.jit_entry)  // the first tail-call program: its first 160 bytes hold the sequence
            let bytes = Array(UnsafeRawBufferPointer(start: entry, count: 160))
            plainJumps.append(zip(bytes, bytes.dropFirst()).contains { $0 == 0xff && $1 == 0xe1 })  // jmp rcx
            p.put()
            s.close(bpf)
        }
        XCTAssertEqual(plainJumps, [true, false], "off: jmp *rcx; on: through the thunk")
        XCTAssertEqual(Retpoline.mode, .auto, "the mode is restored after each build")
        base.close(bpf)
        XCTAssertThrowsError(try RetpolineVariants.parse("off,onn")) { XCTAssertTrue("\($0)".contains("'onn'"), "\($0)") }
        XCTAssertThrowsError(try RetpolineVariants.parse("on,on"))
        XCTAssertEqual(try RetpolineVariants.parse("off, on"), [.off, .on])
    }
}
