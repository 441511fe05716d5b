// Instruction.swift — struct bpf_insn: the 8-byte eBPF instruction, and the 16-byte ld_imm64.
//
// Mirrors: include/uapi/linux/bpf.h (struct bpf_insn: u8 code; u8 dst_reg:4, src_reg:4;
// s16 off; s32 imm), RFC 9669 §3 (encoding: little-endian on this machine; the wide
// instruction is two slots, the second with only imm set).

/// One instruction slot, as the kernel stores it.
public struct BPFInsn: Hashable, Sendable, CustomStringConvertible {
    public var code: UInt8
    /// Destination register (0–10; the four bits can hold up to 15).
    public var dst: UInt8
    /// Source register, or a pseudo-source (`Pseudo`).
    public var src: UInt8
    public var off: Int16
    public var imm: Int32

    public init(code: UInt8, dst: UInt8 = 0, src: UInt8 = 0, off: Int16 = 0, imm: Int32 = 0) {
        self.code = code
        self.dst = dst & 0x0f
        self.src = src & 0x0f
        self.off = off
        self.imm = imm
    }

    /// Size of one slot.
    public static let size = 8

    // MARK: the opcode's fields

    public var cls: InsnClass { InsnClass(rawValue: code & 0x07)! }
    public var sizeField: InsnSize { InsnSize(rawValue: code & 0x18)! }
    public var mode: InsnMode? { InsnMode(rawValue: code & 0xe0) }
    public var aluOp: ALUOp? { ALUOp(rawValue: code & 0xf0) }
    public var jmpOp: JmpOp? { JmpOp(rawValue: code & 0xf0) }
    public var source: InsnSource { code & 0x08 != 0 ? .x : .k }

    /// The first slot of a 16-byte ld_imm64 (BPF_LD | BPF_IMM | BPF_DW).
    public var isWide: Bool { code == 0x18 }
    /// A call to a local function (bpf-to-bpf call).
    public var isLocalCall: Bool { code == 0x85 && src == Pseudo.call }
    /// A call to a helper (by the kernel's helper ID in imm).
    public var isHelperCall: Bool { code == 0x85 && src == 0 }
    public var isKfuncCall: Bool { code == 0x85 && src == Pseudo.kfuncCall }
    public var isExit: Bool { code == 0x95 }
    /// The lab's JA_CFG (seed 000's JA_MAYBE): a jump that is either a NOP or taken,
    /// decided by a static key. Encoding: BPF_JMP | BPF_JA with src_reg = 1, dst_reg = the
    /// program-local key id (0–15), off = the jump's offset, imm bit 0 = 0 for a normal
    /// jump (a NOP while the key is off, taken while it is on) and 1 for an inverse one
    /// (taken while the key is off, a NOP while it is on). The rest of imm is zero as
    /// written; the lab's load path keeps its site index there (imm >> 1) in the xlated
    /// program.
    public var isConfigurableJump: Bool { code == 0x05 && src == Pseudo.jaCfg }

    // MARK: constructors by name

    public static func alu64(_ op: ALUOp, dst: UInt8, imm: Int32) -> BPFInsn {
        BPFInsn(code: InsnClass.alu64.rawValue | op.rawValue | InsnSource.k.rawValue, dst: dst, imm: imm)
    }
    public static func alu64(_ op: ALUOp, dst: UInt8, src: UInt8) -> BPFInsn {
        BPFInsn(code: InsnClass.alu64.rawValue | op.rawValue | InsnSource.x.rawValue, dst: dst, src: src)
    }
    public static func alu32(_ op: ALUOp, dst: UInt8, imm: Int32) -> BPFInsn {
        BPFInsn(code: InsnClass.alu.rawValue | op.rawValue | InsnSource.k.rawValue, dst: dst, imm: imm)
    }
    public static func alu32(_ op: ALUOp, dst: UInt8, src: UInt8) -> BPFInsn {
        BPFInsn(code: InsnClass.alu.rawValue | op.rawValue | InsnSource.x.rawValue, dst: dst, src: src)
    }
    public static func mov64(_ dst: UInt8, imm: Int32) -> BPFInsn { alu64(.mov, dst: dst, imm: imm) }
    public static func mov64(_ dst: UInt8, src: UInt8) -> BPFInsn { alu64(.mov, dst: dst, src: src) }
    public static func jmp(_ op: JmpOp, dst: UInt8, imm: Int32, off: Int16) -> BPFInsn {
        BPFInsn(code: InsnClass.jmp.rawValue | op.rawValue | InsnSource.k.rawValue, dst: dst, off: off, imm: imm)
    }
    public static func jmp(_ op: JmpOp, dst: UInt8, src: UInt8, off: Int16) -> BPFInsn {
        BPFInsn(code: InsnClass.jmp.rawValue | op.rawValue | InsnSource.x.rawValue, dst: dst, src: src, off: off)
    }
    public static func ja(_ off: Int16) -> BPFInsn { BPFInsn(code: 0x05, off: off) }
    public static func ldx(_ size: InsnSize, dst: UInt8, src: UInt8, off: Int16) -> BPFInsn {
        BPFInsn(code: InsnClass.ldx.rawValue | InsnMode.mem.rawValue | size.rawValue, dst: dst, src: src, off: off)
    }
    public static func stx(_ size: InsnSize, dst: UInt8, src: UInt8, off: Int16) -> BPFInsn {
        BPFInsn(code: InsnClass.stx.rawValue | InsnMode.mem.rawValue | size.rawValue, dst: dst, src: src, off: off)
    }
    public static func st(_ size: InsnSize, dst: UInt8, off: Int16, imm: Int32) -> BPFInsn {
        BPFInsn(code: InsnClass.st.rawValue | InsnMode.mem.rawValue | size.rawValue, dst: dst, off: off, imm: imm)
    }
    public static func call(helper id: Int32) -> BPFInsn { BPFInsn(code: 0x85, imm: id) }
    public static func callLocal(_ rel: Int32) -> BPFInsn { BPFInsn(code: 0x85, src: Pseudo.call, imm: rel) }
    public static func callKfunc(_ id: Int32) -> BPFInsn { BPFInsn(code: 0x85, src: Pseudo.kfuncCall, imm: id) }
    public static let exit = BPFInsn(code: 0x95)
    /// The two slots of ld_imm64 dst = value (with a pseudo source: what imm names).
    public static func ldImm64(_ dst: UInt8, _ value: UInt64, src: UInt8 = 0) -> [BPFInsn] {
        [BPFInsn(code: 0x18, dst: dst, src: src, imm: Int32(truncatingIfNeeded: value)),
         BPFInsn(code: 0x00, imm: Int32(truncatingIfNeeded: value >> 32))]
    }

