// X86Assembler.swift — an x86-64 encoder for the instructions the kernel's generated
// dispatch code uses (arch/x86/net/bpf_jit_comp.c's emit_* helpers, the trampoline and
// dispatcher recipes, static_call and jump_label's NOP/JMP): moves, pushes, compares,
// conditional and direct jumps and calls by rel32 to absolute addresses, indirect calls and
// jumps, the 5-byte NOP, int3, lfence, pause. Code is assembled for the address it will
// run at, so rel32 displacements to the lab's functions are exact.
import Foundation

/// A 64-bit general-purpose register, by its encoding number.
public enum Reg64: UInt8, Sendable, CaseIterable {
    case rax = 0, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15
    var low: UInt8 { rawValue & 7 }
    var high: Bool { rawValue >= 8 }
}

/// Condition codes for jcc (the low nibble of 0x0f 0x8X).
public enum Condition: UInt8, Sendable {
    case o = 0, no, b, ae, e, ne, be, a, s, ns, p, np, l, ge, le, g
}

public enum AssemblerError: Error, CustomStringConvertible, Equatable {
    case outOfReach(from: UInt64, to: UInt64)
    case unboundLabel(Int)

    public var description: String {
        switch self {
        case let .outOfReach(from, to):
            return String(format: "a rel32 from 0x%llx cannot reach 0x%llx (more than 2 GiB away)", from, to)
        case let .unboundLabel(l): return "label \(l) is used but never bound"
        }
    }
}

public struct X86Assembler {
    /// Where byte 0 will execute.
    public let origin: UInt64
    public private(set) var bytes: [UInt8] = []
    private var labels: [Int: Int] = [:]          // label → offset
    private var fixups: [(at: Int, label: Int, width: Int)] = []  // rel32 / rel8 to a label
    private var absolute: [(at: Int, target: UInt64)] = []        // rel32 to an address
    private var nextLabel = 0

    public init(origin: UInt64) { self.origin = origin }

    public var offset: Int { bytes.count }
    public var address: UInt64 { origin + UInt64(bytes.count) }

    // MARK: labels

    public struct Label: Hashable { let id: Int }
    public mutating func label() -> Label { nextLabel += 1; return Label(id: nextLabel) }
    public mutating func bind(_ l: Label) { labels[l.id] = bytes.count }
    public func offset(of l: Label) -> Int? { labels[l.id] }

    // MARK: encoding helpers

    private mutating func rex(w: Bool, r: Reg64? = nil, b: Reg64? = nil, force: Bool = false) {
        let v: UInt8 = 0x40 | (w ? 8 : 0) | ((r?.high ?? false) ? 4 : 0) | ((b?.high ?? false) ? 1 : 0)
        if v != 0x40 || force { bytes.append(v) }
    }
    private mutating func modrm(_ mod: UInt8, _ reg: UInt8, _ rm: UInt8) { bytes.append(mod << 6 | (reg & 7) << 3 | (rm & 7)) }
    private mutating func imm32(_ v: Int32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    private mutating func imm64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }

    /// [base + disp32] (mod 10), with the SIB byte rsp/r12 need.
    private mutating func memOperand(reg: UInt8, base: Reg64, disp: Int32) {
        modrm(2, reg, base.low)
        if base.low == 4 { bytes.append(0x24) }  // SIB: no index, base = rsp/r12
        imm32(disp)
    }

    // MARK: instructions

    /// The 5-byte NOP the kernel puts at patchable sites (0f 1f 44 00 00).
    public static let nop5: [UInt8] = [0x0f, 0x1f, 0x44, 0x00, 0x00]
    public mutating func nop5() { bytes += X86Assembler.nop5 }
    public mutating func int3() { bytes.append(0xcc) }
    public mutating func ret() { bytes.append(0xc3) }
    public mutating func pause() { bytes += [0xf3, 0x90] }
    public mutating func lfence() { bytes += [0x0f, 0xae, 0xe8] }

    public mutating func push(_ r: Reg64) { if r.high { bytes.append(0x41) }; bytes.append(0x50 + r.low) }
    public mutating func pop(_ r: Reg64) { if r.high { bytes.append(0x41) }; bytes.append(0x58 + r.low) }

