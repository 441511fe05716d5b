// BytecodeTests — bytecode programs in the lab's kernel: loaded through BPF_PROG_LOAD,
// checked, run by the interpreter through BPF_PROG_TEST_RUN, with maps, tail calls,
// bpf-to-bpf calls, helpers, configurable jumps, and the faults that end a stray run.
import XCTest
import CBPFShims
import BPFPrograms
import BPFInstructions
@testable import BPFKernel

final class BytecodeTests: KernelTestCase {
    /// After a lookup left r0 = a u64 value or NULL: value += 1, return it (0 for NULL).
    let addOneAndReturn = """
        jeq %r0, 0, miss
        mov %r1, 1
        lock add [%r0+0], %r1
        ldxdw %r0, [%r0+0]
        exit
        miss:
        mov %r0, 0
        exit
        """

    func asm(_ text: String) throws -> [BPFInsn] { try Assembler.assemble(text) }

    func loadAsm(_ text: String, name: String = "bc", type: ProgType = .xdp, keys: [Int32] = []) throws -> Int32 {
        try bpf.progLoad(ProgLoadAttr(type: type, insns: try asm(text), name: name, staticKeyFDs: keys))
    }

    func testBytecodeProgramRunsItsInstructionsAndReturnsR0() throws {
        let fd = try loadAsm("mov %r0, 1\nadd %r0, 1\nexit")
        XCTAssertEqual(try run(fd), 2)
        let info = try bpf.progGetInfo(fd)
        XCTAssertFalse(info.jited, "the interpreter is not a JIT")
    }

    func testXdpMdFieldsAreReadAtTheKernelsOffsetsAndPacketPointersAreWhole() throws {
        // r0 = data_end - data (the packet's length), through the u32 fields at 0 and 4.
        let fd = try loadAsm("""
            ldxw %r2, [%r1+0]
            ldxw %r3, [%r1+4]
            mov %r0, %r3
            sub %r0, %r2
            exit
            """)
        XCTAssertEqual(try run(fd), UInt32(testPacket.count))
    }

    func testPacketBytesAreReadAndAnAccessPastDataEndFaults() throws {
        let fd = try loadAsm("""
            ldxw %r2, [%r1+0]
            ldxb %r0, [%r2+63]
            exit
            """)
        XCTAssertEqual(try run(fd), 0xab)
        let past = try loadAsm("""
            ldxw %r2, [%r1+0]
            ldxb %r0, [%r2+64]
            exit
            """)
        kernel.resetCounters()
        XCTAssertEqual(try run(past), UInt32(CBPF_XDP_ABORTED), "a read past data_end ends the run with XDP_ABORTED")
        XCTAssertEqual(kernel.counter("fault.mem"), 1, "and is counted")
    }

    func testAStoreOutsideEveryRegionFaultsAndWritesNothing() throws {
        // r1 + 4096: beyond the context, not stack, packet or map: refused at run time.
        let fd = try loadAsm("stdw [%r1+4000], 7\nmov %r0, 2\nexit")
        kernel.resetCounters()
        XCTAssertEqual(try run(fd), UInt32(CBPF_XDP_ABORTED))
        XCTAssertEqual(kernel.counter("fault.mem"), 1)
    }

    func testAnUnboundedLoopEndsAtTheBackEdgeBudget() throws {
        // The kernel refuses this loop at load ("infinite loop detected"); the lab bounds it at run time.
        let fd = try loadAsm("mov %r0, 0\nloop:\nadd %r0, 1\nja loop")
        kernel.resetCounters()
        XCTAssertEqual(try run(fd), UInt32(CBPF_XDP_ABORTED))
        XCTAssertEqual(kernel.counter("fault.budget"), 1)
    }

