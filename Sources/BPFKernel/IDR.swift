// IDR.swift — the ID registry.
//
// Mirrors: lib/idr.c as kernel/bpf/syscall.c uses it (prog_idr, map_idr, link_idr):
// idr_alloc_cyclic(&prog_idr, prog, 1, INT_MAX), idr_remove, idr_find, idr_get_next,
// each under its spinlock (prog_idr_lock).
//
// The mechanism, its rules and why: BPFKernel.docc/ids.md (the DocC article "IDs").

/// An ID registry for one kind of object. Stores unretained references: the registry does
/// not keep objects alive; their kernel refcount does.
public final class IDR<T: AnyObject>: @unchecked Sendable {
    private let lock = KLock()
    private var entries: [UInt32: Unmanaged<T>] = [:]
    private var cursor: UInt32
    public let range: ClosedRange<UInt32>

    /// `range` defaults to the kernel's 1...INT_MAX; tests use small ranges to see the wrap.
    public init(range: ClosedRange<UInt32> = 1...UInt32(Int32.max)) {
        precondition(range.lowerBound >= 1, "ID 0 is never allocated")
        self.range = range
        self.cursor = range.lowerBound
    }

    /// idr_alloc_cyclic: the first free ID at or after the cursor, wrapping once.
    /// Throws ENOSPC when every ID in the range is live.
    public func alloc(_ object: T) throws -> UInt32 {
        try lock.withLock {
            if entries.count >= range.count {
                throw fail(.ENOSPC, "every ID in \(range) is in use")
            }
            var id = cursor
            while entries[id] != nil {
                id = id == range.upperBound ? range.lowerBound : id + 1
            }
            entries[id] = Unmanaged.passUnretained(object)
            cursor = id == range.upperBound ? range.lowerBound : id + 1
            return id
        }
    }

    /// idr_remove: unpublish. Returns false if the ID was not published.
    @discardableResult
    public func remove(_ id: UInt32) -> Bool {
        lock.withLock { entries.removeValue(forKey: id) != nil }
    }

    /// idr_find under the registry lock: `body` sees the object (or nil) while it cannot
    /// be unpublished; it must take its reference (incNotZero) before returning.
    public func lookup<R>(_ id: UInt32, _ body: (T?) throws -> R) rethrows -> R {
        try lock.withLock { try body(entries[id]?.takeUnretainedValue()) }
    }

    /// idr_get_next: the smallest published ID greater than `id`, if any.
    public func nextID(after id: UInt32) -> UInt32? {
        lock.withLock {
            var best: UInt32?
            for k in entries.keys where k > id {
                if best == nil || k < best! { best = k }
            }
            return best
        }
    }

    /// Published IDs, ascending.
    public var ids: [UInt32] { lock.withLock { entries.keys.sorted() } }
    public var count: Int { lock.withLock { entries.count } }
}
