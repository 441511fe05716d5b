// Assembler.swift — text to instructions, in the syntax of the bpf_conformance suite's
// `.data` files (uBPF's assembler syntax): `mov32 %r0, 0`, `ldxw %r1, [%r2+4]`,
// `jne %r0, 15, failed`, `call local func1`, `lock fetch add [%r10-8], %r1`, labels as
// `name:`, comments from `#`.
//
// Mirrors: RFC 9669's instruction classes, one mnemonic family each. Besides the suite's
// syntax the lab adds two forms of its own: `call kfunc N` (src_reg = 2) and
// `ja_cfg key K, TARGET[, inverse]` (seed 000's configurable jump; see
// `BPFInsn.isConfigurableJump`), and `lddw %rN, map FD` / `lddw %rN, map_value FD, OFF`
// (ld_imm64 with the map pseudo-sources).

/// A line of assembler text that is wrong, with where (1-based) and, when close to
/// something valid, what was meant.
public struct AssemblyError: Error, CustomStringConvertible, Sendable, Equatable {
    public let line: Int
    public let column: Int
    public let message: String
    public init(line: Int, column: Int, _ message: String) {
        self.line = line
        self.column = column
        self.message = message
    }
    public var description: String { "line \(line), column \(column): \(message)" }
}

public enum Assembler {
    /// The mnemonics the assembler knows (for "did you mean" and `bpflab asm --help`).
    public static var mnemonics: [String] {
        var m: [String] = []
        for op in ALUOp.allCases where op != .end {
            m += [op.mnemonic, op.mnemonic + "32", op.mnemonic + "64"]
        }
        m += ["sdiv", "sdiv32", "sdiv64", "smod", "smod32", "smod64"]
        m += ["movsx816", "movsx832", "movsx864", "movsx1632", "movsx1664", "movsx3264"]
        m += ["le16", "le32", "le64", "be16", "be32", "be64", "swap16", "swap32", "swap64", "bswap16", "bswap32", "bswap64"]
        m += ["ldxb", "ldxh", "ldxw", "ldxdw", "ldxsb", "ldxsh", "ldxsw", "stb", "sth", "stw", "stdw", "stxb", "stxh", "stxw", "stxdw"]
        m += ["lddw", "ja", "ja32", "ja_cfg", "call", "exit", "lock"]
        for op in JmpOp.allCases where op.isConditional { m += [op.mnemonic, op.mnemonic + "32"] }
        return m
    }

    /// Assembles `text` into instruction slots (a wide ld_imm64 is two). `mapNamed`
    /// resolves `lddw %rN, map NAME` to a map fd (scenario files name their maps); without
    /// it only fd numbers are accepted.
    public static func assemble(_ text: String, mapNamed: ((String) throws -> Int32)? = nil) throws -> [BPFInsn] {
        var lines: [SourceLine] = []
        var labels: [String: (slot: Int, line: Int)] = [:]
        var slot = 0
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            // Each line its own string, so columns count from the line's start.
            var l = SourceLine(number: n + 1, text: Substring(String(raw)))
            l.stripComment()
            // Labels: "name:" at the start (an instruction may follow on the same line).
            while let (name, col, rest) = l.leadingLabel() {
                if let prev = labels[name] {
                    throw AssemblyError(line: l.number, column: col, "label '\(name)' is already defined on line \(prev.line)")
                }
                labels[name] = (slot, l.number)
                l.text = rest
            }
            guard !l.isBlank else { continue }
            l.slot = slot
            slot += l.mnemonic.lowercased() == "lddw" ? 2 : 1
            lines.append(l)
        }
        var out: [BPFInsn] = []
        out.reserveCapacity(slot)
        let labelSlots = labels.mapValues(\.slot)
        for l in lines {
            out += try LineAssembler(line: l, labels: labelSlots, lastSlot: slot - 1, mapNamed: mapNamed).assemble()
        }
        return out
    }
}

/// One line of source: its number, what is left of its text, its first slot.
struct SourceLine {
    let number: Int
    var text: Substring
    var slot = 0
    /// Column (1-based) of the first character of `text` in the original line.
    var column: Int { text.startIndex.utf16Offset(in: text.base) + 1 }

