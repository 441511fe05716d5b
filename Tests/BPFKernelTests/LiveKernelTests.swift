// LiveKernelTests — the live kernel of this machine as the oracle. Each test first checks
// that bpf(2) works here (root, a trivial XDP program loads) and otherwise skips with one
// line saying why.
import XCTest
import Foundation
import BPFInstructions
import LiveKernel
@testable import BPFKernel

final class LiveKernelTests: XCTestCase {
    var live: LiveBPF!

    override func setUpWithError() throws {
        if let why = LiveBPF.unavailableReason() {
            print("LiveKernelTests: skipped — \(why)")
            throw XCTSkip(why)
        }
        live = LiveBPF()
    }

    override func tearDown() {
        live?.closeAll()
        XCTAssertEqual(live?.openFDs ?? [], [], "every fd the backend opened is closed")
        live = nil
    }

    func testTheProbeFindsXdpTailCallsAndTheJIT() {
        let r = Dictionary(uniqueKeysWithValues: LiveProbe.run().map { ($0.what, $0.refusedWith) })
        XCTAssertEqual(r["program type xdp"], .some(nil))
        XCTAssertEqual(r["bpf_tail_call"], .some(nil))
        XCTAssertEqual(r["map type hash"], .some(nil))
        XCTAssertNotNil(r["program type tracing (fentry)"], "the probe reports tracing either way")
    }

    func testTheBackendKeepsTheKernelMemoryItHoldsBelowRLIMIT_MEMLOCK() throws {
        let small = try live.mapCreate(type: 2, keySize: 4, valueSize: 8, maxEntries: 16, name: "small")
        XCTAssertEqual(live.chargedBytes, 8192, "a header page and 16 8-byte values, in pages")
        let entries = UInt32(min(LiveBPF.memlockLimit, 1 << 30) / 64)
        let before = live.openFDs
        XCTAssertThrowsError(try live.mapCreate(type: 2, keySize: 4, valueSize: 64, maxEntries: entries, name: "huge")) {
            XCTAssertTrue($0 is LiveBudgetError, "\($0)")
        }
        XCTAssertEqual(live.openFDs, before, "nothing was created")
        XCTAssertEqual(live.chargedBytes, 8192)
        try live.close(small)
        XCTAssertEqual(live.chargedBytes, 0, "the charge goes with the fd")
    }

    func testAKeyOrValueOfTheWrongSizeIsEINVALBeforeTheKernelReadsPastIt() throws {
        let m = try live.mapCreate(type: 2, keySize: 4, valueSize: 8, maxEntries: 1, name: "sized")
        for (key, value) in [([UInt8](repeating: 0, count: 4), [UInt8](repeating: 1, count: 4)), ([0, 0], [UInt8](repeating: 1, count: 8))] {
            XCTAssertThrowsError(try live.mapUpdate(m, key: key, value: value)) { XCTAssertEqual(($0 as? LiveError)?.errno, 22) }
        }
        XCTAssertEqual(try live.mapLookup(m, key: [0, 0, 0, 0], valueSize: 8), [UInt8](repeating: 0, count: 8), "nothing was written")
    }

    func testAPerCPUValueIsOneSlotPerPossibleCPUInBothDirections() throws {
        // bpf(2) copies round_up(value_size, 8) × possible CPUs for a per-CPU map: the buffers
        // are sized so, a value_size value is written to every CPU, and a map too large for
        // the memory budget is never created (no arithmetic overflow on absurd sizes either).
        let m = try live.mapCreate(type: 6, keySize: 4, valueSize: 4, maxEntries: 1, name: "pcpu")
        XCTAssertEqual(try live.userValueSize(m), 8 * LiveBPF.possibleCPUs)
        try live.mapUpdate(m, key: [0, 0, 0, 0], value: [7, 0, 0, 0])
        let got = try live.mapLookup(m, key: [0, 0, 0, 0], valueSize: 4)
        XCTAssertEqual(got, Array([[UInt8]](repeating: [7, 0, 0, 0, 0, 0, 0, 0], count: LiveBPF.possibleCPUs).joined()))
        XCTAssertThrowsError(try live.mapCreate(type: 1, keySize: .max, valueSize: .max, maxEntries: .max, name: "absurd")) {
            XCTAssertTrue($0 is LiveBudgetError, "\($0)")
        }
    }

