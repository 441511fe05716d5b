// Syscall.swift — the bpf(2) facade: one process's view of the lab kernel.
//
// Mirrors: kernel/bpf/syscall.c (SYSCALL_DEFINE3(bpf, ...) and the commands it dispatches:
// bpf_prog_load, map_create, map_lookup_elem, map_update_elem, map_delete_elem,
// map_get_next_key, bpf_prog_get_fd_by_id, bpf_map_get_fd_by_id, bpf_obj_get_next_id,
// bpf_obj_get_info_by_fd, bpf_prog_test_run, bpf_enable_stats) and net/bpf/test_run.c
// (bpf_prog_test_run_xdp, bpf_test_run).
//
// The mechanism, its rules and why: BPFKernel.docc/the-bpf-2-facade.md (the DocC article "The bpf(2) facade").
import CBPFShims
import BPFInstructions
import Synchronization

/// What BPF_OBJ_GET_INFO_BY_FD reports for a program (struct bpf_prog_info), plus the
/// reference count, which the lab shows as bpftool's debug output would.
public struct ProgInfo: Sendable, Equatable {
    public let id: UInt32
    public let type: ProgType
    public let name: String
    public let tag: String
    public let refcnt: UInt64
    public let runCount: UInt64
    public let runTimeNs: UInt64
    public let recursionMisses: UInt64
    public let loadTimeNs: UInt64
    public let mapIDs: [UInt32]
    public let jited: Bool
    public let chainCalls: Bool
}

/// struct bpf_map_info, plus both reference counts.
public struct MapInfo: Sendable, Equatable {
    public let id: UInt32
    public let type: MapType
    public let name: String
    public let keySize: UInt32
    public let valueSize: UInt32
    public let maxEntries: UInt32
    public let refcnt: UInt64
    public let usercnt: UInt64
}

/// BPF_PROG_TEST_RUN's input.
public struct TestRunAttr: Sendable {
    public var progFD: Int32
    public var data: [UInt8]
    public var repeatCount: UInt32
    public var flags: UInt32
    public var cpu: UInt32

    public init(progFD: Int32, data: [UInt8], repeat repeatCount: UInt32 = 1, flags: UInt32 = 0, cpu: UInt32 = 0) {
        self.progFD = progFD
        self.data = data
        self.repeatCount = repeatCount
        self.flags = flags
        self.cpu = cpu
    }
}

/// BPF_PROG_TEST_RUN's output: the raw return value, the mean duration of one run, and
/// the packet as the program left it.
public struct TestRunResult: Sendable {
    public let retval: UInt32
    public let durationNs: UInt32
    public let dataOut: [UInt8]
}

/// ETH_HLEN: the smallest packet a test run accepts.
public let ethHeaderLength = 14
/// XDP_PACKET_HEADROOM.
public let xdpPacketHeadroom = 256
/// The largest test-run packet: a page less headroom and skb_shared_info's tailroom.
public let testRunMaxData = 4096 - 256 - 320

public final class BPF: @unchecked Sendable {
    public let kernel: Kernel
    public let fds: FDTable

    /// A process number, for display (unique per kernel).
    public let pid: UInt64

    public init(kernel: Kernel, fdLimit: Int32 = 1024) {
        self.kernel = kernel
        self.pid = kernel.serials.add(1, ordering: .relaxed).newValue
        self.fds = FDTable(limit: fdLimit)
        kernel.registerHolder(self)
    }

    // MARK: programs

