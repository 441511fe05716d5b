// Retpoline.swift — indirect branches as this kernel makes them under
// `spectre_v2: Mitigation: Retpolines`: generated code does not `jmp *%reg`; it jumps to a
// thunk shaped like the kernel's __x86_indirect_thunk_<reg> (arch/x86/lib/retpoline.S):
//
//     call 1f            ; push a return address the RSB predicts
//  2: pause; lfence      ; where speculation of the `ret` goes: a harmless loop
//     jmp 2b
//  1: mov %reg, (%rsp)   ; replace the return address with the real target
//     ret                ; go there, unpredicted
//
// The mode: `auto` follows /sys/devices/system/cpu/vulnerabilities/spectre_v2 (this
// machine: on); generated images read it when they are built.
import Foundation

public enum RetpolineMode: String, Sendable, CaseIterable {
    case off, on, auto

    /// Whether indirect branches in generated code go through the thunks.
    public var enabled: Bool {
        switch self {
        case .off: return false
        case .on: return true
        case .auto: return Retpoline.kernelUsesRetpolines
        }
    }
}

public enum Retpoline {
    /// The mode generated code is built with (bench --retpoline).
    nonisolated(unsafe) public static var mode: RetpolineMode = .auto

    /// Whether this machine's kernel mitigates Spectre v2 with retpolines.
    public static let kernelUsesRetpolines: Bool = {
        let s = (try? String(contentsOfFile: "/sys/devices/system/cpu/vulnerabilities/spectre_v2", encoding: .utf8)) ?? ""
        return s.contains("Retpoline")
    }()

    /// __x86_indirect_thunk_<reg>, generated once per register in the shared region.
    public static func thunk(_ r: Reg64) throws -> UInt64 {
        try thunks.withLock { table in
            if let a = table[r] { return a }
            guard let region = CodeRegion.shared, let b = region.allocate(32) else {
                throw MachineCodeError(errno: 12, message: "no code memory for the retpoline thunk")
            }
            var a = X86Assembler(origin: b.address)
            let body = a.label(), spin = a.label()
            a.call(body)
            a.bind(spin)
            a.pause(); a.lfence()
            a.jmp(spin)
            a.bind(body)
            a.store(.rsp, 0, r)
            a.ret()
            try CodeRegion.install(a, in: b)
            table[r] = b.address
            return b.address
        }
    }
    private static let thunks = TextMutex<[Reg64: UInt64]>([:])

    /// An indirect jump through `r`: `jmp *r`, or a jmp to the thunk.
    public static func jmp(_ r: Reg64, _ a: inout X86Assembler, retpolines: Bool) throws {
        if retpolines { a.jmp(absolute: try thunk(r)) } else { a.jmp(r) }
    }
}
