// `bpflab asm`, `bpflab disasm` and `bpflab prog dump xlated`: instructions as text and back.
import ArgumentParser
import BPFInstructions
import BPFKernel
import Foundation

/// Reads a file, or standard input for "-".
func readInput(_ path: String) throws -> String {
    if path == "-" {
        var s = ""
        while let line = readLine(strippingNewline: false) { s += line }
        return s
    }
    do { return try String(contentsOfFile: path, encoding: .utf8) } catch {
        throw ValidationError("cannot read '\(path)': \(error.localizedDescription)")
    }
}

enum BytecodeOutputFormat: String, ExpressibleByArgument, CaseIterable {
    case hex, words, kernel, assembler
}

struct Asm: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Assemble a program written in the bpf_conformance suite's syntax.",
        discussion: """
            Mnemonics: \(Assembler.mnemonics.joined(separator: " ")).
            Labels are 'name:'; comments start with '#'. Besides the suite's syntax: 'call kfunc N',
            'ja_cfg key K, TARGET[, inverse]', 'lddw %rN, map FD', 'lddw %rN, map_value FD, OFF', '.insn WORD'.
            """
    )

    @Argument(help: "The source file, or - for standard input.")
    var file: String

    @Option(help: "What to print: hex (8 bytes per instruction, the conformance plugin's input), words (one u64 per slot), kernel (the verifier log's syntax), assembler (back in this syntax).")
    var format: BytecodeOutputFormat = .hex

    func run() throws {
        let insns: [BPFInsn]
        do { insns = try Assembler.assemble(try readInput(file)) } catch let e as AssemblyError {
            throw ValidationError("\(file): \(e)")
        }
        try StandardOutput.write(render(insns, format))
    }
}

func render(_ insns: [BPFInsn], _ format: BytecodeOutputFormat) -> String {
    switch format {
    case .hex: return insns.map { $0.bytes.map { String(format: "%02x", $0) }.joined(separator: " ") }.joined(separator: "\n") + "\n"
    case .words: return insns.map { String(format: "0x%016llx", $0.word) }.joined(separator: "\n") + "\n"
    case .kernel: return Disassembler.listing(insns)
    case .assembler: return Disassembler.listing(insns, style: .assembler)
    }
}

struct Disasm: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Disassemble instructions given as hex bytes (the conformance plugin's input) into the verifier log's syntax."
    )

    @Argument(help: "A file of hex bytes, or - for standard input.")
    var file: String

    @Option(help: "kernel (the verifier log / bpftool syntax) or assembler (what 'bpflab asm' reads).")
    var format: BytecodeOutputFormat = .kernel

    func run() throws {
        let insns: [BPFInsn]
        do { insns = try BPFBytecode.decode(try BPFBytecode.parseHex(try readInput(file))) } catch let e as BytecodeError {
            throw ValidationError("\(file): \(e)")
        }
        try StandardOutput.write(render(insns, format))
    }
}

extension Prog {
    struct Dump: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Dump a program's instructions, bpftool style (over the demo programs, as 'prog show' lists them).",
            discussion: "Example: bpflab prog dump xlated xdp_count"
        )

        enum What: String, ExpressibleByArgument, CaseIterable { case xlated }

        @Argument(help: "What to dump: xlated (the instructions as the interpreter runs them).")
        var what: What

        @Argument(help: "The program's name or ID.")
        var program: String

        func run() throws {
            try Prog.withDemo(packets: 1) { bpf in
                let infos = Bpftool.progInfos(bpf)
                guard let info = infos.first(where: { String($0.id) == program || $0.name == program }) else {
                    var msg = "no program named or numbered '\(program)'"
                    if let s = suggestion(for: program, in: infos.map(\.name)) { msg += "; did you mean '\(s)'?" }
                    throw ValidationError(msg + " (programs: \(infos.map { "\($0.id) \($0.name)" }.joined(separator: ", ")))")
                }
                let fd = try bpf.progGetFdById(info.id)
                do {
                    try StandardOutput.write(try Bpftool.dumpXlated(bpf, fd: fd))
                } catch let e as BPFError {
                    throw ValidationError("\(e)")
                }
            }
        }
    }
}