    init(number: Int, text: Substring) {
        self.number = number
        self.text = text
    }

    mutating func stripComment() {
        if let i = text.firstIndex(of: "#") { text = text[..<i] }
        text = text.trimmingTrailingSpace()
    }

    var isBlank: Bool { text.allSatisfy { $0 == " " || $0 == "\t" || $0 == "\r" } }

    /// "name:" at the start, if any: its name, column and what follows.
    func leadingLabel() -> (String, Int, Substring)? {
        let t = text.trimmingLeadingSpace()
        guard let colon = t.firstIndex(of: ":") else { return nil }
        let name = t[..<colon]
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." }),
              !(name.first!.isNumber) else { return nil }
        return (String(name), t.startIndex.utf16Offset(in: t.base) + 1, t[t.index(after: colon)...])
    }

    var mnemonic: Substring {
        let t = text.trimmingLeadingSpace()
        return t.prefix { !$0.isWhitespace }
    }
}

extension Substring {
    func trimmingLeadingSpace() -> Substring { drop { $0 == " " || $0 == "\t" || $0 == "\r" } }
    func trimmingTrailingSpace() -> Substring {
        var s = self
        while let c = s.last, c == " " || c == "\t" || c == "\r" { s = s.dropLast() }
        return s
    }
}

/// An operand as written, with its column.
struct Operand {
    let text: Substring
    var column: Int { text.startIndex.utf16Offset(in: text.base) + 1 }
}

/// Assembles one line.
struct LineAssembler {
    let line: SourceLine
    let labels: [String: Int]
    /// The program's last slot (where a jump to an undefined "exit" goes).
    let lastSlot: Int
    let mapNamed: ((String) throws -> Int32)?

    func fail(_ column: Int, _ message: String) -> AssemblyError {
        AssemblyError(line: line.number, column: column, message)
    }

    func assemble() throws -> [BPFInsn] {
        let t = line.text.trimmingLeadingSpace()
        let mn = t.prefix { !$0.isWhitespace }
        let mcol = mn.startIndex.utf16Offset(in: mn.base) + 1
        var ops = splitOperands(t[mn.endIndex...])
        var m = mn.lowercased()
        if m == "lock" { return try [atomic(&ops, mcol)] }
        if m == ".insn" {
            // One raw slot as its little-endian u64 (what the disassembler writes for an
            // opcode it does not know).
            try count(ops, 1, m, mcol)
            return [BPFInsn(word: UInt64(bitPattern: try number(ops[0]).value))]
        }
        if m == "call" { return try [call(ops, mcol)] }
        if m == "exit" { try count(ops, 0, m, mcol); return [.exit] }
        if m == "lddw" { return try lddw(ops, mcol) }
        if m == "ja" || m == "ja32" {
            try count(ops, 1, m, mcol)
            let rel = try target(ops[0], wide: m == "ja32")
            if m == "ja32" { return [BPFInsn(code: InsnClass.jmp32.rawValue, imm: Int32(rel))] }
            return [BPFInsn(code: 0x05, off: Int16(rel))]
        }
        if m == "ja_cfg" { return try [configurableJump(ops, mcol)] }
        // Loads and stores.
        if let (cls, mode, size) = Self.memoryForms[m] { return try [memory(m, cls, mode, size, ops, mcol)] }
        // Byte swaps.
        if let (code, bits) = Self.endianForms[m] {
            try count(ops, 1, m, mcol)
            return [BPFInsn(code: code, dst: try register(ops[0]), imm: bits)]
        }
        // Conditional jumps.
        var is32 = false
        if m.hasSuffix("32"), JmpOp.allCases.contains(where: { $0.isConditional && $0.mnemonic == String(m.dropLast(2)) }) {
            is32 = true
            m = String(m.dropLast(2))
        }
        if let op = JmpOp.allCases.first(where: { $0.isConditional && $0.mnemonic == m }) {
            try count(ops, 3, m, mcol)
            let cls = is32 ? InsnClass.jmp32 : .jmp
            let dst = try register(ops[0])
            let rel = try target(ops[2], wide: false)
            if ops[1].text.hasPrefix("%") {
                let src = try register(ops[1])
                return [BPFInsn(code: cls.rawValue | op.rawValue | InsnSource.x.rawValue, dst: dst, src: src, off: Int16(rel))]
            }
            return [BPFInsn(code: cls.rawValue | op.rawValue, dst: dst, off: Int16(rel), imm: try imm32(ops[1]))]
        }
        // Arithmetic: op, op32, op64; sdiv/smod (off = 1); movsxNM (off = N bits).
        var alu64 = true
        var off: Int16 = 0
        var base = Substring(m)
        if base.hasPrefix("movsx") {
            let spec = base.dropFirst(5)
            guard let (bits, wide) = Self.movsxForms[String(spec)] else { throw unknown(String(mn), mcol) }
            off = bits
            alu64 = wide
            base = "mov"
        } else if base.hasSuffix("32") { alu64 = false; base = base.dropLast(2) }
        else if base.hasSuffix("64") { base = base.dropLast(2) }
        if base == "sdiv" { base = "div"; off = 1 }
        if base == "smod" { base = "mod"; off = 1 }
        guard let op = ALUOp.allCases.first(where: { $0.mnemonic == base && $0 != .end }) else {
            throw unknown(String(mn), mcol)
        }
        let cls = alu64 ? InsnClass.alu64 : .alu
        if op == .neg {
            try count(ops, 1, m, mcol)
            return [BPFInsn(code: cls.rawValue | op.rawValue, dst: try register(ops[0]))]
        }
        try count(ops, 2, String(mn), mcol)
        let dst = try register(ops[0])
        if ops[1].text.hasPrefix("%") {
            let src = try register(ops[1])
            return [BPFInsn(code: cls.rawValue | op.rawValue | InsnSource.x.rawValue, dst: dst, src: src, off: off)]
        }
        if off != 0 && op == .mov {
            throw fail(ops[1].column, "\(mn) takes a register as its source")
        }
        return [BPFInsn(code: cls.rawValue | op.rawValue, dst: dst, off: off, imm: try imm32(ops[1]))]
    }

