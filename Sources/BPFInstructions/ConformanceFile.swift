// ConformanceFile.swift — a test file of the bpf_conformance suite (`.data`): sections
// `-- asm` (the program in the suite's assembler syntax), `-- raw` (the program as hex
// instruction words, one per line), `-- mem` (input memory as hex bytes, given to the
// program in r1 with its length in r2), `-- result` (the expected r0, hex) and `-- error`
// (the expected failure). Lines starting with '#' are the files' licence headers.
// `-- c` (the program's C source, for reading) and `-- no register offset` are ignored.

public struct ConformanceFile: Sendable {
    public var asm: String?
    public var raw: [BPFInsn]?
    public var memory: [UInt8] = []
    public var result: UInt64?
    public var error: String?

    /// Parses a file's text. Throws on an unknown section (the suite's runner refuses one).
    public init(text: String) throws {
        var section: String?
        var body: [String: [Substring]] = [:]
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line.hasPrefix("#") && section != "asm" { continue }
            if line.hasPrefix("-- ") || line == "--" {
                let name = line.dropFirst(3).trimmingTrailingSpace()
                guard Self.sections.contains(String(name)) else {
                    throw AssemblyError(line: n + 1, column: 4, "unknown section '-- \(name.prefix(32))' (known: \(Self.sections.sorted().joined(separator: ", ")))")
                }
                section = String(name)
                body[section!, default: []] += []
                continue
            }
            if let s = section { body[s, default: []].append(line) }
        }
        if let a = body["asm"] { asm = a.joined(separator: "\n") }
        if let r = body["raw"] {
            var words: [BPFInsn] = []
            for l in r {
                let t = l.trimmingLeadingSpace().trimmingTrailingSpace()
                if t.isEmpty { continue }
                let parts = t.split(separator: " ")
                if parts.count == 1 {
                    // One u64 word per line ("0x5566778800000018").
                    let h = t.hasPrefix("0x") ? t.dropFirst(2) : t
                    guard let w = UInt64(h, radix: 16) else { throw BytecodeError("raw line '\(t.prefix(32))' is not a hex word") }
                    words.append(BPFInsn(word: w))
                } else {
                    // Eight hex bytes per line.
                    let bytes = try BPFBytecode.parseHex(String(t))
                    words += try BPFBytecode.decode(bytes)
                }
            }
            raw = words
        }
        if let m = body["mem"] { memory = try BPFBytecode.parseHex(m.joined(separator: " ")) }
        if let r = body["result"] {
            let t = r.map { $0.trimmingLeadingSpace().trimmingTrailingSpace() }.first { !$0.isEmpty } ?? ""
            let h = t.hasPrefix("0x") ? t.dropFirst(2) : t[...]
            guard let v = UInt64(h, radix: 16) else { throw BytecodeError("result '\(t.prefix(32))' is not hex") }
            result = v
        }
        if let e = body["error"] { error = e.joined(separator: "\n").trimmingCharacters() }
    }

    static let sections: Set<String> = ["asm", "raw", "mem", "result", "error", "c", "no register offset"]

    /// The program: the raw words when given, else the assembled text.
    public func program() throws -> [BPFInsn] {
        if let raw { return raw }
        guard let asm else { throw BytecodeError("the file has no program (no '-- asm' or '-- raw' section)") }
        return try Assembler.assemble(asm)
    }
}

extension String {
    func trimmingCharacters() -> String {
        String(Substring(self).trimmingLeadingSpace().trimmingTrailingSpace().drop { $0 == "\n" })
    }
}