    func testArrayMapLookupReturnsTheValueAndTheProgramCanWriteIt() throws {
        let m = try bpf.mapCreate(MapCreateAttr(type: .array, valueSize: 8, maxEntries: 4, name: "counts"))
        try bpf.mapUpdateElem(m, key: key(2), value: [5, 0, 0, 0, 0, 0, 0, 0])
        // counts[2] += 1; return counts[2]
        let fd = try loadAsm("""
            mov %r6, %r1
            stw [%r10-4], 2
            lddw %r1, map \(m)
            mov %r2, %r10
            add %r2, -4
            call 1
            \(addOneAndReturn)
            """)
        XCTAssertEqual(try run(fd), 6)
        XCTAssertEqual(try run(fd), 7)
        XCTAssertEqual(try bpf.mapLookupElem(m, key: key(2)), [7, 0, 0, 0, 0, 0, 0, 0], "the program wrote the map's own memory")
        // The program holds the map: closing the fd leaves it alive.
        try bpf.fds.close(m)
        settle()
        XCTAssertEqual(try run(fd), 8)
    }

    func testHashMapFollowsTheKernelsUpdateFlagsAndE2BIGWhenFull() throws {
        let m = try bpf.mapCreate(MapCreateAttr(type: .hash, keySize: 4, valueSize: 4, maxEntries: 2, name: "h"))
        try bpf.mapUpdateElem(m, key: key(1), value: key(10), flags: MapUpdateFlag.noExist.rawValue)
        assertErrno(.EEXIST, "NOEXIST on a present key") { try bpf.mapUpdateElem(m, key: key(1), value: key(11), flags: MapUpdateFlag.noExist.rawValue) }
        assertErrno(.ENOENT, "EXIST on an absent key") { try bpf.mapUpdateElem(m, key: key(2), value: key(20), flags: MapUpdateFlag.exist.rawValue) }
        try bpf.mapUpdateElem(m, key: key(2), value: key(20))
        assertErrno(.E2BIG, "a third key in a map of two") { try bpf.mapUpdateElem(m, key: key(3), value: key(30)) }
        try bpf.mapUpdateElem(m, key: key(1), value: key(12))  // replacing in a full map works (the extra element)
        XCTAssertEqual(try bpf.mapLookupElem(m, key: key(1)), key(12))
        try bpf.mapDeleteElem(m, key: key(1))
        assertErrno(.ENOENT, "lookup of a deleted key") { try bpf.mapLookupElem(m, key: key(1)) }
        try bpf.mapUpdateElem(m, key: key(3), value: key(30))
        // Iteration sees both keys once.
        var seen: [UInt32] = []
        var k: [UInt8]? = nil
        while let n = try? bpf.mapGetNextKey(m, key: k) { seen.append(u32(n)); k = n }
        XCTAssertEqual(seen.sorted(), [2, 3])
        // A program reads and updates it with the same semantics.
        let fd = try loadAsm("""
            stw [%r10-4], 3
            lddw %r1, map \(m)
            mov %r2, %r10
            add %r2, -4
            call 1
            jeq %r0, 0, miss
            ldxw %r0, [%r0+0]
            exit
            miss:
            mov %r0, 99
            exit
            """)
        XCTAssertEqual(try run(fd), 30)
    }

    func testPerCPUArrayGivesEachCPUItsOwnValue() throws {
        let m = try bpf.mapCreate(MapCreateAttr(type: .percpuArray, valueSize: 8, maxEntries: 1, name: "pc"))
        let fd = try loadAsm("""
            \(lookupZero(m, miss: "miss"))
            \(addOneAndReturn)
            """)
        XCTAssertEqual(try run(fd), 1)
        XCTAssertEqual(try run(fd), 2)
        let all = try bpf.mapLookupElem(m, key: key(0))
        XCTAssertEqual(all.count, 8 * PerCPUArrayMap.cpus, "the syscall sees every CPU's copy")
        let sum = stride(from: 0, to: all.count, by: 8).reduce(0) { $0 + Int(all[$1]) }
        XCTAssertEqual(sum, 2)
    }