    static let memoryForms: [String: (InsnClass, InsnMode, InsnSize)] = [
        "ldxb": (.ldx, .mem, .b), "ldxh": (.ldx, .mem, .h), "ldxw": (.ldx, .mem, .w), "ldxdw": (.ldx, .mem, .dw),
        "ldxsb": (.ldx, .memsx, .b), "ldxsh": (.ldx, .memsx, .h), "ldxsw": (.ldx, .memsx, .w),
        "stb": (.st, .mem, .b), "sth": (.st, .mem, .h), "stw": (.st, .mem, .w), "stdw": (.st, .mem, .dw),
        "stxb": (.stx, .mem, .b), "stxh": (.stx, .mem, .h), "stxw": (.stx, .mem, .w), "stxdw": (.stx, .mem, .dw),
    ]
    static let endianForms: [String: (UInt8, Int32)] = [
        "le16": (0xd4, 16), "le32": (0xd4, 32), "le64": (0xd4, 64),
        "be16": (0xdc, 16), "be32": (0xdc, 32), "be64": (0xdc, 64),
        "swap16": (0xd7, 16), "swap32": (0xd7, 32), "swap64": (0xd7, 64),
        "bswap16": (0xd7, 16), "bswap32": (0xd7, 32), "bswap64": (0xd7, 64),
    ]
    /// movsx<from><to>: (off = source bits, 64-bit destination).
    static let movsxForms: [String: (Int16, Bool)] = [
        "816": (8, false), "832": (8, false), "864": (8, true),
        "1632": (16, false), "1664": (16, true), "3264": (32, true),
    ]

    func unknown(_ word: String, _ column: Int) -> AssemblyError {
        var msg = "unknown mnemonic '\(word.prefix(32))'"
        if let s = suggestion(for: word, in: Assembler.mnemonics) { msg += "; did you mean '\(s)'?" }
        return fail(column, msg)
    }

