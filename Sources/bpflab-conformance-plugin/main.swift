// bpflab-conformance-plugin — the lab's interpreter behind the bpf_conformance suite's
// plugin protocol (../shared/bpf_conformance/PROVENANCE.md):
//
//   bpflab-conformance-plugin [MEMORY-HEX] [--engine interpreter]  < PROGRAM-HEX
//
// The program arrives on standard input as hex bytes separated by spaces; the input
// memory, if any, is the first argument (hex bytes too), given to the program in r1 with
// its length in r2. On success r0 is printed in hex on standard output and the exit status
// is 0; a program the lab's checks refuse, a run that faults, or bad input prints a line on
// standard error and exits 1 (2 for a bad command line).
import BPFInstructions
import BPFKernel
#if canImport(Glibc)
import Glibc
#endif

func die(_ message: String, status: Int32) -> Never {
    let bytes = Array((message + "\n").utf8)
    _ = bytes.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count) }
    exit(status)
}

let usage = "usage: bpflab-conformance-plugin [MEMORY-HEX] [--engine interpreter]  (program as hex bytes on standard input)"
var args = Array(CommandLine.arguments.dropFirst())
var memoryHex = ""
if let first = args.first, !first.hasPrefix("--") {
    memoryHex = first
    args.removeFirst()
}
var engine = "interpreter"
var i = 0
while i < args.count {
    switch args[i] {
    case "--engine":
        guard i + 1 < args.count else { die("option --engine needs a value (interpreter)\n\(usage)", status: 2) }
        engine = args[i + 1]
        i += 2
    case "--help", "-h":
        print(usage)
        exit(0)
    default:
        die("unknown option '\(args[i])'\(args[i].hasPrefix("--e") ? "; did you mean '--engine'?" : "")\n\(usage)", status: 2)
    }
}
guard engine == "interpreter" else {
    die("engine '\(engine)' is not available: the lab runs bytecode with the interpreter only (a JIT comes with the machine-code work)", status: 2)
}

var input = ""
while let line = readLine(strippingNewline: false) { input += line }
do {
    let program = try BPFBytecode.decode(try BPFBytecode.parseHex(input))
    let memory = try BPFBytecode.parseHex(memoryHex)
    let p = try RawProgram(program)
    let (r, _) = p.run(memory: memory)
    if let fault = r.fault {
        die("run ended by a fault at instruction \(r.faultPC): \(fault)", status: 1)
    }
    print(String(r.r0, radix: 16))
} catch {
    die("\(error)", status: 1)
}