    func testInterpreterTailCallCountsBeforeTheNullCheckAndStopsAt33() throws {
        // A program tail-calling itself: 1 + 33 runs; each run counts into a map.
        let counts = try bpf.mapCreate(MapCreateAttr(type: .array, valueSize: 8, maxEntries: 1, name: "runs"))
        let jmp = try progArray(2)
        let text = selfTailCallText(jmp: jmp, runs: counts)
        let fd = try loadAsm(text, name: "selftail")
        try setSlot(jmp, 0, fd)
        XCTAssertEqual(try run(fd), 2)
        XCTAssertEqual(u32(try bpf.mapLookupElem(counts, key: key(0))), 34, "a self tail call runs 34 times")
        // An empty slot is counted by the interpreter (unlike the x86 JIT): 33 tail calls to
        // slot 1 (empty) leave none for slot 0.
        try bpf.mapUpdateElem(counts, key: key(0), value: [0, 0, 0, 0, 0, 0, 0, 0])
        let empties = try loadAsm("""
            mov %r6, %r1
            mov %r7, 0
            again:
            mov %r1, %r6
            lddw %r2, map \(jmp)
            mov %r3, 1
            call 12
            add %r7, 1
            jlt %r7, 33, again
            mov %r1, %r6
            lddw %r2, map \(jmp)
            mov %r3, 0
            call 12
            mov %r0, 1
            exit
            """, name: "empties")
        XCTAssertEqual(try run(empties), 1, "the 34th tail call fails: the counter reached 33 on empty slots")
        XCTAssertEqual(u32(try bpf.mapLookupElem(counts, key: key(0))), 0)
    }

    func testLocalCallsKeepR6ToR9AndUseTheirOwnFrame() throws {
        let fd = try loadAsm("""
            mov %r6, 6
            stdw [%r10-8], 100
            mov %r1, 5
            call local f
            ldxdw %r2, [%r10-8]
            add %r0, %r2
            add %r0, %r6
            exit
            f:
            mov %r6, 0
            stdw [%r10-8], 1
            mov %r0, %r1
            exit
            """)
        XCTAssertEqual(try run(fd), 5 + 100 + 6, "the callee's r6 and stack slot are its own")
    }

    func testRedirectAndAdjustHeadHelpersChangeTheContextAsTheKernelDoes() throws {
        let fd = try loadAsm("""
            mov %r6, %r1
            mov %r2, 14
            call 44
            jne %r0, 0, bad
            ldxw %r2, [%r6+0]
            ldxw %r3, [%r6+4]
            mov %r0, %r3
            sub %r0, %r2
            exit
            bad:
            mov %r0, 999
            exit
            """)
        let r = try bpf.progTestRun(TestRunAttr(progFD: fd, data: testPacket))
        XCTAssertEqual(r.retval, UInt32(testPacket.count - 14))
        XCTAssertEqual(r.dataOut.count, testPacket.count - 14, "the test run's output starts at the new data")
        // Growing the head past the frame's head room is -EINVAL.
        let tooFar = try loadAsm("mov %r2, -1000\ncall 44\nexit")
        XCTAssertEqual(try run(tooFar), UInt32(bitPattern: -Errno.EINVAL.rawValue))
        let redirect = try loadAsm("mov %r1, 7\nmov %r2, 0\ncall 23\nexit")
        XCTAssertEqual(try run(redirect), UInt32(CBPF_XDP_REDIRECT))
    }

    func testConfigurableJumpFollowsItsStaticKeyFromUserSpaceAndFromTheKfunc() throws {
        let key0 = try bpf.mapCreate(MapCreateAttr(type: .staticKey, maxEntries: 1, name: "dbg"))
        // if key on: return 7 else return 1
        let fd = try loadAsm("""
            ja_cfg key 0, on
            mov %r0, 1
            exit
            on:
            mov %r0, 7
            exit
            """, keys: [key0])
        XCTAssertEqual(try run(fd), 1, "off by default: a NOP")
        try bpf.mapUpdateElem(key0, key: key(0), value: key(1))
        XCTAssertEqual(try run(fd), 7, "on: the jump is taken")
        try bpf.mapUpdateElem(key0, key: key(0), value: key(0))
        XCTAssertEqual(try run(fd), 1)
        // A program flips it with the kfunc (key id 0, on).
        let flipper = try loadAsm("mov %r1, 0\nmov %r2, 1\ncall kfunc 1\nmov %r0, 2\nexit", name: "flip", keys: [key0])
        XCTAssertEqual(try run(flipper), 2)
        XCTAssertEqual(try run(fd), 7, "the program's enable switched the site")
    }

