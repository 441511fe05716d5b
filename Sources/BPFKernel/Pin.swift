// Pin.swift — pinning objects in a bpffs-like namespace.
//
// Mirrors: kernel/bpf/inode.c (bpf_obj_pin_user, bpf_obj_get_user, bpf_mkdir, bpf_lookup's
// refusal of names with a dot, bpf_fill_super, bpf_inode_type) and the unlink/rmdir of
// bpffs entries (bpf_free_inode → bpf_any_put; simple_rmdir's ENOTEMPTY).
//
// The mechanism, its rules and why: BPFKernel.docc/bpffs-pins.md (the DocC article "bpffs pins").

/// The pins and directories of one kernel (its bpffs mount at /sys/fs/bpf).
final class PinTable: @unchecked Sendable {
    let lock = KLock()
    var pins: [String: FDObject] = [:]
    /// Directories below the mount point (the mount point itself always exists).
    var dirs: Set<String> = []
}

public let bpffsRoot = "/sys/fs/bpf/"
let bpffsMount = "/sys/fs/bpf"

/// A checked bpffs path: its normalised form, the directories a walk passes through, and
/// whether it ended in '/'.
struct BPFFSPath {
    let path: String
    let parent: String
    /// Every directory the walk passes through below the mount point, shallowest first.
    let ancestors: [String]
    /// A trailing '/': the last component must be a directory.
    let trailingSlash: Bool

    /// Parses `raw`: EPERM outside bpffs or for a dotted name, ENOENT for an empty one.
    /// `lookup`: the path is looked up, not created (BPF_OBJ_GET, unlink) — outside bpffs the
    /// lab has no files, so that is ENOENT, as the live kernel answers for a path that does
    /// not exist (checked against it).
    init(_ raw: String, lookup: Bool = false) throws {
        guard raw.hasPrefix(bpffsRoot) else {
            if lookup { throw fail(.ENOENT, "nothing at '\(raw)': outside bpffs (\(bpffsMount)) the lab has no files") }
            throw fail(.EPERM, "'\(raw)' is not on a bpf filesystem (bpffs is mounted at \(bpffsMount))")
        }
        var rest = raw.dropFirst(bpffsRoot.count)
        trailingSlash = rest.hasSuffix("/")
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
        guard !rest.isEmpty, !parts.contains(where: \.isEmpty) else {
            throw fail(.ENOENT, "'\(raw)' names no entry")
        }
        if let dotted = parts.first(where: { $0.contains(".") }) {
            throw fail(.EPERM, "'\(dotted)' in '\(raw)': bpffs names may not contain a dot")
        }
        path = bpffsMount + "/" + parts.joined(separator: "/")
        parent = bpffsMount + (parts.count > 1 ? "/" + parts.dropLast().joined(separator: "/") : "")
        ancestors = (1..<max(1, parts.count)).map { bpffsMount + "/" + parts.prefix($0).joined(separator: "/") }
    }
}

extension PinTable {
    /// The path walk (link_path_walk) up to the last component, under the lock: a pinned
    /// object on the way is ENOTDIR, a missing directory ENOENT — the first one met decides.
    func walkLocked(_ p: BPFFSPath) throws {
        for dir in p.ancestors {
            if pins[dir] != nil { throw fail(.ENOTDIR, "'\(dir)' is a pinned object, not a directory") }
            if !dirs.contains(dir) { throw fail(.ENOENT, "directory '\(dir)' does not exist (make it with mkdir)") }
        }
    }

    /// The rules for creating an entry at `p` (called under the lock): the walk, then an
    /// existing entry is EEXIST; a new object whose path ends in '/' is ENOENT.
    func checkCreateLocked(_ p: BPFFSPath, directory: Bool) throws {
        try walkLocked(p)
        if pins[p.path] != nil || dirs.contains(p.path) { throw fail(.EEXIST, "'\(p.path)' already exists") }
        if p.trailingSlash && !directory { throw fail(.ENOENT, "'\(p.path)/' ends in '/': it names a directory, not an object") }
    }

    /// The last component of a lookup: a pinned object asked for with a trailing '/' is
    /// ENOTDIR (the walk wants a directory there).
    func checkLookupLocked(_ p: BPFFSPath) throws {
        try walkLocked(p)
        if p.trailingSlash && pins[p.path] != nil { throw fail(.ENOTDIR, "'\(p.path)' is a pinned object, not a directory") }
    }
}