    /// mov dst, src (64-bit).
    public mutating func mov(_ dst: Reg64, _ src: Reg64) { rex(w: true, r: src, b: dst); bytes.append(0x89); modrm(3, src.low, dst.low) }
    /// mov dst32, imm32 (zero-extends into the 64-bit register).
    public mutating func mov32(_ dst: Reg64, imm: UInt32) {
        if dst.high { bytes.append(0x41) }
        bytes.append(0xb8 + dst.low)
        imm32(Int32(bitPattern: imm))
    }
    /// movabs dst, imm64.
    public mutating func mov(_ dst: Reg64, imm64 v: UInt64) { rex(w: true, b: dst); bytes.append(0xb8 + dst.low); imm64(v) }
    /// mov dst, [base + disp] (64-bit load).
    public mutating func load(_ dst: Reg64, _ base: Reg64, _ disp: Int32) { rex(w: true, r: dst, b: base); bytes.append(0x8b); memOperand(reg: dst.low, base: base, disp: disp) }
    /// mov [base + disp], src (64-bit store).
    public mutating func store(_ base: Reg64, _ disp: Int32, _ src: Reg64) { rex(w: true, r: src, b: base); bytes.append(0x89); memOperand(reg: src.low, base: base, disp: disp) }
    /// mov dst32, [base + disp] (32-bit load, zero-extended).
    public mutating func load32(_ dst: Reg64, _ base: Reg64, _ disp: Int32) { rex(w: false, r: dst, b: base); bytes.append(0x8b); memOperand(reg: dst.low, base: base, disp: disp) }
    /// mov dst, qword [base + index*8 + disp32] — a table load (the indirect tail call's
    /// `array->ptrs[index]`).
    public mutating func loadIndexed(_ dst: Reg64, _ base: Reg64, _ index: Reg64, _ disp: Int32) {
        precondition(index != .rsp, "rsp cannot be an index")
        let v: UInt8 = 0x48 | (dst.high ? 4 : 0) | (index.high ? 2 : 0) | (base.high ? 1 : 0)
        bytes.append(v); bytes.append(0x8b)
        modrm(2, dst.low, 4)
        bytes.append(3 << 6 | index.low << 3 | base.low)  // SIB: scale 8
        imm32(disp)
    }
    /// cmp dword [base + disp32], r32.
    public mutating func cmpMem32(_ base: Reg64, _ disp: Int32, _ r: Reg64) {
        rex(w: false, r: r, b: base); bytes.append(0x39); memOperand(reg: r.low, base: base, disp: disp)
    }
    /// mov r32, r32 (zero-extends: the kernel's `mov edx, edx` before a bounds check).
    public mutating func mov32(_ dst: Reg64, _ src: Reg64) { rex(w: false, r: src, b: dst); bytes.append(0x89); modrm(3, src.low, dst.low) }
    /// xor r32, r32.
    public mutating func xor32(_ dst: Reg64, _ src: Reg64) { rex(w: false, r: src, b: dst); bytes.append(0x31); modrm(3, src.low, dst.low) }
    /// The 2-byte NOP (66 90) the JIT's prologue has where a tail-call-reachable program zeroes eax.
    public mutating func nop2() { bytes += [0x66, 0x90] }
    /// leave: mov rsp, rbp; pop rbp.
    public mutating func leave() { bytes.append(0xc9) }
    /// bt r32, r32: CF = bit (bit mod 32) of base — libxdp's `(1U << ret) & mask` test.
    public mutating func bt32(_ base: Reg64, _ bit: Reg64) { rex(w: false, r: bit, b: base); bytes += [0x0f, 0xa3]; modrm(3, bit.low, base.low) }
    /// cmp r32, imm32.
    public mutating func cmp32(_ r: Reg64, imm: Int32) { rex(w: false, b: r); bytes.append(0x81); modrm(3, 7, r.low); imm32(imm) }
    /// The lock prefix (f0) for the next instruction.
    public mutating func lock() { bytes.append(0xf0) }
    /// add qword [base + disp], imm8 (sign-extended) — a non-locked counter increment.
    public mutating func addMem64(_ base: Reg64, _ disp: Int32, imm8: Int8) {
        rex(w: true, b: base); bytes.append(0x83); memOperand(reg: 0, base: base, disp: disp); bytes.append(UInt8(bitPattern: imm8))
    }
    /// sub rsp-like: sub r, imm32 / add r, imm32.
    public mutating func sub(_ r: Reg64, imm: Int32) { rex(w: true, b: r); bytes.append(0x81); modrm(3, 5, r.low); imm32(imm) }
    public mutating func add(_ r: Reg64, imm: Int32) { rex(w: true, b: r); bytes.append(0x81); modrm(3, 0, r.low); imm32(imm) }
    /// cmp a, b (64-bit: flags of a − b).
    public mutating func cmp(_ a: Reg64, _ b: Reg64) { rex(w: true, r: b, b: a); bytes.append(0x39); modrm(3, b.low, a.low) }
    /// cmp r, imm32 (sign-extended to 64 bits).
    public mutating func cmp(_ r: Reg64, imm: Int32) { rex(w: true, b: r); bytes.append(0x81); modrm(3, 7, r.low); imm32(imm) }
    /// test a, b (64-bit).
    public mutating func test(_ a: Reg64, _ b: Reg64) { rex(w: true, r: b, b: a); bytes.append(0x85); modrm(3, b.low, a.low) }