    func testASelfTailCallRuns34TimesOnTheKernelAsInTheLab() throws {
        // The same instructions on both: count runs into an array map, tail-call slot 0.
        func program(jmp: Int32, runs: Int32) throws -> [BPFInsn] {
            try Assembler.assemble(selfTailCallText(jmp: jmp, runs: runs))
        }
        let jmp = try live.mapCreate(type: 3, keySize: 4, valueSize: 4, maxEntries: 1, name: "jmp")
        let runs = try live.mapCreate(type: 2, keySize: 4, valueSize: 8, maxEntries: 1, name: "runs")
        let p = try live.progLoad(type: ProgType.xdp.rawValue, insns: try program(jmp: jmp, runs: runs), name: "self_tail")
        try live.mapUpdate(jmp, key: [0, 0, 0, 0], value: withUnsafeBytes(of: p) { Array($0) })
        XCTAssertEqual(try live.testRun(p, data: [UInt8](repeating: 0, count: 64)).retval, 2)
        XCTAssertEqual(try live.mapLookup(runs, key: [0, 0, 0, 0], valueSize: 8), [34, 0, 0, 0, 0, 0, 0, 0], "the kernel: 34 runs")

        let kernel = Kernel(KernelConfig(checked: true))
        let bpf = BPF(kernel: kernel)
        defer { bpf.closeAll(); kernel.quiesce() }
        let ljmp = try bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: 1, name: "jmp"))
        let lruns = try bpf.mapCreate(MapCreateAttr(type: .array, valueSize: 8, maxEntries: 1, name: "runs"))
        let lp = try bpf.progLoad(ProgLoadAttr(insns: try program(jmp: ljmp, runs: lruns), name: "self_tail"))
        try bpf.mapUpdateElem(ljmp, key: [0, 0, 0, 0], value: withUnsafeBytes(of: UInt32(bitPattern: lp)) { Array($0) })
        XCTAssertEqual(try bpf.progTestRun(TestRunAttr(progFD: lp, data: [UInt8](repeating: 0, count: 64))).retval, 2)
        XCTAssertEqual(try bpf.mapLookupElem(lruns, key: [0, 0, 0, 0]), [34, 0, 0, 0, 0, 0, 0, 0], "the lab: 34 runs")
    }

    func testTheLabAndTheKernelAgreeOnEveryConformanceProgramTheKernelAccepts() throws {
        guard let dir = conformanceDirectoryForKernel() else {
            print("LiveKernelTests: conformance differential skipped — the suite is not beside the project")
            return
        }
        // The suite's XDP prolog: r1 = data, r2 = data_end - data.
        let prolog = try Assembler.assemble("ldxw %r2, [%r1+4]\nldxw %r1, [%r1+0]\nsub %r2, %r1")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("tests").path).filter { $0.hasSuffix(".data") }.sorted()
        var accepted = 0, agreed = 0, disagreements: [String] = [], labOnlyRefusals: [String] = []
        for f in files {
            let text = try String(contentsOf: dir.appendingPathComponent("tests/\(f)"), encoding: .utf8)
            guard let file = try? ConformanceFile(text: text), let program = try? file.program() else { continue }
            // XDP test runs need an Ethernet header's worth of data.
            var mem = file.memory
            if mem.count < 14 {
                if !mem.isEmpty { continue }  // a short memory would change r2
                mem = [UInt8](repeating: 0, count: 14)
            }
            let kfd: Int32
            do { kfd = try live.progLoad(type: ProgType.xdp.rawValue, insns: prolog + program, name: "conf") } catch { continue }
            accepted += 1
            let kr = try live.testRun(kfd, data: mem).retval
            try live.close(kfd)
            do {
                let lab = try RawProgram(program)
                let (r, _) = lab.run(memory: mem)
                if r.fault == nil && UInt32(truncatingIfNeeded: r.r0) == kr {
                    agreed += 1
                } else {
                    disagreements.append("\(f): kernel \(kr), lab \(r.fault ?? String(UInt32(truncatingIfNeeded: r.r0)))")
                }
            } catch {
                labOnlyRefusals.append("\(f): \(error)")
            }
        }
        print("LiveKernelTests: conformance on the kernel: \(accepted) of \(files.count) accepted by its verifier; lab and kernel agree on \(agreed); \(disagreements.count) disagree; \(labOnlyRefusals.count) the lab refuses")
        XCTAssertGreaterThan(accepted, 150)
        XCTAssertEqual(disagreements, [], "where the lab and the kernel disagree, the kernel is right")
        XCTAssertEqual(labOnlyRefusals.filter { !$0.contains("invalid shift") }, [], "programs the kernel runs and the lab refuses")
    }
}

/// One step of the XDP attach differential: what it does, in both backends' terms.
enum AttachStep: CustomStringConvertible {
    case attach(prog: Int, flags: UInt32, expected: Int?)   // prog -1: detach
    case linkCreate(prog: Int, flags: UInt32)
    case linkUpdate(prog: Int, expectedOld: Int?)

    var description: String {
        switch self {
        case let .attach(p, f, e): return p < 0 ? "detach (flags \(f))" : "attach prog\(p) flags \(f)\(e.map { " expected prog\($0)" } ?? "")"
        case let .linkCreate(p, f): return "link create prog\(p) flags \(f)"
        case let .linkUpdate(p, e): return "link update to prog\(p)\(e.map { " expected old prog\($0)" } ?? "")"
        }
    }
}