    func count(_ ops: [Operand], _ n: Int, _ mnemonic: String, _ column: Int) throws {
        guard ops.count == n else {
            throw fail(ops.first?.column ?? column, "\(mnemonic) takes \(n) operand\(n == 1 ? "" : "s"), found \(ops.count)")
        }
    }

    func splitOperands(_ s: Substring) -> [Operand] {
        // Commas separate operands, except inside [ ].
        var out: [Operand] = []
        var depth = 0
        var start = s.startIndex
        var i = s.startIndex
        func push(_ r: Substring) {
            let t = r.trimmingLeadingSpace().trimmingTrailingSpace()
            if !t.isEmpty { out.append(Operand(text: t)) }
        }
        while i < s.endIndex {
            let c = s[i]
            if c == "[" { depth += 1 } else if c == "]" { depth -= 1 }
            else if c == "," && depth == 0 { push(s[start..<i]); start = s.index(after: i) }
            i = s.index(after: i)
        }
        push(s[start...])
        // "call local func1", "lock fetch add …": words before the first real operand are
        // split on spaces by the callers that need them.
        return out
    }

    func register(_ o: Operand) throws -> UInt8 {
        var t = o.text
        if t.hasPrefix("%") { t = t.dropFirst() }
        guard t.hasPrefix("r"), let n = Int(t.dropFirst()) else {
            throw fail(o.column, "expected a register (%r0 … %r10), found '\(o.text.prefix(24))'")
        }
        guard (0...10).contains(n) else { throw fail(o.column, "invalid register %r\(n): registers are %r0 … %r10") }
        return UInt8(n)
    }

    /// A number: decimal or 0x hex, optionally signed.
    func number(_ o: Operand) throws -> (value: Int64, hex: Bool) {
        var t = o.text
        var neg = false
        if t.hasPrefix("-") { neg = true; t = t.dropFirst() } else if t.hasPrefix("+") { t = t.dropFirst() }
        let hex = t.hasPrefix("0x") || t.hasPrefix("0X")
        guard let mag = hex ? UInt64(t.dropFirst(2), radix: 16) : UInt64(t) else {
            throw fail(o.column, "expected a number, found '\(o.text.prefix(24))'")
        }
        if neg {
            guard mag <= UInt64(Int64.max) + 1 else { throw fail(o.column, "\(o.text) does not fit in 64 bits") }
            return (mag == UInt64(Int64.max) + 1 ? Int64.min : -Int64(mag), hex)
        }
        return (Int64(bitPattern: mag), hex)
    }

    /// A 32-bit immediate: decimal in the signed range, hex up to 0xffffffff (a bit pattern).
    func imm32(_ o: Operand) throws -> Int32 {
        let (v, hex) = try number(o)
        if hex && v >= 0 && v <= 0xffff_ffff { return Int32(truncatingIfNeeded: v) }
        guard v >= Int64(Int32.min) && v <= Int64(Int32.max) else {
            throw fail(o.column, "immediate \(o.text) does not fit in 32 bits (\(Int32.min) … \(Int32.max), or 0x0 … 0xffffffff)")
        }
        return Int32(v)
    }

    /// A jump target: a label, or a relative offset +N / -N / N.
    func target(_ o: Operand, wide: Bool) throws -> Int {
        let t = o.text
        let rel: Int
        if let c = t.first, c == "+" || c == "-" || c.isNumber {
            rel = Int(try number(o).value)
        } else {
            if t == "exit" && labels["exit"] == nil {
                // The suite's convention: "exit" without such a label is the program's
                // last instruction (its final exit).
                rel = lastSlot - (line.slot + 1)
            } else {
            guard let slot = labels[String(t)] else {
                var msg = "undefined label '\(t.prefix(32))'"
                if let s = suggestion(for: String(t), in: Array(labels.keys)) { msg += "; did you mean '\(s)'?" }
                throw fail(o.column, msg)
            }
            rel = slot - (line.slot + 1)
            }
        }
        let range = wide ? Int(Int32.min)...Int(Int32.max) : Int(Int16.min)...Int(Int16.max)
        guard range.contains(rel) else {
            throw fail(o.column, "jump offset \(rel) does not fit in \(wide ? 32 : 16) bits\(wide ? "" : " (use ja32 for long jumps)")")
        }
        return rel
    }