    /// jmp rel32 to a label.
    public mutating func jmp(_ l: Label) { bytes.append(0xe9); fixups.append((bytes.count, l.id, 4)); imm32(0) }
    /// call rel32 to a label.
    public mutating func call(_ l: Label) { bytes.append(0xe8); fixups.append((bytes.count, l.id, 4)); imm32(0) }
    /// jcc rel32 to a label.
    public mutating func j(_ c: Condition, _ l: Label) { bytes += [0x0f, 0x80 + c.rawValue]; fixups.append((bytes.count, l.id, 4)); imm32(0) }
    /// jmp rel32 / call rel32 to an absolute address (a function of the lab, another image).
    public mutating func jmp(absolute target: UInt64) { bytes.append(0xe9); absolute.append((bytes.count, target)); imm32(0) }
    public mutating func call(absolute target: UInt64) { bytes.append(0xe8); absolute.append((bytes.count, target)); imm32(0) }
    /// jcc rel32 to an absolute address.
    public mutating func j(_ c: Condition, absolute target: UInt64) { bytes += [0x0f, 0x80 + c.rawValue]; absolute.append((bytes.count, target)); imm32(0) }
    /// jmp *r / call *r (the indirect branches retpolines replace).
    public mutating func jmp(_ r: Reg64) { if r.high { bytes.append(0x41) }; bytes.append(0xff); modrm(3, 4, r.low) }
    public mutating func call(_ r: Reg64) { if r.high { bytes.append(0x41) }; bytes.append(0xff); modrm(3, 2, r.low) }

    /// The code with every displacement resolved.
    public func finish() throws -> [UInt8] {
        var out = bytes
        func put(_ v: Int32, at i: Int) { withUnsafeBytes(of: v.littleEndian) { for (k, b) in $0.enumerated() { out[i + k] = b } } }
        for f in fixups {
            guard let target = labels[f.label] else { throw AssemblerError.unboundLabel(f.label) }
            put(Int32(target - (f.at + f.width)), at: f.at)
        }
        for a in absolute {
            let next = Int64(bitPattern: origin) + Int64(a.at + 4)
            let rel = Int64(bitPattern: a.target) - next
            guard rel >= Int64(Int32.min) && rel <= Int64(Int32.max) else {
                throw AssemblerError.outOfReach(from: UInt64(next), to: a.target)
            }
            put(Int32(rel), at: a.at)
        }
        return out
    }

    /// A 5-byte jmp rel32 from `site` to `target` (what a patched site becomes).
    public static func jmpRel32(from site: UInt64, to target: UInt64) throws -> [UInt8] {
        let rel = Int64(bitPattern: target) - Int64(bitPattern: site + 5)
        guard rel >= Int64(Int32.min) && rel <= Int64(Int32.max) else { throw AssemblerError.outOfReach(from: site + 5, to: target) }
        return [0xe9] + withUnsafeBytes(of: Int32(rel).littleEndian) { Array($0) }
    }
}
