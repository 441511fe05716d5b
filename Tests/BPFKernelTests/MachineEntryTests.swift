// Generated functions' patchable entries (MachineEntry.swift) and libxdp's dispatcher as
// machine code (MachineLibXDP.swift): freplace patches a placeholder's 5-byte NOP into a
// jmp straight to a generated extension (a stub for a native one), detaching puts the NOP
// back, a trampoline on a generated program runs whether the program is entered through
// its entry word or its generated entry, and attaching and detaching extensions while
// workers run the dispatcher never gives a verdict neither state gives.
import XCTest
import CBPFShims
import CMachineCode
import BPFMachineCode
@testable import BPFKernel

/// The 5 bytes at `p`.
private func bytes(_ p: UnsafeRawPointer) -> [UInt8] { Array(UnsafeRawBufferPointer(start: p, count: 5)) }

final class MachineEntryTests: KernelTestCase {
    private func mcExt(of target: Int32, function: String, returning v: UInt32, name: String = "ext") throws -> Int32 {
        var a = ProgLoadAttr.tracing(.unspecified, on: target, function: function, steps: StepProgram([.returnConst(v)]), name: name)
        a.machineCode = true
        return try load(a)
    }
    private func extLink(_ fd: Int32) throws -> Int32 { try bpf.linkCreate(LinkCreateAttr(progFD: fd, attachType: .unspecified)) }

    /// The placeholder prog0 of the generated dispatcher, and its entry site.
    private func slotSite(_ disp: Int32, _ i: Int) throws -> MachineEntry {
        let p = try bpf.prog(disp)
        defer { p.put() }
        return try XCTUnwrap(p.machineEntry(function: 1 + i))
    }

    func testFreplacePatchesThePlaceholdersNopIntoAJmpToTheGeneratedExtension() throws {
        let disp = try loadLibxdpDispatcher(enabled: 1, machine: true)
        XCTAssertEqual(try run(disp), XDP_PASS, "an empty slot returns XDP_DISPATCHER_RETVAL, in every mask: PASS at the end")
        let site = try slotSite(disp, 0)
        XCTAssertEqual(site.site.bytes, X86Assembler.nop5)
        let ext = try mcExt(of: disp, function: "prog0", returning: XDP_DROP)
        let l = try extLink(ext)
        XCTAssertEqual(try run(disp), XDP_DROP, "the extension's value")
        let e = try bpf.prog(ext)
        defer { e.put() }
        let entry = UInt64(UInt(bitPattern: try XCTUnwrap(e.raw.pointee.jit_entry)))
        XCTAssertEqual(site.site.bytes, try X86Assembler.jmpRel32(from: UInt64(UInt(bitPattern: site.site.site)), to: entry),
                       "one direct jmp to the extension's generated entry")
        try bpf.objClose(l)
        XCTAssertEqual(site.site.bytes, X86Assembler.nop5, "detached: the NOP again")
        XCTAssertEqual(try run(disp), XDP_PASS)
    }

    func testANativeExtensionOfAGeneratedSlotRunsThroughItsStub() throws {
        let disp = try loadLibxdpDispatcher(enabled: 2, machine: true)
        let ext = try load(.extension(of: disp, function: "prog1", body: .xdpTx, name: "native"))
        let l = try extLink(ext)
        XCTAssertEqual(try run(disp), XDP_TX, "slot 0 empty (goes on), slot 1 native: its value")
        let site = try slotSite(disp, 1)
        XCTAssertEqual(site.site.currentTarget, site.extStub, "a jmp to the stub that enters the lab's extension entry")
        try bpf.objClose(l)
        XCTAssertEqual(try run(disp), XDP_PASS)
    }

    /// libxdp's rule in generated code: a value whose bit is in the slot's mask goes on, any
    /// other is returned — and one of 32 or more has no bit.
    func testTheGeneratedDispatcherFollowsEachSlotsChainCallMask() throws {
        let disp = try loadLibxdpDispatcher(enabled: 3, machine: true)  // masks: PASS and RETVAL
        let native = try loadLibxdpDispatcher(enabled: 3, name: "native")
        var links: [Int32] = []
        for (i, v) in [XDP_PASS, UInt32(40), XDP_DROP].enumerated() {
            links.append(try extLink(try mcExt(of: disp, function: "prog\(i)", returning: v, name: "m\(i)")))
            links.append(try extLink(try load(.tracing(.unspecified, on: native, function: "prog\(i)", steps: StepProgram([.returnConst(v)]), name: "n\(i)"))))
        }
        XCTAssertEqual(try run(disp), 40, "PASS goes on; 40 has no bit and is returned")
        XCTAssertEqual(try run(disp), try run(native), "as the native dispatcher")
        for l in links { try bpf.objClose(l) }
    }

