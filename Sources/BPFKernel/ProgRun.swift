// ProgRun.swift — BPF_PROG_RUN: how the kernel runs one program on one packet.
//
// Mirrors: include/linux/filter.h (BPF_PROG_RUN / bpf_prog_run / __bpf_prog_run with its
// stats branch; the RFC v3's do_chain_calls), kernel/bpf/trampoline.c
// (__bpf_prog_enter/__bpf_prog_exit's recursion guard and `misses`).
//
// The mechanism, its rules and why: BPFKernel.docc/bpf-prog-run.md (the DocC article "BPF_PROG_RUN").
import CBPFShims
import BPFPrograms

public typealias ProgPtr = UnsafePointer<cbpf_prog>
public typealias XDPContext = UnsafeMutablePointer<cbpf_xdp_md>

@usableFromInline let chainCallsFlag = UInt32(CBPF_PROG_F_CHAIN_CALLS)
@usableFromInline let numChainSlots = UInt32(CBPF_NUM_CHAIN_SLOTS)
@usableFromInline let maxChainCalls = Int32(CBPF_MAX_CHAIN_CALLS)

/// Calls the program's body: `prog->bpf_func(ctx, prog->insnsi)`.
@inlinable @inline(__always)
public func bpfCallBody(_ prog: ProgPtr, _ ctx: XDPContext) -> UInt32 {
    cbpf_prog_call(prog, ctx)  // through the entry word: a trampoline may have been poked in
}

/// BPF_PROG_RUN. Returns the program's (or the chain's last program's) return value.
@inlinable @inline(__always)
public func bpfProgRun(_ prog: ProgPtr, _ ctx: XDPContext) -> UInt32 {
    cbpf_xdp_run_reset(ctx)
    if _slowPath(cbpf_bpf_stats_enabled()) {
        return bpfProgRunWithStats(prog, ctx)
    }
    if prog.pointee.flags & chainCallsFlag != 0 {
        return doChainCalls(prog, ctx)
    }
    return bpfCallBody(prog, ctx)
}

/// BPF_PROG_RUN as it was *before* the RFC (the seed table's "Before patch" row): the
/// stats branch and the direct call, without the `chain_calls` test. Kept so the cost of
/// that test — one load and one branch on every run of every program, Alexei's objection —
/// can be measured against the patched path.
@inlinable @inline(__always)
public func bpfProgRunBeforePatch(_ prog: ProgPtr, _ ctx: XDPContext) -> UInt32 {
    cbpf_xdp_run_reset(ctx)
    if _slowPath(cbpf_bpf_stats_enabled()) {
        return bpfProgRunWithStats(prog, ctx)
    }
    return bpfCallBody(prog, ctx)
}

/// The RFC v3's do_chain_calls: run; pick slot[ret + 1] (the wildcard slot 0 when
/// ret + 1 ≥ 8 or that slot is empty); stop when there is no next program or 32 programs
/// have run; return the last return value. The slot index is masked against speculation.
/// Each chained program starts with a fresh tail-call counter, as each JIT-ed program's
/// prologue would give it.
@inlinable @inline(__always)
public func doChainCalls(_ first: ProgPtr, _ ctx: XDPContext) -> UInt32 {
    var prog = first
    var budget = maxChainCalls
    var ret: UInt32
    repeat {
        cbpf_xdp_run_reset(ctx)
        ret = bpfCallBody(prog, ctx)
        guard let next = chainNext(prog, ret) else { break }
        prog = UnsafePointer(next)
        budget -= 1
    } while budget > 0
    return ret
}

/// The chain slot a return value selects, with the wildcard fallback.
@inlinable @inline(__always)
public func chainNext(_ prog: ProgPtr, _ ret: UInt32) -> UnsafeMutablePointer<cbpf_prog>? {
    let idx = ret &+ 1
    if idx >= numChainSlots {
        return cbpf_prog_chain_slot(prog, 0)
    }
    let masked = cbpf_array_index_nospec(UInt(idx), UInt(numChainSlots))
    return cbpf_prog_chain_slot(prog, masked) ?? cbpf_prog_chain_slot(prog, 0)
}