    /// BPF_PROG_LOAD. Returns a new fd holding the program's first reference.
    public func progLoad(_ attr: ProgLoadAttr) throws -> Int32 {
        var maps: [BPFMap] = []
        defer { for m in maps { m.put() } }  // fds.getMap's references
        for fd in attr.mapFDs { maps.append(try fds.getMap(fd)) }
        /// The step program's map fds of one kind, each looked up once (its reference goes
        /// in `maps`, put on return). EINVAL for a map of another kind.
        func resolve<M: BPFMap>(_ fdList: [Int32], _ use: String) throws -> [Int32: M] {
            var out: [Int32: M] = [:]
            for fd in fdList where out[fd] == nil {
                let m = try fds.getMap(fd)
                maps.append(m)
                guard let typed = m as? M else { throw fail(.EINVAL, "fd \(fd) is a \(m.type.name) map; \(use)") }
                out[fd] = typed
            }
            return out
        }
        let arrays: [Int32: ProgArray] = try resolve(attr.steps?.arrayFDs ?? [], "bpf_tail_call needs a prog array")
        let keys: [Int32: StaticKeyMap] = try resolve((attr.steps?.keyFDs ?? []) + attr.staticKeyFDs, "a static branch needs a static-key map")
        // A bytecode program's map references: the fds in its ld_imm64 pairs, and fd_array.
        var insnMaps: [Int32: BPFMap] = [:]
        if let insns = attr.insns {
            var fdsUsed = attr.mapFDs
            var pc = 0
            while pc < insns.count {
                let i = insns[pc]
                if i.isWide && (i.src == Pseudo.mapFD || i.src == Pseudo.mapValue) { fdsUsed.append(i.imm) }
                pc += i.isWide ? 2 : 1
            }
            for fd in fdsUsed where insnMaps[fd] == nil {
                guard let m = try? fds.getMap(fd) else { continue }  // the verifier names the bad fd (EBADF)
                if !maps.contains(where: { $0 === m }) { maps.append(m) } else { m.put() }
                insnMaps[fd] = m
            }
        }
        let target = attr.attachProgFD >= 0 ? try fds.getProg(attr.attachProgFD) : nil
        defer { target?.put() }  // getProg (the new program takes its own reference)
        return try fds.installNew {
            .prog(try BPFProg.load(kernel: kernel, attr: attr, maps: maps, arrays: arrays, target: target, keys: keys, insnMaps: insnMaps))  // the fd takes load's reference
        }
    }

    /// BPF_PROG_GET_FD_BY_ID. ENOENT if no live program has that ID.
    public func progGetFdById(_ id: UInt32) throws -> Int32 {
        try fds.installNew {
            .prog(try kernel.progIDR.lookup(id) { p in
                guard let p else { throw fail(.ENOENT, "no program has ID \(id)") }
                try p.incNotZero()  // bpf_prog_by_id: the fd's reference; a dying program is not resurrected
                return p
            })
        }
    }

    /// BPF_PROG_GET_NEXT_ID: the smallest program ID above `start`; ENOENT after the last.
    public func progGetNextId(_ start: UInt32) throws -> UInt32 {
        guard let id = kernel.progIDR.nextID(after: start) else {
            throw fail(.ENOENT, "no program ID above \(start)")
        }
        return id
    }

    /// BPF_OBJ_GET_INFO_BY_FD for a program.
    public func progGetInfo(_ fd: Int32) throws -> ProgInfo {
        let p = try fds.getProg(fd)
        defer { p.put() }  // getProg
        let s = p.runStats
        return ProgInfo(id: p.id, type: p.type, name: p.name, tag: p.tag, refcnt: p.refcnt - 1,
                        runCount: s.runCount, runTimeNs: s.runTimeNs, recursionMisses: s.misses,
                        loadTimeNs: p.loadTimeNs, mapIDs: p.usedMaps.map(\.id), jited: p.jited,
                        chainCalls: p.hasChainCalls)
    }

    /// BPF_PROG_TEST_RUN: runs the program (through BPF_PROG_RUN, so chains and stats
    /// apply) on a copy of `data`, `repeat` times (0 counts as 1).
    public func progTestRun(_ attr: TestRunAttr) throws -> TestRunResult {
        if attr.flags != 0 {
            throw fail(.EINVAL, "unknown test-run flags 0x\(String(attr.flags, radix: 16))")
        }
        if attr.cpu != 0 {
            throw fail(.EINVAL, "cpu \(attr.cpu) given without BPF_F_TEST_RUN_ON_CPU")
        }
        let prog = try fds.getProg(attr.progFD)
        defer { prog.put() }  // getProg
        switch prog.type {
        case .xdp, .schedCls, .socketFilter:
            break
        case .tracing:
            if attr.repeatCount > 1 { throw fail(.EINVAL, "tracing test runs take no repeat") }
            return try tracingTestRun(prog)
        default:
            throw fail(.ENOTSUPP, "\(prog.type.name) programs have no test_run")
        }
        if attr.data.count < ethHeaderLength {
            throw fail(.EINVAL, "packet of \(attr.data.count) bytes is shorter than an Ethernet header (\(ethHeaderLength))")
        }
        if attr.data.count > testRunMaxData {
            throw fail(.EINVAL, "packet of \(attr.data.count) bytes exceeds \(testRunMaxData) (a page less headroom and tailroom)")
        }
        let page = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { page.deallocate() }
        let start = page.assumingMemoryBound(to: UInt8.self)
        let data = start + xdpPacketHeadroom
        attr.data.withUnsafeBufferPointer { src in data.update(from: src.baseAddress!, count: src.count) }
        var md = cbpf_xdp_md()
        md.data_hard_start = start
        md.data = data
        md.data_meta = data
        md.data_end = data + attr.data.count
        md.data_hard_end = start + 4096 - 320  // frame_sz less the skb_shared_info tailroom
        md.ingress_ifindex = 1
        let reps = max(1, attr.repeatCount)
        var ret: UInt32 = 0
        let t0 = cbpf_ktime_get_ns()
        withUnsafeMutablePointer(to: &md) { ctx in
            for _ in 0..<reps { ret = bpfProgRun(prog.raw, ctx) }
        }
        let elapsed = cbpf_ktime_get_ns() &- t0
        let out = Array(UnsafeBufferPointer(start: md.data, count: md.data_end - md.data))
        return TestRunResult(retval: ret, durationNs: UInt32(clamping: elapsed / UInt64(reps)), dataOut: out)
    }