    /// A trampoline on a generated program, the kernel's way: its entry word (bpf_func) does
    /// not change, its NOP is patched into a jmp to the generated trampoline, so a caller of
    /// either reaches the fentry program once; detached, the NOP again.
    func testATrampolineOnAGeneratedProgramRunsForItsWordAndItsGeneratedEntry() throws {
        var a = ProgLoadAttr(steps: StepProgram([.returnConst(XDP_DROP)]), name: "mc")
        a.machineCode = true
        let t = try load(a)
        let fe = try load(.tracing(.traceFentry, on: t, steps: StepProgram([.count("fentry"), .returnConst(0)]), name: "fe"))
        let l = try bpf.linkCreate(LinkCreateAttr(progFD: fe, attachType: .traceFentry))
        let p = try bpf.prog(t)
        defer { p.put() }
        XCTAssertEqual(try run(t), XDP_DROP)
        XCTAssertEqual(kernel.counter("fentry"), 1, "through the entry word")
        let entry = try XCTUnwrap(p.raw.pointee.jit_entry)
        XCTAssertEqual(UnsafeRawPointer(unsafeBitCast(p.raw.pointee.bpf_func, to: UnsafeRawPointer.self)), entry, "bpf_func is unchanged")
        XCTAssertEqual(bytes(entry).first, 0xe9, "the generated entry's NOP is a jmp now")
        var ctx = cbpf_xdp_md()
        XCTAssertEqual(withUnsafeMutablePointer(to: &ctx) { cmc_call2(entry, $0, p.raw.pointee.insnsi) }, XDP_DROP)
        XCTAssertEqual(kernel.counter("fentry"), 2, "through the generated entry")
        try bpf.objClose(l)
        XCTAssertEqual(bytes(entry), X86Assembler.nop5)
        XCTAssertEqual(withUnsafeMutablePointer(to: &ctx) { cmc_call2(entry, $0, p.raw.pointee.insnsi) }, XDP_DROP)
        XCTAssertEqual(kernel.counter("fentry"), 2, "detached: neither way runs it")
    }

    /// fentry and fexit on a generated function through the generated trampoline, as on a
    /// native one: fentry before the function, fexit after with its value, each program's
    /// cookie in its run context, generated and native tracing programs alike; the value is
    /// the function's; detaching one program rebuilds the image, detaching all restores the NOP.
    func testTheGeneratedTrampolineRunsFentryTheFunctionAndFexitAsTheNativeOneDoes() throws {
        for machineTarget in [true, false] {
            kernel.resetCounters()
            var a = ProgLoadAttr(steps: StepProgram([.count("main"), .returnConst(XDP_TX)]), name: "target")
            a.machineCode = machineTarget
            let t = try load(a)
            func tracing(_ kind: AttachType, _ steps: [Step], machine: Bool, _ name: String) throws -> Int32 {
                var a = ProgLoadAttr.tracing(kind, on: t, steps: StepProgram(steps, vars: 2), name: name)
                a.machineCode = machine
                return try load(a)
            }
            // The machine engine does not generate cookie stores; these tracing programs are native.
            let fe = try tracing(.traceFentry, [.count("fentry"), .storeCookie(0), .storeFuncRet(1), .returnConst(0)], machine: false, "fe")
            let fe2 = try tracing(.traceFentry, [.count("fentry2"), .returnConst(0)], machine: true, "fe2")
            let fx = try tracing(.traceFexit, [.count("fexit"), .storeFuncRet(0), .returnConst(0)], machine: false, "fx")
            let l1 = try bpf.linkCreate(LinkCreateAttr(progFD: fe, attachType: .traceFentry, cookie: 0xc0ffee))
            let l2 = try bpf.linkCreate(LinkCreateAttr(progFD: fe2, attachType: .traceFentry))
            let l3 = try bpf.linkCreate(LinkCreateAttr(progFD: fx, attachType: .traceFexit))
            XCTAssertEqual(try run(t), XDP_TX, "machine \(machineTarget): the function's value")
            if machineTarget {
                let p = try bpf.prog(t)
                defer { p.put() }
                let site = try XCTUnwrap(p.machineEntry(function: 0)).site
                XCTAssertEqual(site.bytes.first, 0xe9, "the NOP is a jmp")
                XCTAssertNotNil(site.currentTarget)
                XCTAssertNotEqual(site.currentTarget, p.machineEntry(function: 0)?.extStub, "to the generated trampoline")
            }
            for c in ["main", "fentry", "fentry2", "fexit"] { XCTAssertEqual(kernel.counter(c), 1, "machine \(machineTarget): \(c) ran once") }
            let feP = try bpf.prog(fe), fxP = try bpf.prog(fx)
            defer { feP.put(); fxP.put() }
            XCTAssertEqual(try feP.getVar(0), 0xc0ffee, "machine \(machineTarget): the link's cookie")
            XCTAssertEqual(try feP.getVar(1), 0, "machine \(machineTarget): fentry runs before there is a value")
            XCTAssertEqual(try fxP.getVar(0), UInt64(XDP_TX), "machine \(machineTarget): fexit sees the value")
            try bpf.objClose(l2)
            XCTAssertEqual(try run(t), XDP_TX)
            XCTAssertEqual(kernel.counter("fentry2"), 1, "machine \(machineTarget): detached, not run")
            XCTAssertEqual(kernel.counter("fentry"), 2)
            try bpf.objClose(l1); try bpf.objClose(l3)
            XCTAssertEqual(try run(t), XDP_TX)
            XCTAssertEqual(kernel.counter("fentry"), 2)
            XCTAssertEqual(kernel.counter("main"), 3)
            if machineTarget {
                let p = try bpf.prog(t)
                defer { p.put() }
                XCTAssertEqual(bytes(try XCTUnwrap(p.raw.pointee.jit_entry)), X86Assembler.nop5, "all detached: the NOP")
            }
        }
    }

