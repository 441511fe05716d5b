// Pin.swift — pinning objects in a bpffs-like namespace.
//
// Mirrors: kernel/bpf/inode.c (bpf_obj_pin_user, bpf_obj_get_user, bpf_fill_super's
// bpf_dir_iops check) and the unlink of a pinned file (bpf_free_inode → bpf_any_put).
//
// A pin is a path that holds a reference on its object — for a map, a *user* reference,
// so a pinned prog array is not flushed when its last fd closes. `objGet` opens a new fd
// from a pin; `unpin` (unlink) drops the pin's reference.

/// The pins of one kernel (its bpffs mount at /sys/fs/bpf).
final class PinTable: @unchecked Sendable {
    let lock = KLock()
    var pins: [String: FDObject] = [:]
}

public let bpffsRoot = "/sys/fs/bpf/"

extension BPF {
    /// BPF_OBJ_PIN. EPERM outside bpffs, EEXIST if the path is taken, ENOENT for an empty name.
    public func objPin(_ fd: Int32, path: String) throws {
        guard path.hasPrefix(bpffsRoot) else {
            throw fail(.EPERM, "'\(path)' is not on a bpf filesystem (pins live under \(bpffsRoot))")
        }
        guard path.count > bpffsRoot.count, !path.hasSuffix("/") else {
            throw fail(.ENOENT, "'\(path)' names no file")
        }
        // bpf_obj_pin_user: bpf_prog_get / bpf_map_get_with_uref / bpf_link_get_from_fd.
        // The reference is taken while the fd is looked up: taking it later (under the pin
        // table's lock) raced with close(fd) and could resurrect a freed object.
        let obj = try fds.getObject(fd)  // becomes the pin's reference
        let table = kernel.pinTable
        let taken: Bool = table.lock.withLock {
            if table.pins[path] != nil { return false }
            table.pins[path] = obj
            return true
        }
        if !taken {
            obj.release()  // getObject: refused, nothing changed
            throw fail(.EEXIST, "'\(path)' is already pinned")
        }
    }

    /// BPF_OBJ_GET: a new fd for a pinned object. ENOENT if nothing is pinned there.
    public func objGet(path: String) throws -> Int32 {
        let table = kernel.pinTable
        return try fds.installNew {
            try table.lock.withLock {
                guard let obj = table.pins[path] else { throw fail(.ENOENT, "nothing is pinned at '\(path)'") }
                switch obj {
                case let .prog(p): p.inc()          // the new fd's reference
                case let .map(m): m.incWithUref()
                case let .link(l): l.inc()
                case .stats: break
                }
                return obj
            }
        }
    }

    /// unlink(2) of a pin: drops the pin's reference. ENOENT if nothing is pinned there.
    public func unpin(path: String) throws {
        let table = kernel.pinTable
        let obj: FDObject = try table.lock.withLock {
            guard let o = table.pins.removeValue(forKey: path) else { throw fail(.ENOENT, "nothing is pinned at '\(path)'") }
            return o
        }
        obj.release()  // objPin's reference
    }

    /// Pinned paths, sorted.
    public var pinnedPaths: [String] { kernel.pinTable.lock.withLock { kernel.pinTable.pins.keys.sorted() } }
}

extension Kernel {
    /// Removes every pin (unmounting bpffs), dropping their references.
    public func unpinAll() {
        let all: [FDObject] = pinTable.lock.withLock {
            let v = Array(pinTable.pins.values)
            pinTable.pins.removeAll()
            return v
        }
        for o in all { o.release() }
    }
}
