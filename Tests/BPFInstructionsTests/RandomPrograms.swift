// RandomPrograms — random instructions of every class, for round trips and fuzzing.
import BPFInstructions

struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e3779b97f4a7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58476d1ce4e5b9
        z = (z ^ (z >> 27)) &* 0x94d049bb133111eb
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func imm() -> Int32 {
        switch below(4) {
        case 0: return Int32(below(16)) - 8
        case 1: return Int32(truncatingIfNeeded: next())
        case 2: return [0, 1, -1, Int32.min, Int32.max][below(5)]
        default: return Int32(below(256))
        }
    }
    mutating func reg(_ allow10: Bool = true) -> UInt8 { UInt8(below(allow10 ? 11 : 10)) }
}

enum RandomPrograms {
    /// One well-formed instruction (or a wide pair) at slot `pc` of a program of `n` slots:
    /// fields as the assembler can write them; jumps land inside [0, n).
    static func instruction(_ r: inout SplitMix, pc: Int, n: Int) -> [BPFInsn] {
        func jumpOff() -> Int16 { Int16(r.below(n) - (pc + 1)) }
        switch r.below(10) {
        case 0, 1:
            let ops = ALUOp.allCases.filter { $0 != .end && $0 != .neg }
            let op = ops[r.below(ops.count)]
            let w = r.below(2) == 0
            var off: Int16 = 0
            if op == .div || op == .mod { off = Int16(r.below(2)) }
            if r.below(2) == 0 {
                var i = w ? BPFInsn.alu64(op, dst: r.reg(false), src: r.reg()) : BPFInsn.alu32(op, dst: r.reg(false), src: r.reg())
                if op == .mov && r.below(3) == 0 { off = w ? [8, 16, 32][r.below(3)] : [8, 16][r.below(2)] }
                i.off = off
                return [i]
            }
            var imm = r.imm()
            if [.lsh, .rsh, .arsh].contains(op) { imm = Int32(r.below(w ? 64 : 32)) }
            if (op == .div || op == .mod) && imm == 0 { imm = 3 }
            var i = w ? BPFInsn.alu64(op, dst: r.reg(false), imm: imm) : BPFInsn.alu32(op, dst: r.reg(false), imm: imm)
            i.off = off
            return [i]
        case 2:
            let bits: Int32 = [16, 32, 64][r.below(3)]
            let code: UInt8 = [0xd4, 0xdc, 0xd7, 0x87, 0x84][r.below(5)]
            return [BPFInsn(code: code, dst: r.reg(false), imm: code == 0x87 || code == 0x84 ? 0 : bits)]
        case 3:
            let size = InsnSize.allCases[r.below(4)]
            let sx = size != .dw && r.below(4) == 0
            return [BPFInsn(code: InsnClass.ldx.rawValue | (sx ? InsnMode.memsx : .mem).rawValue | size.rawValue,
                            dst: r.reg(false), src: r.reg(), off: Int16(truncatingIfNeeded: r.below(64) - 32))]
        case 4:
            let size = InsnSize.allCases[r.below(4)]
            if r.below(2) == 0 { return [.st(size, dst: r.reg(), off: Int16(r.below(64)) - 32, imm: r.imm())] }
            return [.stx(size, dst: r.reg(), src: r.reg(), off: Int16(r.below(64)) - 32)]
        case 5:
            let op = AtomicOp.allCases[r.below(AtomicOp.allCases.count)]
            let size: InsnSize = r.below(2) == 0 ? .w : .dw
            return [BPFInsn(code: InsnClass.stx.rawValue | InsnMode.atomic.rawValue | size.rawValue,
                            dst: r.reg(), src: r.reg(), off: -Int16(r.below(8) * 8), imm: op.rawValue)]
        case 6:
            let ops = JmpOp.allCases.filter(\.isConditional)
            let op = ops[r.below(ops.count)]
            let cls: UInt8 = r.below(2) == 0 ? 0x05 : 0x06
            if r.below(2) == 0 {
                return [BPFInsn(code: cls | op.rawValue | 0x08, dst: r.reg(), src: r.reg(), off: jumpOff())]
            }
            return [BPFInsn(code: cls | op.rawValue, dst: r.reg(), off: jumpOff(), imm: r.imm())]
        case 7:
            if r.below(3) == 0 { return [BPFInsn(code: 0x06, imm: Int32(jumpOff()))] }
            return [.ja(jumpOff())]
        case 8:
            if pc + 1 < n - 1 { return BPFInsn.ldImm64(r.reg(false), r.next()) }
            return [.mov64(0, imm: r.imm())]
        default:
            if r.below(3) == 0 { return [.call(helper: [5, 7, 8, 125][r.below(4)])] }
            return [.exit]
        }
    }

    /// A program of about `n` slots ending in exit.
    static func program(_ r: inout SplitMix, n: Int) -> [BPFInsn] {
        var p: [BPFInsn] = []
        while p.count < n - 1 { p += instruction(&r, pc: p.count, n: n) }
        p.append(.exit)
        return p
    }
}