    // MARK: maps

    /// BPF_MAP_CREATE. Returns a new fd holding a reference and a user reference.
    public func mapCreate(_ attr: MapCreateAttr) throws -> Int32 {
        try fds.installNew { .map(try BPFMap.create(kernel: kernel, attr: attr)) }
    }

    /// BPF_MAP_GET_FD_BY_ID.
    public func mapGetFdById(_ id: UInt32) throws -> Int32 {
        try fds.installNew {
            .map(try kernel.mapIDR.lookup(id) { m in
                guard let m else { throw fail(.ENOENT, "no map has ID \(id)") }
                try m.incNotZeroWithUref()  // the fd's references
                return m
            })
        }
    }

    /// BPF_MAP_GET_NEXT_ID.
    public func mapGetNextId(_ start: UInt32) throws -> UInt32 {
        guard let id = kernel.mapIDR.nextID(after: start) else {
            throw fail(.ENOENT, "no map ID above \(start)")
        }
        return id
    }

    /// BPF_MAP_LOOKUP_ELEM.
    public func mapLookupElem(_ fd: Int32, key: [UInt8]) throws -> [UInt8] {
        let m = try fds.getMap(fd)
        defer { m.put() }  // getMap
        return try m.lookup(key: key)
    }

    /// BPF_MAP_UPDATE_ELEM.
    public func mapUpdateElem(_ fd: Int32, key: [UInt8], value: [UInt8], flags: UInt64 = 0) throws {
        let m = try fds.getMap(fd)
        defer { m.put() }  // getMap
        try m.update(key: key, value: value, flags: flags, fds: fds)
    }

    /// BPF_MAP_DELETE_ELEM.
    public func mapDeleteElem(_ fd: Int32, key: [UInt8]) throws {
        let m = try fds.getMap(fd)
        defer { m.put() }  // getMap
        try m.delete(key: key)
    }

    /// BPF_MAP_GET_NEXT_KEY (nil key: the first).
    public func mapGetNextKey(_ fd: Int32, key: [UInt8]?) throws -> [UInt8] {
        let m = try fds.getMap(fd)
        defer { m.put() }  // getMap
        return try m.nextKey(after: key)
    }

    /// BPF_OBJ_GET_INFO_BY_FD for a map.
    public func mapGetInfo(_ fd: Int32) throws -> MapInfo {
        let m = try fds.getMap(fd)
        defer { m.put() }  // getMap
        return MapInfo(id: m.id, type: m.type, name: m.name, keySize: m.keySize, valueSize: m.valueSize,
                       maxEntries: m.maxEntries, refcnt: m.refcnt - 1, usercnt: m.usercnt)
    }

    // MARK: misc

    /// close(fd).
    public func objClose(_ fd: Int32) throws { try fds.close(fd) }

    /// Closes every fd this process holds (process exit).
    public func closeAll() { fds.closeAll() }

    /// BPF_ENABLE_STATS: stats are collected while the returned fd stays open.
    public func enableStats(_ type: UInt32 = StatsType.runTime.rawValue) throws -> Int32 {
        guard StatsType(rawValue: type) != nil else {
            throw fail(.EINVAL, "unknown stats type \(type)")
        }
        return try fds.installNew { .stats(StatsEnable()) }
    }

    /// The program behind `fd` (+1: balance with `put()`), for Swift callers that go on to
    /// use the kernel objects directly.
    public func prog(_ fd: Int32) throws -> BPFProg { try fds.getProg(fd) }
    /// The map behind `fd` (+1: balance with `put()`).
    public func map(_ fd: Int32) throws -> BPFMap { try fds.getMap(fd) }
}
