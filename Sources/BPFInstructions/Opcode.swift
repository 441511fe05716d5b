// Opcode.swift — the fields of an eBPF opcode byte: class, size, mode, operation, source.
//
// Mirrors: include/uapi/linux/bpf_common.h and include/uapi/linux/bpf.h (BPF_ALU64,
// BPF_JMP32, BPF_DW, BPF_MEMSX, BPF_ATOMIC, BPF_FETCH, BPF_XCHG, BPF_CMPXCHG,
// BPF_PSEUDO_*), RFC 9669 §3–§5 (the instruction set as standardised).

/// The low three bits of an opcode: the instruction class.
public enum InsnClass: UInt8, Sendable, CaseIterable {
    case ld = 0x00, ldx = 0x01, st = 0x02, stx = 0x03, alu = 0x04, jmp = 0x05, jmp32 = 0x06, alu64 = 0x07
}

/// Load/store size (bits 3–4).
public enum InsnSize: UInt8, Sendable, CaseIterable {
    case w = 0x00, h = 0x08, b = 0x10, dw = 0x18
    public var bytes: Int {
        switch self { case .b: return 1; case .h: return 2; case .w: return 4; case .dw: return 8 }
    }
    public init?(bytes: Int) {
        switch bytes { case 1: self = .b; case 2: self = .h; case 4: self = .w; case 8: self = .dw; default: return nil }
    }
}

/// Load/store mode (bits 5–7).
public enum InsnMode: UInt8, Sendable, CaseIterable {
    case imm = 0x00, abs = 0x20, ind = 0x40, mem = 0x60, memsx = 0x80, atomic = 0xc0
}

/// Arithmetic operations (bits 4–7 of an ALU / ALU64 opcode).
public enum ALUOp: UInt8, Sendable, CaseIterable {
    case add = 0x00, sub = 0x10, mul = 0x20, div = 0x30, or = 0x40, and = 0x50, lsh = 0x60, rsh = 0x70
    case neg = 0x80, mod = 0x90, xor = 0xa0, mov = 0xb0, arsh = 0xc0, end = 0xd0

    public var mnemonic: String {
        switch self {
        case .add: return "add"; case .sub: return "sub"; case .mul: return "mul"; case .div: return "div"
        case .or: return "or"; case .and: return "and"; case .lsh: return "lsh"; case .rsh: return "rsh"
        case .neg: return "neg"; case .mod: return "mod"; case .xor: return "xor"; case .mov: return "mov"
        case .arsh: return "arsh"; case .end: return "end"
        }
    }
}

/// Jump operations (bits 4–7 of a JMP / JMP32 opcode).
public enum JmpOp: UInt8, Sendable, CaseIterable {
    case ja = 0x00, jeq = 0x10, jgt = 0x20, jge = 0x30, jset = 0x40, jne = 0x50, jsgt = 0x60, jsge = 0x70
    case call = 0x80, exit = 0x90, jlt = 0xa0, jle = 0xb0, jslt = 0xc0, jsle = 0xd0

    public var mnemonic: String {
        switch self {
        case .ja: return "ja"; case .jeq: return "jeq"; case .jgt: return "jgt"; case .jge: return "jge"
        case .jset: return "jset"; case .jne: return "jne"; case .jsgt: return "jsgt"; case .jsge: return "jsge"
        case .call: return "call"; case .exit: return "exit"; case .jlt: return "jlt"; case .jle: return "jle"
        case .jslt: return "jslt"; case .jsle: return "jsle"
        }
    }

    /// A conditional jump (compares two operands).
    public var isConditional: Bool { self != .ja && self != .call && self != .exit }
}

/// Operand source bit (bit 3): the immediate or the source register.
public enum InsnSource: UInt8, Sendable {
    case k = 0x00, x = 0x08
}

/// The atomic operations (the immediate of a BPF_STX | BPF_ATOMIC instruction).
public enum AtomicOp: Int32, Sendable, CaseIterable {
    case add = 0x00, or = 0x40, and = 0x50, xor = 0xa0
    case fetchAdd = 0x01, fetchOr = 0x41, fetchAnd = 0x51, fetchXor = 0xa1
    case xchg = 0xe1, cmpxchg = 0xf1

    public var fetches: Bool { rawValue & 0x01 != 0 }
    /// The operation without BPF_FETCH (add, or, and, xor; xchg and cmpxchg are their own).
    public var baseName: String {
        switch self {
        case .add, .fetchAdd: return "add"
        case .or, .fetchOr: return "or"
        case .and, .fetchAnd: return "and"
        case .xor, .fetchXor: return "xor"
        case .xchg: return "xchg"
        case .cmpxchg: return "cmpxchg"
        }
    }
}

/// The source-register values with a meaning of their own.
public enum Pseudo {
    /// ld_imm64: imm is a map fd (the verifier replaces it with the map's address).
    public static let mapFD: UInt8 = 1
    /// ld_imm64: imm is a map fd, the next instruction's imm an offset into value 0.
    public static let mapValue: UInt8 = 2
    /// ld_imm64: imm is a BTF id of a kernel variable (not modelled).
    public static let btfID: UInt8 = 3
    /// ld_imm64: imm is the instruction offset of a function (a callback's address).
    public static let function: UInt8 = 4
    /// ld_imm64: imm is an index into fd_array naming a map.
    public static let mapIndex: UInt8 = 5
    /// ld_imm64: like mapIndex, the next imm an offset into value 0.
    public static let mapIndexValue: UInt8 = 6
    /// call: imm is the relative instruction offset of a local function (bpf-to-bpf call).
    public static let call: UInt8 = 1
    /// call: imm identifies a kernel function (a kfunc).
    public static let kfuncCall: UInt8 = 2
    /// ja: the lab's configurable jump (seed 000's JA_CFG), see `BPFInsn.isConfigurableJump`.
    public static let jaCfg: UInt8 = 1
}

/// include/linux/bpf.h: MAX_BPF_STACK, MAX_CALL_FRAMES; and the tail-call stack limit.
public enum BPFLimits {
    public static let stackBytes = 512
    public static let callFrames = 8
    /// A subprogram that tail-calls may use at most this much stack (verifier.c:
    /// "tail_calls are not allowed when call stack of previous frames is %d bytes. Too large").
    public static let tailCallStackBytes = 256
    /// BPF_COMPLEXITY_LIMIT_INSNS / BPF_MAXINSNS for a privileged loader.
    public static let maxInstructions = 1_000_000
}
