// Test support: a fresh kernel per test, a state snapshot for "a failed call changes
// nothing", errno assertions, and a leak check at teardown.
import XCTest
import CBPFShims
import BPFPrograms
import Synchronization
@testable import BPFKernel

/// Everything observable about a kernel and one process's fds.
struct KernelSnapshot: Equatable {
    var fds: [Int32]
    var progIDs: [UInt32]
    var mapIDs: [UInt32]
    var progRefs: [UInt32: UInt64]
    var mapRefs: [UInt32: [UInt64]]
    var chainSlots: [UInt32: [UInt32]]
    var arraySlots: [UInt32: [UInt32]]
    var live: Int
    var links: [UInt32: LinkInfo]
    var pins: [String]

    init(_ bpf: BPF) {
        let k = bpf.kernel
        var progRefs: [UInt32: UInt64] = [:], chainSlots: [UInt32: [UInt32]] = [:]
        var mapRefs: [UInt32: [UInt64]] = [:], arraySlots: [UInt32: [UInt32]] = [:]
        let progIDs = k.progIDR.ids, mapIDs = k.mapIDR.ids
        for id in progIDs {
            k.progIDR.lookup(id) { p in
                guard let p else { return }
                progRefs[id] = p.refcnt
                chainSlots[id] = (0..<8).map { i in cbpf_prog_chain_slot(p.raw, UInt(i))?.pointee.aux.pointee.id ?? 0 }
            }
        }
        for id in mapIDs {
            k.mapIDR.lookup(id) { m in
                guard let m else { return }
                mapRefs[id] = [m.refcnt, m.usercnt]
                if let a = m as? ProgArray {
                    arraySlots[id] = (0..<a.maxEntries).map { i in cbpf_array_slot(a.array, i)?.pointee.aux.pointee.id ?? 0 }
                }
            }
        }
        self.fds = bpf.fds.openFDs
        self.progIDs = progIDs
        self.mapIDs = mapIDs
        self.progRefs = progRefs
        self.chainSlots = chainSlots
        self.mapRefs = mapRefs
        self.arraySlots = arraySlots
        self.live = k.liveObjects
        var links: [UInt32: LinkInfo] = [:]
        for id in k.linkIDR.ids { k.linkIDR.lookup(id) { l in if let l { links[id] = l.info() } } }
        self.links = links
        self.pins = bpf.pinnedPaths
    }
}

class KernelTestCase: XCTestCase {
    var kernel: Kernel!
    var bpf: BPF!

    override func setUp() {
        super.setUp()
        kernel = Kernel(KernelConfig(checked: true))
        bpf = BPF(kernel: kernel)
    }

    override func tearDown() {
        // The auditor on whatever the test left: every reference accounted for.
        kernel.quiesce()
        XCTAssertEqual(kernel.audit(), [], "the auditor found broken rules at teardown")
        bpf.closeAll()
        kernel.unpinAll()
        kernel.quiesce()  // including frees queued by frees (chain slots, flushes)
        kernel.xdpDispatcher.reset()
        kernel.quiesce()
        XCTAssertEqual(kernel.liveObjects, 0, "objects leaked: \(kernel.liveProgs.load(ordering: .relaxed)) progs, \(kernel.liveMaps.load(ordering: .relaxed)) maps, \(kernel.liveLinks.load(ordering: .relaxed)) links")
        XCTAssertEqual(kernel.violations, [], "refcount rules broken")
        XCTAssertEqual(StatsEnable.enableCount, 0, "a test left stats enabled")
        bpf = nil
        kernel = nil
        super.tearDown()
    }

    /// Settles every deferred free (several rounds: a free can queue further frees).
    func settle() {
        kernel.quiesce()
    }

    func load(_ attr: ProgLoadAttr) throws -> Int32 { try bpf.progLoad(attr) }

    func loadReturning(_ v: UInt32, name: String = "", flags: ProgLoadFlags = []) throws -> Int32 {
        try bpf.progLoad(.returning(v, name: name, flags: flags))
    }

    /// Asserts `body` throws `errno` and that the snapshot is unchanged.
    func assertErrno<T>(_ errno: Errno, _ what: String = "", file: StaticString = #filePath, line: UInt = #line,
                        _ body: () throws -> T) {
        // Objects already dying finish their grace period first, so the snapshot compares
        // only what the call could have changed.
        kernel.quiesce()
        let before = KernelSnapshot(bpf)
        do {
            _ = try body()
            XCTFail("expected \(errno.name) \(what)", file: file, line: line)
        } catch let e as BPFError {
            XCTAssertEqual(e.errno, errno, "\(what): got \(e)", file: file, line: line)
            XCTAssertFalse(e.message.isEmpty, file: file, line: line)
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
        XCTAssertEqual(KernelSnapshot(bpf), before, "state changed by a failed call \(what)", file: file, line: line)
    }
}

func key(_ i: UInt32) -> [UInt8] { withUnsafeBytes(of: i.littleEndian) { Array($0) } }
func fdValue(_ fd: Int32) -> [UInt8] { withUnsafeBytes(of: UInt32(bitPattern: fd).littleEndian) { Array($0) } }
func u32(_ b: [UInt8]) -> UInt32 { UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24 }

/// A minimal Ethernet/IPv4/UDP frame for test runs.
let testPacket: [UInt8] = Array(repeating: 0xab, count: 64)

extension KernelTestCase {
    /// Runs one packet through `fd`'s program with BPF_PROG_RUN; returns its value.
    func run(_ fd: Int32) throws -> UInt32 {
        try bpf.progTestRun(TestRunAttr(progFD: fd, data: testPacket)).retval
    }