/// BPF_PROG_RUN's stats branch: every program run — including each one in a chain —
/// accounts its own count and time on this CPU.
@inline(never)
public func bpfProgRunWithStats(_ first: ProgPtr, _ ctx: XDPContext) -> UInt32 {
    if first.pointee.flags & chainCallsFlag == 0 {
        let start = cbpf_ktime_get_ns()
        let ret = bpfCallBody(first, ctx)
        cbpf_prog_stats_account(first, cbpf_ktime_get_ns() &- start)
        return ret
    }
    var prog = first
    var budget = maxChainCalls
    var ret: UInt32
    repeat {
        cbpf_xdp_run_reset(ctx)
        let start = cbpf_ktime_get_ns()
        ret = bpfCallBody(prog, ctx)
        cbpf_prog_stats_account(prog, cbpf_ktime_get_ns() &- start)
        guard let next = chainNext(prog, ret) else { break }
        prog = UnsafePointer(next)
        budget -= 1
    } while budget > 0
    return ret
}

/// Checked BPF_PROG_RUN: verifies every program record it reaches is live (not poisoned)
/// before running it. A dead one is counted in `useAfterFree` and ends the run with
/// XDP_ABORTED. For tests and the harness's checked mode; never for measurements.
@inline(never)
public func bpfProgRunChecked(_ first: ProgPtr, _ ctx: XDPContext,
                              useAfterFree: UnsafeMutablePointer<UInt64>) -> UInt32 {
    cbpf_xdp_run_reset(ctx)
    guard cbpf_prog_is_live(first) else {
        useAfterFree.pointee &+= 1
        return UInt32(CBPF_XDP_ABORTED)
    }
    if first.pointee.flags & chainCallsFlag == 0 {
        return bpfCallBody(first, ctx)
    }
    var prog = first
    var budget = maxChainCalls
    var ret: UInt32
    repeat {
        cbpf_xdp_run_reset(ctx)
        ret = bpfCallBody(prog, ctx)
        guard let next = chainNext(prog, ret) else { break }
        guard cbpf_prog_is_live(next) else {
            useAfterFree.pointee &+= 1
            return UInt32(CBPF_XDP_ABORTED)
        }
        prog = UnsafePointer(next)
        budget -= 1
    } while budget > 0
    return ret
}

/// BPF_PROG_RUN through the kernel's bpf_dispatcher (bpf_prog_run_xdp with
/// BPF_DISPATCHER_FUNC(xdp)): a known program is found by binary search and called
/// "directly"; any other program falls back to the indirect call and still runs.
@inlinable @inline(__always)
public func bpfProgRunDispatched(_ d: UnsafePointer<cbpf_dispatcher>, _ prog: ProgPtr, _ ctx: XDPContext) -> UInt32 {
    cbpf_xdp_run_reset(ctx)
    if _slowPath(cbpf_bpf_stats_enabled()) {
        return bpfProgRunWithStats(prog, ctx)
    }
    return cbpf_dispatcher_call(d, prog, ctx)
}

/// BPF_PROG_RUN through the bpf_dispatcher's generated image (the machine engine): a
/// compare tree ending in direct jumps, the indirect (retpolined) jump on a miss.
@inlinable @inline(__always)
public func bpfProgRunMachineDispatched(_ d: UnsafePointer<cbpf_dispatcher>, _ prog: ProgPtr, _ ctx: XDPContext) -> UInt32 {
    cbpf_xdp_run_reset(ctx)
    if _slowPath(cbpf_bpf_stats_enabled()) {
        return bpfProgRunWithStats(prog, ctx)
    }
    return cbpf_dispatcher_image_call(d, prog, ctx)
}

/// BPF_PROG_RUN_ARRAY over a run array's current items (every program runs).
@inlinable @inline(__always)
public func bpfProgRunArray(_ slot: UnsafePointer<UnsafeMutableRawPointer?>, _ ctx: XDPContext) -> UInt32 {
    let a = cbpf_rcu_dereference(UnsafeRawPointer(slot).assumingMemoryBound(to: UnsafeMutableRawPointer?.self))
    return bpfp_run_array(a.map { UnsafePointer($0.assumingMemoryBound(to: cbpf_run_array.self)) }, ctx)
}

/// A run through the tracing entry (__bpf_prog_enter / __bpf_prog_exit): if this CPU is
/// already running `prog`, the run is skipped, counted in `misses`, and returns 0.
/// The tail-call counter in `ctx` is left as it is (it survives a trampoline).
@inline(never)
public func bpfProgRunTracing(_ prog: ProgPtr, _ ctx: XDPContext) -> UInt32 {
    defer { cbpf_prog_exit_guard(prog) }
    guard cbpf_prog_enter_guard(prog) else { return 0 }
    if _slowPath(cbpf_bpf_stats_enabled()) {
        let start = cbpf_ktime_get_ns()
        let ret = bpfCallBody(prog, ctx)
        cbpf_prog_stats_account(prog, cbpf_ktime_get_ns() &- start)
        return ret
    }
    return bpfCallBody(prog, ctx)
}
