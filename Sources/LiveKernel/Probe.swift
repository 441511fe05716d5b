// Probe.swift — what this kernel allows of what the lab uses: each program type, map type
// and attach kind loaded once and reported as available or refused (with the errno).
//
// Mirrors: bpftool's `feature probe` (tools/bpf/bpftool/feature.c: load a minimal program
// of each type, create a minimal map of each type) for the lab's subset.
import BPFInstructions
import BPFKernel

public struct ProbeResult: Sendable, Equatable {
    public let what: String
    /// nil: available; else the errno it was refused with.
    public let refusedWith: Int32?
    /// A fact rather than a feature (the memory limit): shown as it is.
    public var detail: String?
    public init(what: String, refusedWith: Int32?, detail: String? = nil) {
        self.what = what
        self.refusedWith = refusedWith
        self.detail = detail
    }
    public var line: String {
        if let detail { return "\(what): \(detail)" }
        guard let e = refusedWith else { return "\(what): available" }
        return "\(what): refused by this kernel (\(Errno(rawValue: e)?.name ?? "errno \(e)"))"
    }
}

public enum LiveProbe {
    public static func run() -> [ProbeResult] {
        let live = LiveBPF()
        defer { live.closeAll() }
        var out: [ProbeResult] = []
        func attempt(_ what: String, _ body: () throws -> Void) {
            do {
                try body()
                out.append(ProbeResult(what: what, refusedWith: nil))
            } catch let e as LiveError {
                out.append(ProbeResult(what: what, refusedWith: e.errno))
            } catch {
                out.append(ProbeResult(what: what, refusedWith: 22))
            }
        }
        let ret0: [BPFInsn] = [.mov64(0, imm: 0), .exit]
        var xdp: Int32 = -1
        attempt("program type xdp") { xdp = try live.progLoad(type: ProgType.xdp.rawValue, insns: ret0, name: "probe_xdp") }
        attempt("program type socket_filter") { _ = try live.progLoad(type: ProgType.socketFilter.rawValue, insns: ret0, name: "probe_sk") }
        attempt("program type sched_cls") { _ = try live.progLoad(type: ProgType.schedCls.rawValue, insns: ret0, name: "probe_tc") }
        attempt("program type tracing (fentry)") {
            _ = try live.progLoad(type: ProgType.tracing.rawValue, insns: ret0, name: "probe_fentry",
                                  expectedAttachType: AttachType.traceFentry.rawValue, attachProgFD: xdp, attachBTFID: 1)
        }
        attempt("program type ext (freplace)") {
            _ = try live.progLoad(type: ProgType.ext.rawValue, insns: ret0, name: "probe_ext", attachProgFD: xdp, attachBTFID: 1)
        }
        for (name, type) in [("array", 2), ("hash", 1), ("prog_array", 3), ("percpu_array", 6)] as [(String, UInt32)] {
            attempt("map type \(name)") { _ = try live.mapCreate(type: type, keySize: 4, valueSize: 4, maxEntries: 4, name: "probe_\(name)") }
        }
        attempt("BPF_PROG_TEST_RUN (xdp)") { _ = try live.testRun(xdp, data: [UInt8](repeating: 0, count: 64)) }
        attempt("bpf_tail_call") {
            let jmp = try live.mapCreate(type: 3, keySize: 4, valueSize: 4, maxEntries: 1, name: "probe_jmp")
            _ = try live.progLoad(type: ProgType.xdp.rawValue,
                                  insns: BPFInsn.ldImm64(2, UInt64(UInt32(bitPattern: jmp)), src: Pseudo.mapFD)
                                      + [.mov64(3, imm: 0), .call(helper: 12), .mov64(0, imm: 2), .exit],
                                  name: "probe_tail")
        }
        attempt("JIT (programs are JIT-ed)") {
            guard xdp >= 0, try live.progInfo(xdp).jited else { throw LiveError(errno: 95, message: "not JIT-ed") }
        }
        let limit = LiveBPF.memlockLimit
        out.append(ProbeResult(what: "RLIMIT_MEMLOCK", refusedWith: nil,
                               detail: (limit == .max ? "unlimited" : "\(limit >> 20) MiB") + " (this kernel charges BPF memory to the memory cgroup; the backend keeps what it holds below the limit)"))
        return out
    }
}