    func progArray(_ n: UInt32, name: String = "jmp") throws -> Int32 {
        try bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: n, name: name))
    }

    func setSlot(_ mapFD: Int32, _ index: UInt32, _ progFD: Int32) throws {
        try bpf.mapUpdateElem(mapFD, key: key(index), value: fdValue(progFD))
    }

    func id(_ fd: Int32) throws -> UInt32 { try bpf.progGetInfo(fd).id }
    func refs(_ fd: Int32) throws -> UInt64 { try bpf.progGetInfo(fd).refcnt }
}

let XDP_ABORTED = UInt32(CBPF_XDP_ABORTED), XDP_DROP = UInt32(CBPF_XDP_DROP), XDP_PASS = UInt32(CBPF_XDP_PASS)
let XDP_TX = UInt32(CBPF_XDP_TX), XDP_REDIRECT = UInt32(CBPF_XDP_REDIRECT)

extension KernelTestCase {
    /// Loads libxdp's dispatcher program (the native one) with `enabled` slots, every mask
    /// continuing on XDP_PASS and on an empty placeholder's 31; its placeholders are
    /// prog0 … prog9.
    func loadLibxdpDispatcher(enabled: UInt32, name: String = "disp", machine: Bool = false) throws -> Int32 {
        var cfg = bpfp_xdp_dispatcher_config()
        cfg.num_progs_enabled = enabled
        withUnsafeMutableBytes(of: &cfg.chain_call_actions) { b in
            for i in 0..<10 { b.storeBytes(of: UInt32(1 << 2 | 1 << 31), toByteOffset: i * 4, as: UInt32.self) }
        }
        var attr = ProgLoadAttr(body: .xdpDispatcher, data: withUnsafeBytes(of: &cfg) { Array($0) }, name: name)
        attr.functions = (0..<10).map { ProgFunction(name: "prog\($0)", body: .xdpDispatcherStub) }
        attr.functionTableOffset = MemoryLayout<bpfp_xdp_dispatcher_config>.offset(of: \.slots)!
        attr.machineCode = machine
        return try load(attr)
    }
}

/// Assembler text: r0 = &map[0] (bpf_map_lookup_elem with a zero key on the stack), and a
/// jump to `miss` when there is none. Clobbers r1–r5.
func lookupZero(_ map: Int32, miss: String) -> String {
    """
    stw [%r10-4], 0
    lddw %r1, map \(map)
    mov %r2, %r10
    add %r2, -4
    call 1
    jeq %r0, 0, \(miss)
    """
}

/// Assembler text of the self tail call every backend is checked with: count the run into
/// `runs[0]` (an array map of u64), tail-call slot 0 of `jmp`, return XDP_PASS.
func selfTailCallText(jmp: Int32, runs: Int32) -> String {
    """
    mov %r6, %r1
    \(lookupZero(runs, miss: "out"))
    mov %r1, 1
    lock add [%r0+0], %r1
    mov %r1, %r6
    lddw %r2, map \(jmp)
    mov %r3, 0
    call 12
    out:
    mov %r0, 2
    exit
    """
}

extension KernelTestCase {
    /// Two RCU readers run `run(n, ctx)` — a packet's verdict; n is the reader's number plus
    /// the packet's place in its poll, for a test that varies what it runs — in polls of 64 with a
    /// quiescent state between polls, as the driver does, while `change` runs again and
    /// again on this thread for `seconds`. Returns every verdict's count and how many
    /// changes ran. The readers are stopped and joined before an error of `change` is
    /// rethrown (a reader left running would outlive the kernel it reads).
    func whileTwoReadersRun(_ run: @escaping @Sendable (Int, UnsafeMutablePointer<cbpf_xdp_md>) -> UInt32,
                            seconds: Double = 1.0, change: () throws -> Void) throws -> (verdicts: [UInt32: Int], changes: Int) {
        let stop = ManagedAtomicFlag()
        final class Tally: @unchecked Sendable { var v: [UInt32: Int] = [:] }
        let tallies = [Tally(), Tally()]
        let domain = kernel.rcu
        let readers = try tallies.enumerated().map { i, t in
            try kthreadCreate(name: "reader-\(i)") {
                let r = domain.registerThread(name: "reader-\(i)")
                var ctx = cbpf_xdp_md()
                withUnsafeMutablePointer(to: &ctx) { c in
                    while !stop.isSet {
                        for k in 0..<64 { t.v[run(i + k, c), default: 0] += 1 }
                        r.quiescentState()
                    }
                }
                domain.unregisterThread(r)
            }
        }
        var changes = 0
        let end = Date().addingTimeInterval(seconds)
        let failure: Error? = {
            do {
                while Date() < end {
                    try change()
                    changes += 1
                }
                return nil
            } catch { return error }
        }()
        stop.set()
        readers.forEach(kthreadJoin)  // pthread_join: the readers' counts happen before what follows
        if let failure { throw failure }
        var total: [UInt32: Int] = [:]
        for t in tallies { total.merge(t.v, uniquingKeysWith: +) }
        return (total, changes)
    }
}