    /// [%rN+off], [%rN-off], [%rN].
    func memoryOperand(_ o: Operand) throws -> (UInt8, Int16) {
        guard o.text.hasPrefix("["), o.text.hasSuffix("]") else {
            throw fail(o.column, "expected a memory operand like [%r1+8], found '\(o.text.prefix(24))'")
        }
        let inner = o.text.dropFirst().dropLast()
        let split = inner.firstIndex { $0 == "+" || $0 == "-" }
        let regText = (split.map { inner[..<$0] } ?? inner).trimmingLeadingSpace().trimmingTrailingSpace()
        let reg = try register(Operand(text: regText))
        guard let s = split else { return (reg, 0) }
        let offText = inner[s...].filter { $0 != " " }
        let offOperand = Operand(text: inner[s...].trimmingLeadingSpace())
        guard let v = try? number(Operand(text: Substring(offText))).value else {
            throw fail(offOperand.column, "expected an offset, found '\(offText.prefix(24))'")
        }
        guard v >= Int64(Int16.min) && v <= Int64(Int16.max) else {
            throw fail(offOperand.column, "offset \(v) does not fit in 16 bits (\(Int16.min) … \(Int16.max))")
        }
        return (reg, Int16(v))
    }

    func memory(_ m: String, _ cls: InsnClass, _ mode: InsnMode, _ size: InsnSize, _ ops: [Operand], _ mcol: Int) throws -> BPFInsn {
        try count(ops, 2, m, mcol)
        let code = cls.rawValue | mode.rawValue | size.rawValue
        switch cls {
        case .ldx:
            let dst = try register(ops[0])
            let (src, off) = try memoryOperand(ops[1])
            return BPFInsn(code: code, dst: dst, src: src, off: off)
        case .st:
            let (dst, off) = try memoryOperand(ops[0])
            return BPFInsn(code: code, dst: dst, off: off, imm: try imm32(ops[1]))
        default:
            let (dst, off) = try memoryOperand(ops[0])
            return BPFInsn(code: code, dst: dst, src: try register(ops[1]), off: off)
        }
    }

    func lddw(_ ops: [Operand], _ mcol: Int) throws -> [BPFInsn] {
        try count(ops.count == 3 ? Array(ops.prefix(2)) : ops, 2, "lddw", mcol)
        let dst = try register(ops[0])
        let words = ops[1].text.split(separator: " ", omittingEmptySubsequences: true)
        if words.count == 2, words[0] == "map" || words[0] == "map_value" {
            let fd: Int32
            if let c = words[1].first, c.isLetter || c == "_", let resolve = mapNamed {
                fd = try resolve(String(words[1]))
            } else {
                fd = try imm32(Operand(text: words[1]))
            }
            if words[0] == "map" {
                guard ops.count == 2 else { throw fail(ops[2].column, "lddw %rN, map FD takes no offset") }
                return BPFInsn.ldImm64(dst, UInt64(UInt32(bitPattern: fd)), src: Pseudo.mapFD)
            }
            let off = ops.count == 3 ? try imm32(ops[2]) : 0
            return BPFInsn.ldImm64(dst, UInt64(UInt32(bitPattern: fd)) | UInt64(UInt32(bitPattern: off)) << 32, src: Pseudo.mapValue)
        }
        guard ops.count == 2 else { throw fail(ops[2].column, "lddw takes 2 operands, found 3") }
        let (v, _) = try number(ops[1])
        return BPFInsn.ldImm64(dst, UInt64(bitPattern: v))
    }

