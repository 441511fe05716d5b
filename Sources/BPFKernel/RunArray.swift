// RunArray.swift — bpf_prog_array: every attached program runs (tracing, cgroup style).
//
// Mirrors: kernel/bpf/core.c (bpf_prog_array_alloc, bpf_prog_array_copy: a new array for
// every change, the old one freed after a grace period; BPF_TRACE_MAX_PROGS),
// include/linux/bpf.h (BPF_PROG_RUN_ARRAY: run each item with its cookie in the run
// context, bpf_prog_run_array).
//
// The mechanism, its rules and why: BPFKernel.docc/run-arrays.md (the DocC article "Run arrays").
import CBPFShims

/// BPF_TRACE_MAX_PROGS.
public let runArrayMaxProgs = 64

public final class RunArray: @unchecked Sendable {
    public let kernel: Kernel
    /// The published array (rcu); what the run loop reads.
    public let slot: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let lock = KLock()
    private var items: [(prog: BPFProg, cookie: UInt64)] = []
    private var current: (UnsafeMutableRawPointer, Int)?

    /// Unique per kernel (for display).
    public let serial: UInt64

    public init(kernel: Kernel) {
        self.kernel = kernel
        serial = kernel.serials.add(1, ordering: .relaxed).newValue
        slot = .allocate(capacity: 1)
        slot.initialize(to: nil)
        kernel.registerHolder(self)
    }


    deinit {
        precondition(items.isEmpty, "a run array must be emptied (detachAll) before it goes")
        slot.deallocate()
    }

    /// Adds `prog` at the end, with `cookie`. Takes a reference. EEXIST if it is already
    /// in the array, E2BIG past 64 programs.
    public func attach(_ prog: BPFProg, cookie: UInt64 = 0) throws {
        try lock.withLock {
            if items.contains(where: { $0.prog === prog }) { throw fail(.EEXIST, "'\(prog.name)' is already in the run array") }
            if items.count >= runArrayMaxProgs { throw fail(.E2BIG, "the run array already holds \(runArrayMaxProgs) programs") }
            prog.inc()  // the item's reference
            items.append((prog, cookie))
            publish()
        }
    }

    /// Removes `prog`. ENOENT if it is not in the array.
    public func detach(_ prog: BPFProg) throws {
        try lock.withLock {
            guard let i = items.firstIndex(where: { $0.prog === prog }) else {
                throw fail(.ENOENT, "'\(prog.name)' is not in the run array")
            }
            items.remove(at: i)
            publish()
        }
        prog.put()  // the item's reference, after the exchange
    }

    /// Empties the array.
    public func detachAll() {
        let old: [BPFProg] = lock.withLock {
            let o = items.map(\.prog)
            items.removeAll()
            publish()
            return o
        }
        for p in old { p.put() }
    }

    public var programs: [BPFProg] { lock.withLock { items.map(\.prog) } }

    /// bpf_prog_array_copy + rcu_assign_pointer; the old array freed after a grace period.
    private func publish() {
        var new: (UnsafeMutableRawPointer, Int)?
        if !items.isEmpty {
            let bytes = (MemoryLayout<cbpf_run_array>.size + MemoryLayout<cbpf_tramp_item>.stride * items.count + 63) & ~63
            let p = allocRecord(bytes: bytes)
            let a = p.bindMemory(to: cbpf_run_array.self, capacity: 1)
            a.pointee.count = UInt32(items.count)
            let its = (p + MemoryLayout<cbpf_run_array>.size).bindMemory(to: cbpf_tramp_item.self, capacity: items.count)
            for (i, it) in items.enumerated() { its[i] = cbpf_tramp_item(prog: UnsafePointer(it.prog.raw), cookie: it.cookie) }
            new = (p, bytes)
        }
        cbpf_rcu_assign_pointer(slot, new?.0)
        if let old = current {
            let k = kernel
            kernel.rcu.callRCU { k.freeRecord(old.0, bytes: old.1) }
        }
        current = new
    }
}