extension LiveKernelTests {
    /// The XDP attach and link rules, step by step on the live kernel (a veth in a private
    /// namespace) and on the lab: the same errno at every step.
    func testXdpAttachAndLinkRulesAreTheKernelsOwn() throws {
        let drv: UInt32 = 4, skb: UInt32 = 2, noExist: UInt32 = 1, replace: UInt32 = 16
        let steps: [AttachStep] = [
            .attach(prog: 0, flags: drv, expected: nil),
            .attach(prog: 1, flags: drv | noExist, expected: nil),         // EBUSY: a program is attached
            .attach(prog: 1, flags: drv | replace, expected: 1),           // EEXIST: not the expected one
            .attach(prog: 1, flags: drv | replace, expected: 0),
            .attach(prog: 0, flags: skb, expected: nil),                   // native and generic at once
            .attach(prog: -1, flags: drv, expected: nil),
            .linkCreate(prog: 0, flags: drv),
            .attach(prog: 1, flags: drv, expected: nil),                   // EBUSY: a link holds the device
            .attach(prog: -1, flags: drv, expected: nil),                  // EBUSY: nor detach
            .linkCreate(prog: 2, flags: drv),                              // EBUSY: one link per mode
            .linkUpdate(prog: 1, expectedOld: 2),                          // EPERM: wrong old program
            .linkUpdate(prog: 1, expectedOld: 0),
            .linkUpdate(prog: 2, expectedOld: nil),
        ]
        // The live kernel.
        let ns: LiveNetns
        do { ns = try LiveNetns(tag: "attach") } catch {
            print("LiveKernelTests: attach differential skipped — cannot make a network namespace: \(error)")
            return
        }
        defer { ns.close() }
        let kernelAnswers: [Int32?] = try {
            let progs = try (0..<3).map { i in try live.progLoad(type: ProgType.xdp.rawValue, insns: [.mov64(0, imm: 2), .exit], name: "p\(i)") }
            var link: Int32 = -1
            var out: [Int32?] = []
            for s in steps {
                do {
                    switch s {
                    case let .attach(p, f, e): try ns.xdpAttach(live, fd: p < 0 ? -1 : progs[p], flags: f, expectedFD: e.map { progs[$0] } ?? -1)
                    case let .linkCreate(p, f): link = try ns.xdpLinkCreate(live, progFD: progs[p], flags: f)
                    case let .linkUpdate(p, e): try live.linkUpdate(link, newProgFD: progs[p], expectedOldFD: e.map { progs[$0] } ?? -1)
                    }
                    out.append(nil)
                } catch let e as LiveError {
                    out.append(e.errno)
                }
            }
            live.closeAll()  // the link goes with its fd, the programs with theirs
            return out
        }()
        // The lab.
        let kernel = Kernel(KernelConfig(checked: true))
        let bpf = BPF(kernel: kernel)
        let dev = NetDevice(kernel: kernel, name: "veth0")
        defer { dev.detachAll(); bpf.closeAll(); kernel.quiesce() }
        let progs = try (0..<3).map { i in try bpf.progLoad(.returning(2, name: "p\(i)")) }
        var link: Int32 = -1
        var labAnswers: [Int32?] = []
        for s in steps {
            do {
                switch s {
                case let .attach(p, f, e): try bpf.xdpAttach(dev, fd: p < 0 ? -1 : progs[p], flags: f, expectedFD: e.map { progs[$0] } ?? -1)
                case let .linkCreate(p, f): link = try bpf.linkCreate(LinkCreateAttr(progFD: progs[p], device: dev, attachType: .xdp, flags: f))
                case let .linkUpdate(p, e): try bpf.linkUpdate(link, newProgFD: progs[p], flags: e == nil ? 0 : 4, expectedOldFD: e.map { progs[$0] } ?? -1)
                }
                labAnswers.append(nil)
            } catch let e as BPFError {
                labAnswers.append(e.errno.rawValue)
            }
        }
        for (i, s) in steps.enumerated() {
            XCTAssertEqual(labAnswers[i], kernelAnswers[i],
                           "step \(i + 1) (\(s)): the kernel answers \(kernelAnswers[i].map { Errno(rawValue: $0)?.name ?? "errno \($0)" } ?? "ok"), the lab \(labAnswers[i].map { Errno(rawValue: $0)?.name ?? "errno \($0)" } ?? "ok")")
        }
        print("LiveKernelTests: XDP attach differential: \(steps.count) steps, kernel \(kernelAnswers.map { $0.map { Errno(rawValue: $0)?.name ?? "\($0)" } ?? "ok" })")
    }
}

/// The conformance suite, if it is beside the project.
func conformanceDirectoryForKernel() -> URL? {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return [root.deletingLastPathComponent().appendingPathComponent("shared/bpf_conformance"), URL(fileURLWithPath: "/work/shared/bpf_conformance")]
        .first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("tests").path) }
}
