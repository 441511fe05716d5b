// LiveBPF.swift — the live kernel of this machine through bpf(2): the second backend of
// the lab's facade, for programs as instructions.
//
// Mirrors: kernel/bpf/syscall.c's commands as user space sees them (BPF_PROG_LOAD with its
// verifier log, BPF_MAP_*, BPF_PROG_TEST_RUN with repeat, BPF_*_GET_FD_BY_ID,
// BPF_OBJ_GET_INFO_BY_FD), through raw syscalls (Sources/CLiveBPF) rather than libbpf:
// nothing stands between the lab and the kernel's errno.
//
// It touches only what it made: every fd it opens is closed by closeAll() (and on deinit).
import BPFInstructions
import BPFKernel
import CLiveBPF
import Glibc

/// A call the backend does not make: it would take the kernel memory of what this backend
/// holds beyond RLIMIT_MEMLOCK (see LiveBPF.memlockLimit).
public struct LiveBudgetError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// A refused call on the live kernel: the errno it returned, and what the lab knows of why.
public struct LiveError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The errno as the kernel returned it.
    public let errno: Int32
    public let message: String
    /// The lab's name for it, when the lab has one.
    public var known: Errno? { Errno(rawValue: errno) }
    public init(errno: Int32, message: String) {
        self.errno = errno
        self.message = message
    }
    public var description: String { "\(known?.name ?? "errno \(errno)") (\(errno)): \(message)" }
}

public final class LiveBPF: @unchecked Sendable {
    private var open: Set<Int32> = []
    /// The estimated kernel memory of each object this backend created, by its fd.
    private var charged: [Int32: UInt64] = [:]

    /// RLIMIT_MEMLOCK's soft limit (8 MiB on these machines). Since Linux 5.11 the kernel
    /// charges BPF memory to the memory cgroup and no longer checks this limit, so the
    /// backend keeps it itself: the memory of the maps and programs it holds open, estimated
    /// the way kernels before 5.11 charged it (a map's entries, a program's instructions,
    /// each rounded up to pages), stays below it, and a create that would pass it is not
    /// made (LiveBudgetError). The estimate follows the fd: an object still held by another
    /// (a closed map a program uses) is no longer counted.
    public static let memlockLimit: UInt64 = clb_memlock_limit()

    /// The estimated kernel memory of what this backend holds open now.
    public var chargedBytes: UInt64 { charged.values.reduce(0, +) }

    private static func pages(_ bytes: UInt64) -> UInt64 { (bytes + 4095) / 4096 * 4096 }

    /// Pre-5.11 style cost of a map: its header page, and each entry's key and value
    /// rounded to 8 bytes (a hash element's own header too; a per-CPU value once per CPU).
    static func mapCost(type: UInt32, keySize: UInt32, valueSize: UInt32, maxEntries: UInt32) -> UInt64 {
        let k = (UInt64(keySize) + 7) / 8 * 8, v = (UInt64(valueSize) + 7) / 8 * 8, n = UInt64(maxEntries)
        let perEntry: UInt64
        switch type {
        case 1: perEntry = 48 + k + v                              // BPF_MAP_TYPE_HASH: htab_elem + key + value
        case 5, 6: perEntry = v * UInt64(LiveBPF.possibleCPUs) + 8 // per-CPU hash / array: a value per CPU
        default: perEntry = v                                      // arrays, prog arrays (a pointer per slot)
        }
        let (entries, overflow) = n.multipliedReportingOverflow(by: perEntry)
        return overflow || entries > UInt64.max / 2 ? .max : pages(4096 + entries)
    }

    /// The kernel's num_possible_cpus(): a per-CPU map's value, seen from user space, is one
    /// value (rounded up to 8 bytes) for each.
    public static let possibleCPUs: Int = Int(max(1, clb_possible_cpus()))

    private static func isPerCPU(_ type: UInt32) -> Bool { [5, 6, 10].contains(type) }  // percpu hash, array, LRU hash

    /// The size of a value as bpf(2) copies it for this map: value_size, or for a per-CPU map
    /// round_up(value_size, 8) × possible CPUs.
    public func userValueSize(_ fd: Int32) throws -> Int {
        let info = try mapInfo(fd)
        return LiveBPF.isPerCPU(info.type) ? (Int(info.valueSize) + 7) / 8 * 8 * LiveBPF.possibleCPUs : Int(info.valueSize)
    }

    private func charge(_ cost: UInt64, for what: String) throws {
        let (sum, overflow) = chargedBytes.addingReportingOverflow(cost)
        let total = overflow ? UInt64.max : sum
        guard total <= LiveBPF.memlockLimit else {
            throw LiveBudgetError(message: "\(what) would bring the kernel memory this backend holds to \(total) bytes, beyond RLIMIT_MEMLOCK (\(LiveBPF.memlockLimit) bytes); not created")
        }
    }

    public init() {}
    deinit { closeAll() }

