// KernelFunction.swift — kernel functions that trampolines attach to.
//
// Mirrors: net/bpf/test_run.c (bpf_fentry_test1, bpf_modify_return_test,
// bpf_prog_test_run_tracing), kernel/bpf/verifier.c (bpf_check_attach_target for a vmlinux
// target: the function found by name; check_attach_modify_return: fmod_ret only on
// functions marked ALLOW_ERROR_INJECTION; "can't modify return codes of BPF programs").
//
// The mechanism, its rules and why: BPFKernel.docc/kernel-functions.md (the DocC article "Kernel functions").
import CBPFShims
import BPFPrograms

public final class KernelFunction: @unchecked Sendable {
    public let name: String
    /// ALLOW_ERROR_INJECTION: fmod_ret programs may replace its return value.
    public let errorInjectable: Bool
    let text: UnsafeMutablePointer<cbpf_text>
    private let block: UnsafeMutableRawPointer

    init(name: String, body: cbpf_func_t, errorInjectable: Bool) {
        self.name = name
        self.errorInjectable = errorInjectable
        block = allocRecord(bytes: textBlockBytes(16))
        let data = initTextHeader(block, orig: body)
        text = allocRecord(bytes: MemoryLayout<cbpf_text>.stride).bindMemory(to: cbpf_text.self, capacity: 1)
        text.initialize(to: cbpf_text(func: body, data: UnsafeRawPointer(data)))
    }

    deinit {
        block.deallocate()
        UnsafeMutableRawPointer(text).deallocate()
    }

    /// The function's entry record (what callers and trampolines go through).
    public var entry: UnsafePointer<cbpf_text> { UnsafePointer(text) }

    /// Calls the function through its entry word (a trampoline may be poked in), with
    /// `args` as its arguments.
    func call(_ args: (UInt64, UInt64)) -> UInt32 {
        var md = cbpf_xdp_md()
        md.kargs = args
        return withUnsafeMutablePointer(to: &md) { cbpf_text_call(text, $0) }
    }

    /// The kernel functions of one lab kernel, by name.
    static func standard() -> [String: KernelFunction] {
        let fns = [
            KernelFunction(name: "bpf_fentry_test1", body: bpfp_kfn_fentry_test1, errorInjectable: false),
            KernelFunction(name: "bpf_modify_return_test", body: bpfp_kfn_modify_return_test, errorInjectable: true),
            KernelFunction(name: "do_xdp_generic", body: bpfp_kfn_do_xdp_generic, errorInjectable: false),
        ]
        return Dictionary(uniqueKeysWithValues: fns.map { ($0.name, $0) })
    }
}

/// BPF_PROG_RUN for C callers (the generic-XDP receive path calls it through kargs[1]).
let genericXDPProgRun: bpfp_prog_run_fn = { p, ctx in bpfProgRun(p!, ctx!) }
/// Its address, as do_xdp_generic finds it in kargs[1].
public let genericXDPProgRunWord = UInt64(UInt(bitPattern: unsafeBitCast(genericXDPProgRun, to: UnsafeRawPointer.self)))

extension NetDevice {
    /// One packet through generic XDP (skb mode): the receive path calls
    /// do_xdp_generic, a kernel function trampolines can attach to, which runs the
    /// program attached in skb mode. nil when no program is attached in skb mode.
    /// Per packet: one rcu_dereference and a call through the function's entry word — no
    /// lock, no lookup (the slot is published by install, the entry resolved at init).
    @inlinable @inline(__always)
    public func receiveGeneric(_ ctx: UnsafeMutablePointer<cbpf_xdp_md>) -> UInt32? {
        guard let p = cbpf_rcu_dereference(genericSlot) else { return nil }
        ctx.pointee.kargs = (UInt64(UInt(bitPattern: p)), genericXDPProgRunWord)
        return cbpf_text_call(genericEntry, ctx)
    }
}

extension Kernel {
    /// The kernel function called `name`, if the lab has it.
    public func kernelFunction(_ name: String) -> KernelFunction? { kernelFunctions[name] }
    /// The names of the kernel functions tracing programs can attach to.
    public var kernelFunctionNames: [String] { kernelFunctions.keys.sorted() }
}

extension BPF {
    /// bpf_prog_test_run_tracing: calls the kernel function a tracing program of this
    /// attach type is meant for. fentry/fexit: bpf_fentry_test1(1) must give 2 (else
    /// EFAULT). fmod_ret: b = 2; ret = bpf_modify_return_test(1, &b), which adds 1 to b —
    /// b stays 2 only if an fmod_ret program replaced the call; side_effect = (b != 2);
    /// retval = side_effect << 16 | ret (the kernel's own formula).
    func tracingTestRun(_ prog: BPFProg) throws -> TestRunResult {
        let t0 = cbpf_ktime_get_ns()
        var retval: UInt32 = 0
        switch AttachType(rawValue: prog.expectedAttachType) {
        case .traceFentry, .traceFexit:
            if kernel.kernelFunctions["bpf_fentry_test1"]!.call((1, 0)) != 2 {
                throw fail(.EFAULT, "bpf_fentry_test1(1) did not return 2")
            }
        case .modifyReturn:
            var b: Int32 = 2
            let ret = withUnsafeMutablePointer(to: &b) { p in
                kernel.kernelFunctions["bpf_modify_return_test"]!.call((1, UInt64(UInt(bitPattern: p))))
            }
            let sideEffect: UInt32 = b != 2 ? 1 : 0
            retval = sideEffect << 16 | ret
        default:
            throw fail(.ENOTSUPP, "tracing programs of attach type \(prog.expectedAttachType) have no test_run")
        }
        return TestRunResult(retval: retval, durationNs: UInt32(clamping: cbpf_ktime_get_ns() &- t0), dataOut: [])
    }
}
