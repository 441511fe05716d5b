// The encoder's output checked instruction by instruction against GNU objdump's reading of
// the same bytes, and rel32 displacements against the addresses they are meant to reach.
import XCTest
@testable import BPFMachineCode

final class X86AssemblerTests: XCTestCase {
    /// objdump's disassembly of raw x86-64 bytes: one "mnemonic operands" per instruction.
    private func objdump(_ code: [UInt8], origin: UInt64) throws -> [String]? {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/objdump") else { return nil }
        let path = NSTemporaryDirectory() + "bpflab-x86-\(getpid()).bin"
        try Data(code).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/objdump")
        p.arguments = ["-D", "-b", "binary", "-m", "i386:x86-64", "-M", "intel", "--adjust-vma=\(String(format: "0x%llx", origin))", path]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return text.split(separator: "\n").compactMap { line -> String? in
            let cols = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard cols.count >= 3, cols[0].hasSuffix(":") else { return nil }
            return cols[2].split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
                .replacingOccurrences(of: "  ", with: " ")
        }
    }

    func testEveryInstructionEncodesAsObjdumpReadsIt() throws {
        let origin: UInt64 = 0x7000_0000
        var a = X86Assembler(origin: origin)
        let done = a.label()
        a.nop5()
        a.push(.rbp); a.push(.r12)
        a.mov(.rbp, .rsp)
        a.mov(.r9, .rdi)
        a.mov32(.rax, imm: 1); a.mov32(.r10, imm: 0xffff_ffff)
        a.mov(.rax, imm64: 0x1122_3344_5566_7788)
        a.load(.rax, .rdi, 8); a.load(.r11, .rsp, -16); a.load(.rcx, .r12, 0x100)
        a.load32(.rdx, .rsi, 4)
        a.store(.rbp, -8, .rbx); a.store(.r13, 0x40, .r14)
        a.addMem64(.rax, 0x28, imm8: 1)
        a.sub(.rsp, imm: 8); a.add(.rsp, imm: 8)
        a.cmp(.rdi, .rsi); a.cmp(.rax, imm: 0x21); a.test(.rax, .rax)
        a.j(.ae, done); a.j(.e, done)
        a.jmp(.rax); a.call(.r11); a.jmp(.r8)
        a.call(absolute: origin + 0x1000); a.jmp(absolute: origin)
        a.pause(); a.lfence(); a.int3()
        a.loadIndexed(.rcx, .rsi, .rdx, 0x40); a.loadIndexed(.r11, .r12, .r9, -8)
        a.cmpMem32(.rsi, 0, .rdx); a.mov32(.rdx, .rdx); a.xor32(.rax, .rax); a.nop2(); a.leave()
        a.bt32(.rdx, .rax); a.cmp32(.rax, imm: 31); a.lock(); a.addMem64(.r11, 0, imm8: 1)
        a.bind(done)
        a.pop(.r12); a.pop(.rbp); a.ret()
        let code = try a.finish()
        guard let got = try objdump(code, origin: origin) else { throw XCTSkip("objdump (binutils) is not installed") }
        let doneAt = String(format: "0x%llx", origin + UInt64(a.offset(of: done)!))
        let expected = [
            "nop DWORD PTR [rax+rax*1+0x0]", "push rbp", "push r12", "mov rbp,rsp", "mov r9,rdi",
            "mov eax,0x1", "mov r10d,0xffffffff", "movabs rax,0x1122334455667788",
            "mov rax,QWORD PTR [rdi+0x8]", "mov r11,QWORD PTR [rsp-0x10]", "mov rcx,QWORD PTR [r12+0x100]",
            "mov edx,DWORD PTR [rsi+0x4]", "mov QWORD PTR [rbp-0x8],rbx", "mov QWORD PTR [r13+0x40],r14",
            "add QWORD PTR [rax+0x28],0x1", "sub rsp,0x8", "add rsp,0x8",
            "cmp rdi,rsi", "cmp rax,0x21", "test rax,rax",
            "jae \(doneAt)", "je \(doneAt)", "jmp rax", "call r11", "jmp r8",
            "call \(String(format: "0x%llx", origin + 0x1000))", "jmp \(String(format: "0x%llx", origin))",
            "pause", "lfence", "int3",
            "mov rcx,QWORD PTR [rsi+rdx*8+0x40]", "mov r11,QWORD PTR [r12+r9*8-0x8]",
            "cmp DWORD PTR [rsi+0x0],edx", "mov edx,edx", "xor eax,eax", "xchg ax,ax", "leave",
            "bt edx,eax", "cmp eax,0x1f", "lock add QWORD PTR [r11+0x0],0x1",
            "pop r12", "pop rbp", "ret",
        ]
        // objdump writes "ret" as "ret" or "ret " and long displacements with "0x…" — compare
        // the leading text of each.
        XCTAssertEqual(got.count, expected.count, "\(got)")
        for (g, e) in zip(got, expected) {
            XCTAssertTrue(g.hasPrefix(e), "objdump reads '\(g)' where '\(e)' was meant")
        }
    }

    func testARel32ThatCannotReachIsAnErrorNotWrongCode() {
        var a = X86Assembler(origin: 0x1000)
        a.call(absolute: 0x1000 + (UInt64(1) << 33))
        XCTAssertThrowsError(try a.finish()) { XCTAssertTrue("\($0)".contains("cannot reach"), "\($0)") }
        var b = X86Assembler(origin: 0)
        let l = b.label()
        b.jmp(l)
        XCTAssertThrowsError(try b.finish())
        XCTAssertEqual(try X86Assembler.jmpRel32(from: 0x1000, to: 0x1005), [0xe9, 0, 0, 0, 0])
        XCTAssertEqual(try X86Assembler.jmpRel32(from: 0x1000, to: 0x1000), [0xe9, 0xfb, 0xff, 0xff, 0xff])
    }
}