extension BPF {
    /// BPF_OBJ_PIN. The path's rules (above); EINVAL for an fd that holds no object.
    public func objPin(_ fd: Int32, path: String) throws {
        let p = try BPFFSPath(path)
        // bpf_obj_pin_user: bpf_prog_get / bpf_map_get_with_uref / bpf_link_get_from_fd.
        // The reference is taken while the fd is looked up: taking it later (under the pin
        // table's lock) raced with close(fd) and could resurrect a freed object.
        let obj = try fds.getObject(fd)  // becomes the pin's reference
        let table = kernel.pinTable
        do {
            try table.lock.withLock {
                try table.checkCreateLocked(p, directory: false)
                table.pins[p.path] = obj
            }
        } catch {
            obj.release()  // getObject: refused, nothing changed
            throw error
        }
    }

    /// BPF_OBJ_GET: a new fd for a pinned object. ENOENT if nothing is there, EACCES for a
    /// directory (bpf_inode_type).
    public func objGet(path: String) throws -> Int32 {
        let p = try BPFFSPath(path, lookup: true)
        let table = kernel.pinTable
        return try fds.installNew {
            try table.lock.withLock {
                try table.checkLookupLocked(p)
                if table.dirs.contains(p.path) { throw fail(.EACCES, "'\(p.path)' is a directory, not a pinned object") }
                guard let obj = table.pins[p.path] else { throw fail(.ENOENT, "nothing is pinned at '\(p.path)'") }
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

    /// unlink(2) of a pin: drops the pin's reference. ENOENT if nothing is pinned there,
    /// EISDIR for a directory.
    public func unpin(path: String) throws {
        let p = try BPFFSPath(path, lookup: true)
        let table = kernel.pinTable
        let obj: FDObject = try table.lock.withLock {
            try table.checkLookupLocked(p)
            if table.dirs.contains(p.path) { throw fail(.EISDIR, "'\(p.path)' is a directory (use rmdir)") }
            guard let o = table.pins.removeValue(forKey: p.path) else { throw fail(.ENOENT, "nothing is pinned at '\(p.path)'") }
            return o
        }
        obj.release()  // objPin's reference
    }

    /// mkdir(2) in bpffs.
    public func bpffsMkdir(_ path: String) throws {
        let p = try BPFFSPath(path)
        let table = kernel.pinTable
        try table.lock.withLock {
            try table.checkCreateLocked(p, directory: true)
            table.dirs.insert(p.path)
        }
    }

    /// rmdir(2) in bpffs: ENOENT if missing, ENOTDIR for a pin, ENOTEMPTY unless empty.
    public func bpffsRmdir(_ path: String) throws {
        let p = try BPFFSPath(path)
        let table = kernel.pinTable
        try table.lock.withLock {
            try table.walkLocked(p)
            if table.pins[p.path] != nil { throw fail(.ENOTDIR, "'\(p.path)' is a pinned object, not a directory") }
            guard table.dirs.contains(p.path) else { throw fail(.ENOENT, "directory '\(p.path)' does not exist") }
            let inside = p.path + "/"
            if table.pins.keys.contains(where: { $0.hasPrefix(inside) }) || table.dirs.contains(where: { $0.hasPrefix(inside) }) {
                throw fail(.ENOTEMPTY, "directory '\(p.path)' is not empty")
            }
            table.dirs.remove(p.path)
        }
    }

    /// Pinned paths, sorted.
    public var pinnedPaths: [String] { kernel.pinTable.lock.withLock { kernel.pinTable.pins.keys.sorted() } }
    /// bpffs directories below the mount point, sorted.
    public var bpffsDirectories: [String] { kernel.pinTable.lock.withLock { kernel.pinTable.dirs.sorted() } }
}

extension Kernel {
    /// Removes every pin and directory (unmounting bpffs), dropping the pins' references.
    public func unpinAll() {
        let all: [FDObject] = pinTable.lock.withLock {
            let v = Array(pinTable.pins.values)
            pinTable.pins.removeAll()
            pinTable.dirs.removeAll()
            return v
        }
        for o in all { o.release() }
    }
}