    func testTheTagIsTheSameForTheSameInstructionsWithOtherMapFDs() throws {
        let a = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1, name: "a"))
        let b = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1, name: "b"))
        let p1 = try loadAsm("lddw %r1, map \(a)\nmov %r0, 0\nexit")
        let p2 = try loadAsm("lddw %r1, map \(b)\nmov %r0, 0\nexit")
        let p3 = try loadAsm("lddw %r1, map \(b)\nmov %r0, 1\nexit")
        XCTAssertEqual(try bpf.progGetInfo(p1).tag, try bpf.progGetInfo(p2).tag)
        XCTAssertNotEqual(try bpf.progGetInfo(p1).tag, try bpf.progGetInfo(p3).tag)
    }

    // MARK: refusals: the kernel's errno, nothing changed

    func testRefusedProgramsGetTheKernelsErrnoAndChangeNothing() throws {
        let arr = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1, name: "a"))
        let cases: [(Errno, String, String)] = [
            (.EACCES, "mov %r0, %r2\nexit", "reading an uninitialised register"),
            (.EACCES, "mov %r10, 0\nmov %r0, 0\nexit", "writing the frame pointer"),
            (.EACCES, "stdw [%r10-520], 1\nmov %r0, 0\nexit", "a stack offset below 512"),
            (.EACCES, "stdw [%r10+0], 1\nmov %r0, 0\nexit", "a stack write at or above the frame pointer"),
            (.EINVAL, "mov %r0, 0", "falling off the end"),
            (.EINVAL, "ja +5\nmov %r0, 0\nexit", "a jump out of the program"),
            (.EINVAL, "mov %r0, 0\nexit\nmov %r0, 1\nexit", "unreachable instructions"),
            (.EINVAL, "mov %r0, 0\ndiv %r0, 0\nexit", "a constant division by zero"),
            (.EINVAL, "mov %r0, 0\ncall 9999\nexit", "an unknown helper"),
            (.EINVAL, "mov %r0, 0\ncall 174\nexit", "a helper the program type may not call (cookie from XDP)"),
            (.EBADF, "lddw %r1, map 999\nmov %r0, 0\nexit", "a map fd that is not a map"),
            (.EINVAL, "lddw %r1, map_value \(arr), 8\nmov %r0, 0\nexit", "a value offset past value_size"),
            (.EINVAL, "call local f\nexit\nf:\ncall local f\nexit", "recursion"),
        ]
        for (errno, text, what) in cases {
            assertErrno(errno, what) { try loadAsm(text) }
        }
        assertErrno(.EINVAL, "an empty program") { try bpf.progLoad(ProgLoadAttr(insns: [])) }
        var jit = ProgLoadAttr(insns: [.mov64(0, imm: 0), .exit])
        jit.jited = true
        assertErrno(.ENOTSUPP, "bytecode asked to be JIT-ed") { try bpf.progLoad(jit) }
    }

    func testADenseCallGraphIsCheckedOnceAndTooDeepIsE2BIG() throws {
        // 40 functions, each calling the next seven: ~7^8 call chains, checked in one
        // memoised pass; the deepest chain has more than 8 frames.
        var text = ""
        for f in 0..<40 {
            text += "f\(f):\n"
            for c in (f + 1)..<min(40, f + 8) { text += "call local f\(c)\n" }
            text += "mov %r0, 2\nexit\n"
        }
        assertErrno(.E2BIG, "a call chain of more than 8 frames") { try loadAsm(text) }
        // Eight frames deep is allowed.
        var ok = ""
        for f in 0..<8 {
            ok += "f\(f):\n" + (f < 7 ? "call local f\(f + 1)\n" : "") + "mov %r0, 2\nexit\n"
        }
        XCTAssertEqual(try run(try loadAsm(ok)), 2)
    }

    func testTheVerifierLogNamesTheInstruction() throws {
        do {
            _ = try loadAsm("mov %r0, 0\nadd %r0, %r3\nexit")
            XCTFail("expected a refusal")
        } catch let e as BPFError {
            XCTAssertEqual(e.errno, .EACCES)
            XCTAssertTrue(e.message.contains("1: (0f) r0 += r3"), e.message)
            XCTAssertTrue(e.message.contains("R3 !read_ok"), e.message)
        }
    }

    func testTailCallsWithLocalCallsAreRefusedWithoutAJIT() throws {
        let jmp = try progArray(1)
        assertErrno(.EINVAL, "fixup_call_args") {
            try loadAsm("""
                mov %r6, %r1
                call local f
                mov %r1, %r6
                lddw %r2, map \(jmp)
                mov %r3, 0
                call 12
                mov %r0, 0
                exit
                f:
                mov %r0, 0
                exit
                """)
        }
    }

    func testAnInterpretedProgramCannotJoinAProgArrayOfJitedOnes() throws {
        let jmp = try progArray(1)
        let native = try loadReturning(2)
        try setSlot(jmp, 0, native)  // the array's owner is now JIT-ed XDP
        assertErrno(.EINVAL, "owner: interpreted vs JIT-ed") {
            try loadAsm("mov %r6, %r1\nlddw %r2, map \(jmp)\nmov %r3, 0\ncall 12\nmov %r0, 0\nexit")
        }
    }

    // MARK: bytecode in the other places a program goes

    func testABytecodeExtensionReplacesALibxdpPlaceholder() throws {
        let d = try loadLibxdpDispatcher(enabled: 1)
        var ext = ProgLoadAttr(type: .ext, insns: try asm("mov %r0, 1\nexit"), name: "bc_drop")
        ext.attachProgFD = d
        ext.attachFunc = "prog0"
        let e = try bpf.progLoad(ext)
        let l = try bpf.linkCreate(LinkCreateAttr(progFD: e, attachType: .unspecified))
        XCTAssertEqual(try run(d), UInt32(CBPF_XDP_DROP), "the interpreter runs in the dispatcher's slot")
        try bpf.objClose(l)
        XCTAssertEqual(try run(d), UInt32(CBPF_XDP_PASS))
    }

    func testTracingAndExtensionsAttachOnlyToJitedPrograms() throws {
        let interpreted = try loadAsm("mov %r0, 2\nexit")
        assertErrno(.EINVAL, "fentry on an interpreted program") {
            try bpf.progLoad(.tracing(.traceFentry, on: interpreted, body: .xdpPass))
        }
        assertErrno(.EINVAL, "freplace of an interpreted program") {
            try bpf.progLoad(.extension(of: interpreted, function: "sub0", body: .xdpPass))
        }
    }

    func testABytecodeProgramRunsInAChainSlotAndAsAFentryProgram() throws {
        let first = try bpf.progLoad(ProgLoadAttr(body: .xdpPass, name: "first", flags: .chainCalls))
        let second = try bpf.progLoad(ProgLoadAttr(type: .xdp, insns: try asm("mov %r0, 3\nexit"), name: "bc_tx", flags: .chainCalls))
        try bpf.progChainAdd(prev: first, retcode: 2, next: second)
        XCTAssertEqual(try run(first), UInt32(CBPF_XDP_TX), "XDP_PASS chained into the bytecode program")
        // A tracing program made of instructions reads its link's cookie into a map.
        let target = try loadReturning(2, name: "target")
        let seen = try bpf.mapCreate(MapCreateAttr(type: .array, valueSize: 8, maxEntries: 1, name: "seen"))
        var t = ProgLoadAttr(type: .tracing, insns: try asm("""
            call 174
            mov %r6, %r0
            \(lookupZero(seen, miss: "out"))
            stxdw [%r0+0], %r6
            out:
            mov %r0, 0
            exit
            """), name: "bc_fentry", expectedAttachType: .traceFentry)
        t.attachProgFD = target
        let tr = try bpf.progLoad(t)
        let l = try bpf.linkCreate(LinkCreateAttr(progFD: tr, attachType: .traceFentry, cookie: 42))
        XCTAssertEqual(try run(target), 2, "the fentry program runs and the target's verdict stands")
        XCTAssertEqual(try bpf.mapLookupElem(seen, key: key(0)), [42, 0, 0, 0, 0, 0, 0, 0], "bpf_get_attach_cookie gave the link's cookie")
        try bpf.objClose(l)
    }

    func testTheReadmesBytecodeSnippetLoadsAndGivesThePacketLength() throws {
        // README bytecode snippet begins
        let prog = try bpf.progLoad(ProgLoadAttr(insns: try Assembler.assemble("""
            ldxw %r2, [%r1+0]        # ctx->data
            ldxw %r3, [%r1+4]        # ctx->data_end
            mov %r0, %r3
            sub %r0, %r2             # the packet's length
            exit
            """), name: "pktlen"))
        // README bytecode snippet ends
        XCTAssertEqual(try run(prog), UInt32(testPacket.count))
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let me = try String(contentsOfFile: #filePath, encoding: .utf8)
        let body = me.components(separatedBy: "// README bytecode snippet begins\n")[1].components(separatedBy: "        // README bytecode snippet ends")[0]
        let snippet = body.split(separator: "\n", omittingEmptySubsequences: false).map { String($0.dropFirst(8)) }.joined(separator: "\n")
        XCTAssertTrue(readme.contains(snippet), "the README holds this snippet line for line:\n\(snippet)")
    }

    // MARK: step programs compiled to instructions

    func loadSteps(_ sp: StepProgram, compiled: Bool, name: String = "sp") throws -> Int32 {
        var a = ProgLoadAttr(steps: sp, name: name, jited: false)
        a.compileSteps = compiled
        return try bpf.progLoad(a)
    }

    func testCompiledStepProgramsAgreeWithTheStepInterpreter() throws {
        let key0 = try bpf.mapCreate(MapCreateAttr(type: .staticKey, maxEntries: 1, name: "k"))
        let programs: [StepProgram] = [
            StepProgram([.returnConst(3)]),
            StepProgram([.count("a"), .count("a"), .returnConst(2)]),
            StepProgram([.call(0), .returnLast], subprogs: [[.count("sub"), .returnConst(1)]]),
            StepProgram([.setVar(2, 0x1_0000_0004), .returnVar(2)]),
            StepProgram([.staticBranch(keyFD: key0, call: 0), .returnLast], subprogs: [[.returnConst(3)]]),
            StepProgram([.call(0), .returnLast], subprogs: [[.call(1), .returnLast], [.returnConst(4)]]),
        ]
        for (i, sp) in programs.enumerated() {
            for keyOn in [false, true] {
                try bpf.mapUpdateElem(key0, key: key(0), value: key(keyOn ? 1 : 0))
                kernel.resetCounters()
                let a = try loadSteps(sp, compiled: false, name: "steps\(i)")
                let va = try run(a)
                let ca = kernel.counterValues
                kernel.resetCounters()
                let b = try loadSteps(sp, compiled: true, name: "insns\(i)")
                let vb = try run(b)
                XCTAssertEqual(va, vb, "program \(i) (key \(keyOn)): steps give \(va), instructions \(vb)")
                XCTAssertEqual(ca, kernel.counterValues, "program \(i): the same counts")
                let pb = try bpf.prog(b)
                XCTAssertNotNil(pb.bytecode, "program \(i) is bytecode")
                pb.put()  // bpf.prog's
                try bpf.objClose(a)
                try bpf.objClose(b)
            }
        }
    }

    func testACompiledStepProgramsVariablesAreItsDataMap() throws {
        let fd = try loadSteps(StepProgram([.returnVar(1)], vars: 4), compiled: true)
        XCTAssertEqual(try run(fd), 0)
        try bpf.progSetVar(fd, index: 1, value: 7)
        XCTAssertEqual(try run(fd), 7, "progSetVar writes the program's .data map")
        assertErrno(.E2BIG, "a variable past the map") { try bpf.progSetVar(fd, index: 4, value: 1) }
        XCTAssertTrue(try Bpftool.dumpXlated(bpf, fd: fd).contains("map[id:"), "the dump shows the .data map")
    }

    func testAnIndirectCallHasNoInstructionAndIsRefused() throws {
        let table = try progArray(1)
        assertErrno(.EINVAL, "indirect call") {
            try loadSteps(StepProgram([.indirectCall(arrayFD: table, index: .constant(0)), .returnConst(1)]), compiled: true)
        }
    }
}
