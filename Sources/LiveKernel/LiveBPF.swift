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
        var log = [CChar](repeating: 0, count: 1 << 16)
        let bytes = BPFBytecode.encode(insns)
        let fd = bytes.withUnsafeBytes { b in
            clb_prog_load(type, expectedAttachType, b.baseAddress, UInt32(insns.count), license, &log, UInt32(log.count),
                          flags, attachProgFD, attachBTFID, String(name.prefix(15)))
        }
        if fd < 0 {
            let text = String(cString: log)
            let tail = text.split(separator: "\n").suffix(3).joined(separator: "\n")
            throw LiveError(errno: -fd, message: "the kernel refused program '\(name)'" + (tail.isEmpty ? "" : ":\n\(tail)"))
        }
        return track(fd)
    }

    public func mapCreate(type: UInt32, keySize: UInt32, valueSize: UInt32, maxEntries: UInt32, flags: UInt32 = 0,
                          name: String) throws -> Int32 {
        track(try check(clb_map_create(type, keySize, valueSize, maxEntries, flags, String(name.prefix(15))),
                        "the kernel refused map '\(name)'"))
    }

    public func mapUpdate(_ fd: Int32, key: [UInt8], value: [UInt8], flags: UInt64 = 0) throws {
        _ = try check(key.withUnsafeBytes { k in value.withUnsafeBytes { clb_map_update(fd, k.baseAddress, $0.baseAddress, flags) } },
                      "map update")
    }

    public func mapLookup(_ fd: Int32, key: [UInt8], valueSize: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: valueSize)
        _ = try check(key.withUnsafeBytes { k in out.withUnsafeMutableBytes { clb_map_lookup(fd, k.baseAddress, $0.baseAddress) } },
                      "map lookup")
        return out
    }

    public func mapDelete(_ fd: Int32, key: [UInt8]) throws {
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
        if clb_map_info(fd, &id, &t, nil) == 0 { return id }
        if clb_link_info(fd, &id) == 0 { return id }
        return nil
    }

    /// A map's type and value size.
    public func mapInfo(_ fd: Int32) throws -> (type: UInt32, valueSize: UInt32) {
        var id: UInt32 = 0, t: UInt32 = 0, vs: UInt32 = 0
        _ = try check(clb_map_info(fd, &id, &t, &vs), "map info")
        return (t, vs)
    }

    public func objPin(_ fd: Int32, path: String) throws {
        _ = try check(clb_obj_pin(fd, path), "pin at \(path)")
    }

    public func objGet(path: String) throws -> Int32 {
        track(try check(clb_obj_get(path), "obj_get \(path)"))
    }

    public func linkDetach(_ fd: Int32) throws {
        _ = try check(clb_link_detach(fd), "link detach")
    }

    public func close(_ fd: Int32) throws {
        guard open.remove(fd) != nil else { throw LiveError(errno: 9, message: "fd \(fd) is not one this backend opened") }
        _ = try check(clb_close(fd), "close")
    }

    /// Closes every fd this backend opened.
    public func closeAll() {
        for fd in open { _ = clb_close(fd) }
        open.removeAll()
    }

    /// The fds this backend holds open.
    public var openFDs: [Int32] { open.sorted() }
}