    /// Whether bpf(2) works here (a trivial XDP program loads); nil if it does, else why not.
    public static func unavailableReason() -> String? {
        var log = [CChar](repeating: 0, count: 256)
        let insns = BPFBytecode.encode([.mov64(0, imm: 2), .exit])
        let fd = insns.withUnsafeBytes { b in
            clb_prog_load(6, 0, b.baseAddress, 2, "GPL", &log, UInt32(log.count), 0, -1, 0, "bpflab_probe")
        }
        if fd < 0 {
            let e = -fd
            return "bpf(2) refused a trivial XDP program with errno \(e)\(e == 1 ? " (EPERM: not root, or unprivileged BPF disabled)" : e == 38 ? " (ENOSYS: no BPF in this kernel)" : "")"
        }
        _ = clb_close(fd)
        return nil
    }

    private func check(_ r: Int32, _ what: @autoclosure () -> String) throws -> Int32 {
        guard r >= 0 else { throw LiveError(errno: -r, message: what()) }
        return r
    }

    private func track(_ fd: Int32) -> Int32 {
        open.insert(fd)
        return fd
    }

    /// Keeps a link's fd with the others (closed by closeAll).
    func trackLink(_ fd: Int32) -> Int32 { track(fd) }

    /// BPF_PROG_LOAD of instructions; a refusal carries the verifier log's last lines.
    public func progLoad(type: UInt32, insns: [BPFInsn], name: String, license: String = "GPL",
                         expectedAttachType: UInt32 = 0, attachProgFD: Int32 = -1, attachBTFID: UInt32 = 0,
                         flags: UInt32 = 0) throws -> Int32 {
        // bpf_prog_size: struct bpf_prog's header and the instructions, in pages.
        let cost = LiveBPF.pages(72 + UInt64(insns.count) * 8)
        try charge(cost, for: "program '\(name)'")
        var log = [CChar](repeating: 0, count: 1 << 16)
        let bytes = BPFBytecode.encode(insns)
        let fd = bytes.withUnsafeBytes { b in
            clb_prog_load(type, expectedAttachType, b.baseAddress, UInt32(insns.count), license, &log, UInt32(log.count),
                          flags, attachProgFD, attachBTFID, String(name.prefix(15)))
        }
        if fd < 0 {
            let text = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let tail = text.split(separator: "\n").suffix(3).joined(separator: "\n")
            throw LiveError(errno: -fd, message: "the kernel refused program '\(name)'" + (tail.isEmpty ? "" : ":\n\(tail)"))
        }
        charged[fd] = cost
        return track(fd)
    }

    public func mapCreate(type: UInt32, keySize: UInt32, valueSize: UInt32, maxEntries: UInt32, flags: UInt32 = 0,
                          name: String) throws -> Int32 {
        let cost = LiveBPF.mapCost(type: type, keySize: keySize, valueSize: valueSize, maxEntries: maxEntries)
        try charge(cost, for: "map '\(name)'")
        let fd = track(try check(clb_map_create(type, keySize, valueSize, maxEntries, flags, String(name.prefix(15))),
                                 "the kernel refused map '\(name)'"))
        charged[fd] = cost
        return fd
    }

    /// BPF_MAP_UPDATE_ELEM. bpf(2) takes no lengths — the kernel copies the map's key and value
    /// sizes from the pointers — so sizes that do not match are refused here with EINVAL
    /// (the lab's facade answers the same) rather than letting the kernel read past them.
    /// A per-CPU map takes value_size bytes (written to every CPU, as the lab's facade
    /// allows) or the whole per-CPU value.
    public func mapUpdate(_ fd: Int32, key: [UInt8], value given: [UInt8], flags: UInt64 = 0) throws {
        let info = try mapInfo(fd)
        var value = given
        if LiveBPF.isPerCPU(info.type) && given.count == Int(info.valueSize) {
            let slot = given + [UInt8](repeating: 0, count: (given.count + 7) / 8 * 8 - given.count)
            value = Array([[UInt8]](repeating: slot, count: LiveBPF.possibleCPUs).joined())
        }
        try checkSizes(fd, key: key.count, value: value.count)
        _ = try check(key.withUnsafeBytes { k in value.withUnsafeBytes { clb_map_update(fd, k.baseAddress, $0.baseAddress, flags) } },
                      "map update")
    }

    /// BPF_MAP_LOOKUP_ELEM into a buffer the size the kernel writes (`userValueSize`: every
    /// CPU's value for a per-CPU map, the first CPU's first); `valueSize` is the map's.
    public func mapLookup(_ fd: Int32, key: [UInt8], valueSize: Int) throws -> [UInt8] {
        try checkSizes(fd, key: key.count, value: nil)
        let info = try mapInfo(fd)
        if valueSize != Int(info.valueSize) {
            throw LiveError(errno: 22, message: "the value is \(valueSize) bytes; the map's values are \(info.valueSize)")
        }
        var out = [UInt8](repeating: 0, count: try userValueSize(fd))
        _ = try check(key.withUnsafeBytes { k in out.withUnsafeMutableBytes { clb_map_lookup(fd, k.baseAddress, $0.baseAddress) } },
                      "map lookup")
        return out
    }

