// FDTable.swift — a process's file descriptors, as far as BPF objects go.
//
// Mirrors: fs/file.c (alloc_fd: the lowest free descriptor; close_fd) and the anon-inode
// files kernel/bpf/syscall.c creates (bpf_prog_new_fd, bpf_map_new_fd, bpf_link_new_fd),
// whose release hooks (bpf_prog_release, bpf_map_release, bpf_link_release) drop the
// reference the fd held; bpf_prog_get / __bpf_map_get (fdget + type check + inc).
//
// The mechanism, its rules and why: BPFKernel.docc/file-descriptors.md (the DocC article "File descriptors").

/// What an fd refers to.
public enum FDObject: @unchecked Sendable {
    case prog(BPFProg)
    case map(BPFMap)
    /// A BPF_ENABLE_STATS fd: stats stay on while it is open.
    case stats(StatsEnable)
    case link(BPFLink)

    public var kindName: String {
        switch self {
        case .prog: return "program"
        case .map: return "map"
        case .stats: return "stats"
        case .link: return "link"
        }
    }

    /// Drops the reference the fd held.
    func release() {
        switch self {
        case let .prog(p): p.put()             // bpf_prog_release: bpf_prog_new_fd's reference
        case let .map(m): m.putWithUref()      // bpf_map_release: reference + user reference
        case let .stats(s): s.release()
        case let .link(l): l.put()             // bpf_link_release: the fd's reference
        }
    }
}

public final class FDTable: @unchecked Sendable {
    private let lock = KLock()
    private var table: [Int32: FDObject] = [:]
    private var reserved: Set<Int32> = []
    /// RLIMIT_NOFILE's usual soft limit.
    public let limit: Int32
    /// The first descriptor handed out (0–2 are the process's stdio).
    public static let first: Int32 = 3

    public init(limit: Int32 = 1024) { self.limit = limit }

    /// get_unused_fd_flags: reserves the lowest free descriptor before the object exists,
    /// so that running out of descriptors is found before anything is created. Complete
    /// with `fill` or give back with `unreserve`.
    func reserve() throws -> Int32 {
        try lock.withLock {
            var fd = FDTable.first
            while table[fd] != nil || reserved.contains(fd) { fd += 1 }
            if fd >= limit {
                throw fail(.EMFILE, "the process has \(limit - FDTable.first) descriptors open (RLIMIT_NOFILE)")
            }
            reserved.insert(fd)
            return fd
        }
    }

    /// fd_install on a reserved descriptor: it now holds the object's reference.
    func fill(_ fd: Int32, _ object: FDObject) {
        lock.withLock {
            precondition(reserved.remove(fd) != nil, "fd \(fd) was not reserved")
            table[fd] = object
        }
    }

    /// put_unused_fd: gives a reserved descriptor back.
    func unreserve(_ fd: Int32) {
        lock.withLock { _ = reserved.remove(fd) }
    }

    /// Reserves a descriptor, runs `make` (which returns an object carrying the fd's
    /// reference) and installs it; on any error nothing is left behind.
    func installNew(_ make: () throws -> FDObject) throws -> Int32 {
        let fd = try reserve()
        do {
            fill(fd, try make())
            return fd
        } catch {
            unreserve(fd)
            throw error
        }
    }

    /// close(fd): removes the descriptor and drops its reference.
    public func close(_ fd: Int32) throws {
        let obj: FDObject = try lock.withLock {
            guard let o = table.removeValue(forKey: fd) else {
                throw fail(.EBADF, "fd \(fd) is not open")
            }
            return o
        }
        obj.release()
    }

    /// Closes every descriptor (process exit).
    public func closeAll() {
        let all: [FDObject] = lock.withLock {
            let v = table.sorted { $0.key < $1.key }.map(\.value)
            table.removeAll()
            return v
        }
        for o in all { o.release() }
    }

    /// fdget of a descriptor the table does not hold: 0, 1 and 2 are the process's standard
    /// input, output and error — open files, but not BPF objects (EINVAL, as bpf_prog_get
    /// and __bpf_map_get answer for a file of another kind; checked against the live
    /// kernel); anything else is not open (EBADF).
    func notHeld(_ fd: Int32) -> BPFError {
        fd >= 0 && fd <= 2 ? fail(.EINVAL, "fd \(fd) is standard \(["input", "output", "error"][Int(fd)]), not a BPF object")
                           : fail(.EBADF, "fd \(fd) is not open")
    }

    /// fdget + bpf_any_get: what `fd` refers to, with a new reference of the kind the fd
    /// itself holds (a program or link: +1; a map: +1 and a user reference), taken under
    /// the table's lock so a concurrent `close` cannot free the object in between.
    /// Balance with `release()`. EINVAL for a stats fd, which holds no object.
    public func getObject(_ fd: Int32) throws -> FDObject {
        try lock.withLock {
            guard let o = table[fd] else { throw notHeld(fd) }
            switch o {
            case let .prog(p): p.inc()          // the fd still holds its reference: cannot be 0
            case let .map(m): m.incWithUref()
            case let .link(l): l.inc()
            case .stats: throw fail(.EINVAL, "fd \(fd) is a stats fd; it holds no object")
            }
            return o
        }
    }

    /// The kind of object behind `fd` (for messages; no reference taken).
    public func kindName(_ fd: Int32) -> String? {
        lock.withLock { table[fd]?.kindName }
    }

    /// bpf_prog_get: the program behind `fd` with a new reference (+1: balance with
    /// `put()`). EBADF for a closed fd, EINVAL for an fd that is not a program.
    public func getProg(_ fd: Int32) throws -> BPFProg {
        try lock.withLock {
            guard let o = table[fd] else { throw notHeld(fd) }
            guard case let .prog(p) = o else {
                throw fail(.EINVAL, "fd \(fd) is a \(o.kindName), not a program")
            }
            p.inc()
            return p
        }
    }

    /// bpf_map_get: the map behind `fd` with a new reference (+1: balance with `put()`).
    public func getMap(_ fd: Int32) throws -> BPFMap {
        try lock.withLock {
            guard let o = table[fd] else { throw notHeld(fd) }
            guard case let .map(m) = o else {
                throw fail(.EINVAL, "fd \(fd) is a \(o.kindName), not a map")
            }
            m.inc()
            return m
        }
    }

    /// bpf_link_get_from_fd: the link behind `fd` (+1: balance with `put()`).
    public func getLink(_ fd: Int32) throws -> BPFLink {
        try lock.withLock {
            guard let o = table[fd] else { throw notHeld(fd) }
            guard case let .link(l) = o else {
                throw fail(.EINVAL, "fd \(fd) is a \(o.kindName), not a link")
            }
            l.inc()
            return l
        }
    }

    /// Every open descriptor and what it holds (for the auditor; no reference taken).
    var entries: [(fd: Int32, object: FDObject)] { lock.withLock { table.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } } }

    /// Open descriptors, ascending.
    public var openFDs: [Int32] { lock.withLock { table.keys.sorted() } }
    public var count: Int { lock.withLock { table.count } }
}
