// AssemblerTests — the assembler reads the suite's syntax, the disassembler writes the
// kernel's and the suite's, and the two round-trip; errors say where and what was meant.
import XCTest
import BPFInstructions

final class AssemblerTests: XCTestCase {
    func testInstructionBytesAreTheKernelsLayout() {
        let i = BPFInsn(code: 0x61, dst: 2, src: 1, off: -4, imm: 0x11223344)
        XCTAssertEqual(i.bytes, [0x61, 0x12, 0xfc, 0xff, 0x44, 0x33, 0x22, 0x11], "dst in the low nibble, off and imm little-endian")
        XCTAssertEqual(BPFInsn(bytes: i.bytes[...]), i)
        XCTAssertEqual(BPFInsn(word: i.word), i)
        // The suite's raw word for lddw %r0, 0x1122334455667788 (lddw.data).
        XCTAssertEqual(try Assembler.assemble("lddw %r0, 0x1122334455667788").map(\.word),
                       [0x5566778800000018, 0x1122334400000000])
    }

    func testTheKernelSyntaxMatchesTheVerifierLog() throws {
        let cases: [(String, String)] = [
            ("mov %r0, 1", "r0 = 1"),
            ("mov32 %r0, -1", "w0 = -1"),
            ("add %r1, %r2", "r1 += r2"),
            ("sdiv32 %r1, 3", "w1 s/= 3"),
            ("arsh %r3, 2", "r3 s>>= 2"),
            ("neg %r4", "r4 = -r4"),
            ("be16 %r1", "r1 = be16 r1"),
            ("bswap64 %r1", "r1 = bswap64 r1"),
            ("movsx1664 %r1, %r2", "r1 = (s16)r2"),
            ("ldxw %r0, [%r1+4]", "r0 = *(u32 *)(r1 +4)"),
            ("ldxsb %r0, [%r10-1]", "r0 = *(s8 *)(r10 -1)"),
            ("stxdw [%r10-8], %r1", "*(u64 *)(r10 -8) = r1"),
            ("stw [%r1+2], 5", "*(u32 *)(r1 +2) = 5"),
            ("lock add [%r10-8], %r1", "lock *(u64 *)(r10 -8) += r1"),
            ("lock fetch or32 [%r10-4], %r2", "w2 = atomic_fetch_or((u32 *)(r10 -4), w2)"),
            ("lock cmpxchg [%r10-8], %r1", "r0 = atomic64_cmpxchg((u64 *)(r10 -8), r0, r1)"),
            ("lock xchg [%r10-8], %r3", "r3 = atomic64_xchg((u64 *)(r10 -8), r3)"),
            ("jne %r0, 15, +3", "if r0 != 0xf goto pc+3"),
            ("jsgt32 %r1, %r2, -1", "if w1 s> w2 goto pc-1"),
            ("ja +0", "goto pc+0"),
            ("ja32 +2", "gotol pc+2"),
            ("call 12", "call bpf_tail_call#12"),
            ("call 1", "call bpf_map_lookup_elem#1"),
            ("exit", "exit"),
        ]
        for (src, want) in cases {
            let insns = try Assembler.assemble(src)
            XCTAssertEqual(Disassembler.text(insns[0], next: insns.count > 1 ? insns[1] : nil), want, src)
        }
        XCTAssertEqual(Disassembler.text(try Assembler.assemble("lddw %r1, 0x1122334455667788")[0],
                                         next: try Assembler.assemble("lddw %r1, 0x1122334455667788")[1]),
                       "r1 = 0x1122334455667788 ll")
        XCTAssertEqual(Disassembler.listing(try Assembler.assemble("mov %r0, 1\nexit")),
                       "   0: (b7) r0 = 1\n   1: (95) exit\n", "bpftool's xlated listing")
    }

    func testRandomProgramsRoundTripThroughTheAssemblerSyntax() throws {
        var r = SplitMix(state: 0x5eed)
        for _ in 0..<3000 {
            let p = RandomPrograms.program(&r, n: 1 + r.below(24))
            let text = Disassembler.listing(p, style: .assembler)
            let back: [BPFInsn]
            do { back = try Assembler.assemble(text) } catch {
                XCTFail("\(error) in\n\(text)")
                return
            }
            XCTAssertEqual(back, p, "round trip of\n\(text)")
        }
    }

    func testEveryConformanceFileAssemblesAndRoundTrips() throws {
        guard let dir = conformanceDirectory() else {
            print("AssemblerTests: skipped the conformance round trip — the suite is not beside the project")
            return
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("tests").path).filter { $0.hasSuffix(".data") }
        for f in files {
            let text = try String(contentsOf: dir.appendingPathComponent("tests/\(f)"), encoding: .utf8)
            let file = try ConformanceFile(text: text)
            guard file.asm != nil else { continue }
            let p = try file.program()
            XCTAssertEqual(try Assembler.assemble(Disassembler.listing(p, style: .assembler)), p, f)
            if let raw = file.raw { XCTAssertEqual(try Assembler.assemble(file.asm!), raw, "\(f): the asm and the raw words agree") }
        }
    }

    func testErrorsSayWhereAndWhatWasMeant() {
        func error(_ text: String) -> AssemblyError? {
            do { _ = try Assembler.assemble(text); return nil } catch { return error as? AssemblyError }
        }
        let e1 = error("mov %r0, 1\n  ldxq %r0, [%r1]\nexit")
        XCTAssertEqual(e1?.line, 2)
        XCTAssertEqual(e1?.column, 3)
        XCTAssertTrue(e1?.message.contains("did you mean 'ldx") ?? false, "\(String(describing: e1))")
        let e2 = error("ja NOT_A_LABEL\nexit")
        XCTAssertEqual(e2?.column, 4)
        XCTAssertTrue(e2?.message.contains("undefined label") ?? false)
        let e3 = error("jne %r0, 1, faild\nfailed:\nexit")
        XCTAssertTrue(e3?.message.contains("did you mean 'failed'") ?? false, "\(String(describing: e3))")
        XCTAssertTrue(error("or %r0, %r50\nexit")?.message.contains("invalid register") ?? false)
        XCTAssertTrue(error("mov32 %r0, 2147483648\nexit")?.message.contains("does not fit in 32 bits") ?? false)
        XCTAssertNotNil(error("mov32 %r0, 0x100000000\nexit"))
        XCTAssertNotNil(error("ldxb %r0, [%r1+0x10000]\nexit"))
        XCTAssertNotNil(error("lddw %r0\nexit"))
        XCTAssertTrue(error("lock or [%r10-8]\nexit")?.message.contains("Invalid number of operands for lock") ?? false)
        XCTAssertTrue(error("a:\na:\nexit")?.message.contains("already defined on line 1") ?? false)
        XCTAssertNil(error("mov32 %r0, 0xffffffff\nmov %r1, -2147483648\nexit"), "the edges of the 32-bit range assemble")
    }

    func testRandomTextNeverCrashesTheAssembler() {
        var r = SplitMix(state: 77)
        let alphabet = Array("movaddldxstlock fetch %r0123456789[]+-,:#\nxjexit call local 0x")
        for _ in 0..<20_000 {
            let text = String((0..<r.below(60)).map { _ in alphabet[r.below(alphabet.count)] })
            do { _ = try Assembler.assemble(text) } catch let e as AssemblyError {
                XCTAssertFalse(e.message.isEmpty)
                XCTAssertGreaterThanOrEqual(e.line, 1)
            } catch {
                XCTFail("not an AssemblyError: \(error)")
            }
        }
    }
}
