// Refcount.swift — the 64-bit reference counts of programs, maps and links.
//
// Mirrors: kernel/bpf/syscall.c bpf_prog_inc / bpf_prog_add / bpf_prog_sub /
// bpf_prog_inc_not_zero / bpf_prog_put (and the bpf_map_* and bpf_link_* twins), built on
// atomic64_t.
//
// The mechanism, its rules and why: BPFKernel.docc/refcounts.md (the DocC article "Refcounts").
import CBPFShims

/// A view of one 64-bit counter in record memory.
public struct Refcount64: @unchecked Sendable {
    @usableFromInline let p: UnsafeMutablePointer<UInt64>

    public init(_ p: UnsafeMutablePointer<UInt64>) { self.p = p }

    /// Current value (a snapshot).
    public var value: UInt64 { cbpf_read_once_u64(p) }

    /// atomic64_add; returns the value before (0 means the caller broke the rules).
    @discardableResult
    public func add(_ n: UInt64) -> UInt64 { cbpf_atomic64_fetch_add(p, n) }

    /// `add` for a caller that must already hold a reference. If the count was zero (the
    /// object is dying: nobody may resurrect it) the add is undone and false returned.
    public func addIfHeld(_ n: UInt64) -> Bool {
        if add(n) == 0 {
            _ = subReturn(n)
            return false
        }
        return true
    }

    /// atomic64_sub_return.
    public func subReturn(_ n: UInt64) -> UInt64 { cbpf_atomic64_sub_return(p, n) }

    /// atomic64_inc_not_zero: false if the count was zero.
    public func incNotZero() -> Bool { cbpf_atomic64_inc_not_zero(p) }

    /// atomic64_dec_and_test guarded against underflow: returns the value before the
    /// decrement (0 = underflow attempted; nothing was changed).
    public func decFromNonZero() -> UInt64 {
        let old = cbpf_atomic64_fetch_add_unless(p, UInt64.max, 0)  // adding ~0 == subtracting 1
        return old
    }
}