    func testAGeneratedDispatcherLeavesNothingAndItsCodeGoesBackAfterItsGracePeriod() throws {
        let before = try XCTUnwrap(CodeRegion.shared?.freeBytes)
        let disp = try loadLibxdpDispatcher(enabled: 10, machine: true)
        let ext = try mcExt(of: disp, function: "prog9", returning: XDP_DROP)
        let l = try extLink(ext)
        XCTAssertEqual(try run(disp), XDP_DROP)
        try bpf.objClose(l)
        try bpf.objClose(disp)
        try bpf.objClose(ext)
        kernel.quiesce()
        XCTAssertEqual(CodeRegion.shared!.freeBytes, before, "every generated image went back")
    }
}

/// Extensions attached and detached at a high rate (each a text_poke_bp of the slot's entry
/// NOP ↔ jmp) while two RCU readers run the generated dispatcher: every run gives the
/// extension's value or the empty slot's outcome, nothing else; no stray SIGTRAP.
final class ConcurrencyMachineEntryTests: KernelTestCase {
    func testExtensionsAttachedAndDetachedWhileReadersRunTheDispatcherGiveOneOfTwoVerdicts() throws {
        let disp = try loadLibxdpDispatcher(enabled: 1, machine: true)
        var a = ProgLoadAttr.tracing(.unspecified, on: disp, function: "prog0", steps: StepProgram([.returnConst(XDP_DROP)]), name: "ext")
        a.machineCode = true
        let ext = try load(a)
        let p = try bpf.prog(disp)
        defer { p.put() }
        nonisolated(unsafe) let raw = UnsafePointer(p.raw)
        let (total, cycles) = try whileTwoReadersRun({ _, c in bpfProgRun(raw, c) }) {
            let l = try bpf.linkCreate(LinkCreateAttr(progFD: ext, attachType: .unspecified, targetProgFD: disp, targetFunc: "prog0"))
            try bpf.objClose(l)
        }
        print("generated freplace: \(cycles) attach/detach cycles, \(total.values.reduce(0, +)) runs: \(total.sorted { $0.key < $1.key })")
        XCTAssertEqual(Set(total.keys).subtracting([XDP_DROP, XDP_PASS]), [], "a verdict neither state gives")
        XCTAssertGreaterThan(total[XDP_DROP] ?? 0, 0)
        XCTAssertGreaterThan(total[XDP_PASS] ?? 0, 0)
        XCTAssertGreaterThan(cycles, 100)
        XCTAssertEqual(try p.machineEntry(function: 1).map(\.failures), 0)
    }
}

/// fentry links attached and detached at a high rate on a generated program (each a new
/// generated trampoline, the entry NOP re-pointed, the old image freed after its grace
/// period) while two RCU readers run the program: every run returns the program's value,
/// and the fentry program ran for some runs and not for others.
final class ConcurrencyMachineTrampolineTests: KernelTestCase {
    func testTrampolinesRebuiltWhileReadersRunTheProgramAlwaysGiveItsValue() throws {
        var a = ProgLoadAttr(steps: StepProgram([.returnConst(XDP_TX)]), name: "target")
        a.machineCode = true
        let t = try load(a)
        var f = ProgLoadAttr.tracing(.traceFentry, on: t, steps: StepProgram([.count("fentry"), .returnConst(0)]), name: "fe")
        f.machineCode = true
        let p = try bpf.prog(t)
        defer { p.put() }
        nonisolated(unsafe) let raw = UnsafePointer(p.raw)
        let (total, cycles) = try whileTwoReadersRun({ _, c in bpfProgRun(raw, c) }) {
            // A tracing program's load-time target goes to its first link: a new one each time.
            let fe = try bpf.progLoad(f)
            let l = try bpf.linkCreate(LinkCreateAttr(progFD: fe, attachType: .traceFentry))
            try bpf.objClose(l)
            try bpf.objClose(fe)
        }
        let runs = total.values.reduce(0, +)
        print("generated trampolines: \(cycles) attach/detach cycles, \(runs) runs, fentry ran \(kernel.counter("fentry")) times")
        XCTAssertEqual(Set(total.keys), [XDP_TX], "every run returned the program's value")
        XCTAssertGreaterThan(kernel.counter("fentry"), 0)
        XCTAssertLessThan(kernel.counter("fentry"), UInt64(runs))
        XCTAssertGreaterThan(cycles, 100)
        XCTAssertEqual(p.machineEntry(function: 0)?.failures, 0)
    }
}