    // MARK: bytes

    /// The 8 bytes, little-endian.
    public var bytes: [UInt8] {
        let o = UInt16(bitPattern: off), i = UInt32(bitPattern: imm)
        return [code, dst | src << 4, UInt8(o & 0xff), UInt8(o >> 8),
                UInt8(i & 0xff), UInt8(i >> 8 & 0xff), UInt8(i >> 16 & 0xff), UInt8(i >> 24)]
    }

    /// The slot as one little-endian u64 (the suite's `-- raw` words).
    public var word: UInt64 {
        bytes.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    public init(word: UInt64) {
        var b = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { b[i] = UInt8(truncatingIfNeeded: word >> (8 * UInt64(i))) }
        self.init(bytes: b[...])
    }

    /// Decodes one slot from exactly 8 bytes.
    public init(bytes b: ArraySlice<UInt8>) {
        let s = b.startIndex
        code = b[s]
        dst = b[s + 1] & 0x0f
        src = b[s + 1] >> 4
        off = Int16(bitPattern: UInt16(b[s + 2]) | UInt16(b[s + 3]) << 8)
        imm = Int32(bitPattern: UInt32(b[s + 4]) | UInt32(b[s + 5]) << 8 | UInt32(b[s + 6]) << 16 | UInt32(b[s + 7]) << 24)
    }

    public var description: String {
        "{code 0x\(hexByte(code)) dst r\(dst) src \(src) off \(off) imm \(imm)}"
    }
}

/// A program's instructions as bytes and back.
public enum BPFBytecode {
    /// Decodes a byte image (a multiple of 8 bytes) into slots.
    public static func decode(_ bytes: [UInt8]) throws -> [BPFInsn] {
        guard bytes.count % BPFInsn.size == 0 else {
            throw BytecodeError("program of \(bytes.count) bytes is not a whole number of 8-byte instructions")
        }
        return stride(from: 0, to: bytes.count, by: 8).map { BPFInsn(bytes: bytes[$0 ..< $0 + 8]) }
    }

    public static func encode(_ insns: [BPFInsn]) -> [UInt8] { insns.flatMap(\.bytes) }

    /// Parses hex bytes separated by white space ("b7 00 00 00 01 00 00 00 95 …"), the
    /// conformance plugin's input; also accepts one unbroken hex string.
    public static func parseHex(_ text: String) throws -> [UInt8] {
        var out: [UInt8] = []
        for token in text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" || $0 == "," }) {
            var t = Substring(token)
            if t.hasPrefix("0x") || t.hasPrefix("0X") { t = t.dropFirst(2) }
            guard t.count % 2 == 0, !t.isEmpty else { throw BytecodeError("'\(token)' is not a whole number of hex bytes") }
            var i = t.startIndex
            while i < t.endIndex {
                let j = t.index(i, offsetBy: 2)
                guard let b = UInt8(t[i..<j], radix: 16) else { throw BytecodeError("'\(token)' is not hex") }
                out.append(b)
                i = j
            }
        }
        return out
    }
}

/// Two lower-case hex digits.
func hexByte(_ b: UInt8) -> String {
    let d = Array("0123456789abcdef")
    return String([d[Int(b >> 4)], d[Int(b & 15)]])
}

/// A malformed byte image or hex text.
public struct BytecodeError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