    public func mapDelete(_ fd: Int32, key: [UInt8]) throws {
        try checkSizes(fd, key: key.count, value: nil)
        _ = try check(key.withUnsafeBytes { clb_map_delete(fd, $0.baseAddress) }, "map delete")
    }

    /// One BPF_PROG_TEST_RUN of `repeat` runs: the verdict and the kernel's mean ns per run.
    public func testRun(_ fd: Int32, data: [UInt8], repeat runs: UInt32 = 1) throws -> (retval: UInt32, durationNs: UInt32) {
        var ret: UInt32 = 0, dur: UInt32 = 0
        _ = try check(data.withUnsafeBytes { clb_test_run(fd, $0.baseAddress, UInt32(data.count), runs, &ret, &dur, nil, nil) },
                      "test run")
        return (ret, dur)
    }

    /// The same, timed from user space with the TSC around the syscall.
    public func timedTestRun(_ fd: Int32, data: [UInt8], repeat runs: UInt32) throws -> (retval: UInt32, ticks: UInt64) {
        var ret: UInt32 = 0, dur: UInt32 = 0
        let (r, ticks): (Int32, UInt64) = data.withUnsafeBytes { d in
            let t0 = clb_rdtsc()
            let r = clb_test_run(fd, d.baseAddress, UInt32(data.count), runs, &ret, &dur, nil, nil)
            return (r, clb_rdtsc() &- t0)
        }
        _ = try check(r, "test run")
        return (ret, ticks)
    }

    /// The program's ID and whether it was JIT-ed.
    public func progInfo(_ fd: Int32) throws -> (id: UInt32, jited: Bool) {
        var id: UInt32 = 0, type: UInt32 = 0, jited: UInt32 = 0, xlated: UInt32 = 0
        _ = try check(clb_prog_info(fd, &id, &type, &jited, &xlated), "prog info")
        return (id, jited > 0)
    }

    /// BPF_*_GET_FD_BY_ID (kind: prog, map or link).
    public func getFdByID(_ kind: String, _ id: UInt32) throws -> Int32 {
        let r: Int32
        switch kind {
        case "prog": r = clb_prog_get_fd_by_id(id)
        case "map": r = clb_map_get_fd_by_id(id)
        default: r = clb_link_get_fd_by_id(id)
        }
        return track(try check(r, "get fd by id \(id)"))
    }

    /// The ID behind an fd this backend holds (a program, map or link).
    public func objectID(_ fd: Int32) -> UInt32? {
        var id: UInt32 = 0, t: UInt32 = 0, j: UInt32 = 0, x: UInt32 = 0
        if clb_prog_info(fd, &id, &t, &j, &x) == 0 { return id }
        if clb_map_info(fd, &id, &t, nil, nil, nil) == 0 { return id }
        if clb_link_info(fd, &id) == 0 { return id }
        return nil
    }

    /// A map's type, value size and maximum number of entries.
    public func mapInfo(_ fd: Int32) throws -> (type: UInt32, keySize: UInt32, valueSize: UInt32, maxEntries: UInt32) {
        var id: UInt32 = 0, t: UInt32 = 0, ks: UInt32 = 0, vs: UInt32 = 0, me: UInt32 = 0
        _ = try check(clb_map_info(fd, &id, &t, &ks, &vs, &me), "map info")
        return (t, ks, vs, me)
    }

    /// Waits for one RCU grace period of the kernel (see clb_synchronize_rcu).
    public func synchronizeRCU() { _ = clb_synchronize_rcu() }

    public func objPin(_ fd: Int32, path: String) throws {
        _ = try check(clb_obj_pin(fd, path), "pin at \(path)")
    }

    public func objGet(path: String) throws -> Int32 {
        track(try check(clb_obj_get(path), "obj_get \(path)"))
    }

    public func linkDetach(_ fd: Int32) throws {
        _ = try check(clb_link_detach(fd), "link detach")
    }

    private func checkSizes(_ fd: Int32, key: Int, value: Int?) throws {
        let info = try mapInfo(fd)
        if key != Int(info.keySize) { throw LiveError(errno: 22, message: "the key is \(key) bytes; the map's keys are \(info.keySize)") }
        if let value, value != (try userValueSize(fd)) {
            throw LiveError(errno: 22, message: "the value is \(value) bytes; the map's values are \(try userValueSize(fd))")
        }
    }

    public func close(_ fd: Int32) throws {
        charged[fd] = nil
        guard open.remove(fd) != nil else { throw LiveError(errno: 9, message: "fd \(fd) is not one this backend opened") }
        _ = try check(clb_close(fd), "close")
    }

    /// Closes every fd this backend opened.
    public func closeAll() {
        for fd in open { _ = clb_close(fd) }
        open.removeAll()
        charged.removeAll()
    }

    /// The fds this backend holds open.
    public var openFDs: [Int32] { open.sorted() }
}