    func call(_ ops: [Operand], _ mcol: Int) throws -> BPFInsn {
        try count(ops, 1, "call", mcol)
        let words = ops[0].text.split(separator: " ", omittingEmptySubsequences: true)
        if words.count == 2, words[0] == "local" {
            let o = Operand(text: words[1])
            guard let slot = labels[String(words[1])] else {
                var msg = "undefined function '\(words[1].prefix(32))'"
                if let s = suggestion(for: String(words[1]), in: Array(labels.keys)) { msg += "; did you mean '\(s)'?" }
                throw fail(o.column, msg)
            }
            return .callLocal(Int32(slot - (line.slot + 1)))
        }
        if words.count == 2, words[0] == "kfunc" { return .callKfunc(try imm32(Operand(text: words[1]))) }
        if words.count == 1, ops[0].text.hasPrefix("%") {
            let reg = try register(ops[0])
            return BPFInsn(code: 0x8d, dst: reg)  // callx (BPF_CALL | BPF_X): the target in dst_reg
        }
        guard words.count == 1 else {
            throw fail(ops[0].column, "call takes a helper id, 'local LABEL', 'kfunc ID' or a register")
        }
        return .call(helper: try imm32(ops[0]))
    }

    /// lock [fetch] add|or|and|xor|xchg|cmpxchg[32] [%rD+off], %rS
    func atomic(_ ops: inout [Operand], _ mcol: Int) throws -> BPFInsn {
        // The operation words sit in front of the memory operand in the first operand.
        guard let first = ops.first, let bracket = first.text.firstIndex(of: "[") else {
            throw fail(ops.first?.column ?? mcol, "Invalid number of operands for lock: expected lock [fetch] OP [%rD+off], %rS")
        }
        let words = first.text[..<bracket].split(separator: " ")
        ops[0] = Operand(text: first.text[bracket...])
        guard ops.count == 2, !words.isEmpty else {
            throw fail(first.column, "Invalid number of operands for lock: expected lock [fetch] OP [%rD+off], %rS")
        }
        var fetch = false
        var w = words[...]
        if w.first == "fetch" { fetch = true; w = w.dropFirst() }
        guard w.count == 1, var name = w.first.map(String.init) else {
            throw fail(first.column, "expected one atomic operation after lock")
        }
        var size = InsnSize.dw
        if name.hasSuffix("32") { size = .w; name.removeLast(2) } else if name.hasSuffix("64") { name.removeLast(2) }
        let op: AtomicOp
        switch (name, fetch) {
        case ("add", false): op = .add
        case ("or", false): op = .or
        case ("and", false): op = .and
        case ("xor", false): op = .xor
        case ("add", true): op = .fetchAdd
        case ("or", true): op = .fetchOr
        case ("and", true): op = .fetchAnd
        case ("xor", true): op = .fetchXor
        case ("xchg", _): op = .xchg
        case ("cmpxchg", _): op = .cmpxchg
        default:
            var msg = "unknown atomic operation '\(name.prefix(16))'"
            if let s = suggestion(for: name, in: ["add", "or", "and", "xor", "xchg", "cmpxchg"]) { msg += "; did you mean '\(s)'?" }
            throw fail(first.column, msg)
        }
        let (dst, off) = try memoryOperand(ops[0])
        let src = try register(ops[1])
        return BPFInsn(code: InsnClass.stx.rawValue | InsnMode.atomic.rawValue | size.rawValue, dst: dst, src: src, off: off, imm: op.rawValue)
    }

    /// ja_cfg key K, TARGET[, inverse] — jumps while key K is on (inverse: while it is off).
    func configurableJump(_ ops: [Operand], _ mcol: Int) throws -> BPFInsn {
        guard ops.count == 2 || ops.count == 3 else {
            throw fail(ops.first?.column ?? mcol, "ja_cfg takes 'key K, TARGET' and optionally 'inverse'")
        }
        let words = ops[0].text.split(separator: " ")
        guard words.count == 2, words[0] == "key", let k = Int(words[1]), (0...15).contains(k) else {
            throw fail(ops[0].column, "expected 'key K' with a program-local key id 0 … 15")
        }
        let rel = try target(ops[1], wide: false)
        var inverse: Int32 = 0
        if ops.count == 3 {
            guard ops[2].text == "inverse" else {
                throw fail(ops[2].column, "expected 'inverse' (jump while the key is off), found '\(ops[2].text.prefix(16))'")
            }
            inverse = 1
        }
        return BPFInsn(code: 0x05, dst: UInt8(k), src: Pseudo.jaCfg, off: Int16(rel), imm: inverse)
    }
}
