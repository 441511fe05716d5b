// Kernel.swift — one simulated kernel: its ID registries, its RCU domain, its checked-mode
// bookkeeping (live objects, rule violations, the quarantine of poisoned records) and the
// lifecycle event log learners can watch.
//
// Mirrors no single kernel file: it is the state kernel/bpf/syscall.c keeps in globals
// (prog_idr, map_idr, link_idr and their locks) plus what a debug kernel adds
// (slab poisoning, KASAN-style quarantine, WARN_ON reports). Tests make a fresh Kernel
// each, so they never share IDs or objects.
import CBPFShims
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A rule a caller broke on a refcount, named (the kernel would WARN or corrupt memory).
public enum RefcountViolation: Equatable, Sendable, CustomStringConvertible {
    /// `inc`/`add` on an object whose count was already zero (CVE-2016-4558's pattern).
    case incrementFromZero(kind: String, name: String)
    /// `sub` brought the count to zero: `sub` may only undo an `add` (bpf_prog_sub's WARN_ON).
    case subReachedZero(kind: String, name: String)
    /// `put` on an object whose count was already zero.
    case putOnDeadObject(kind: String, name: String)

    public var description: String {
        switch self {
        case let .incrementFromZero(k, n): return "\(k) '\(n)': reference taken on an object whose refcount was 0"
        case let .subReachedZero(k, n): return "\(k) '\(n)': sub() dropped the refcount to 0 (only put() may release)"
        case let .putOnDeadObject(k, n): return "\(k) '\(n)': put() on an object whose refcount was already 0"
        }
    }
}

/// The stages an object goes through, named as in the kernel.
public enum LifecycleStage: String, Sendable {
    case created          // bpf_prog_load / map_create succeeded (refcount 1)
    case published        // ID allocated (bpf_prog_alloc_id)
    case lastPut = "put"  // refcount reached 0 (__bpf_prog_put)
    case unpublished      // ID removed (bpf_prog_free_id)
    case deferred         // free queued behind a grace period (call_rcu)
    case afterGracePeriod = "after-gp" // __bpf_prog_put_rcu: puts what it held
    case freed            // memory poisoned / released (bpf_prog_free)
    case flushed          // prog array emptied when its last user reference went
}

/// One entry of the lifecycle log.
public struct LifecycleEvent: Sendable, CustomStringConvertible {
    public let kind: String
    public let name: String
    public let serial: UInt64
    public let id: UInt32
    public let stage: LifecycleStage
    public var description: String { "\(kind) \(name)#\(serial) id=\(id) \(stage.rawValue)" }
}

/// Tuning of a Kernel instance.
public struct KernelConfig: Sendable {
    /// Checked mode: poison freed records (and keep them in quarantine), let readers
    /// validate what they reach, count violations. Benchmarks refuse to run with it on.
    public var checked: Bool
    /// ID range of every registry (the kernel's is 1...INT_MAX).
    public var idRange: ClosedRange<UInt32>
    /// Freed records kept poisoned (checked mode) before their memory is released.
    public var quarantineCapacity: Int

    public init(checked: Bool = true, idRange: ClosedRange<UInt32> = 1...UInt32(Int32.max),
                quarantineCapacity: Int = 4096) {
        self.checked = checked
        self.idRange = idRange
        self.quarantineCapacity = quarantineCapacity
    }

    /// The configuration for measurements: no checks, no quarantine.
    public static let fast = KernelConfig(checked: false, quarantineCapacity: 0)
}

public final class Kernel: @unchecked Sendable {
    public let config: KernelConfig
    public var checked: Bool { config.checked }
    public let rcu: RCUDomain
    public let progIDR: IDR<BPFProg>
    public let mapIDR: IDR<BPFMap>
    public let linkIDR: IDR<BPFLink>
    public let liveLinks = Atomic<Int>(0)
    /// Trampolines by (target program serial, function index); trampoline_mutex.
    let trampolineLock = KLock()
    var trampolines: [TrampolineKey: Trampoline] = [:]
    /// Kernel functions trampolines can attach to, by name (KernelFunction.swift).
    let kernelFunctions: [String: KernelFunction] = KernelFunction.standard()
    /// The kernel's XDP bpf_dispatcher.
    public private(set) var xdpDispatcher: BPFDispatcher!
    /// Dispatchers made besides the XDP one (BPFDispatcher.init), which hold references the
    /// auditor counts; weak, so a dispatcher's life is its owner's.
    private let dispatcherLock = KLock()
    private var extraDispatchers: [Weak<BPFDispatcher>] = []
    var otherDispatchers: [BPFDispatcher] { dispatcherLock.withLock { extraDispatchers.compactMap(\.value) } }
    func registerDispatcher(_ d: BPFDispatcher) {
        dispatcherLock.withLock {
            extraDispatchers.removeAll { $0.value == nil }
            extraDispatchers.append(Weak(d))
        }
    }

    /// Objects created and not yet freed, per kind.
    public let liveProgs = Atomic<Int>(0)
    public let liveMaps = Atomic<Int>(0)
    /// Every object created and not yet freed. After teardown and `rcuBarrier()` it is 0
    /// unless something leaked.
    public var liveObjects: Int {
        liveProgs.load(ordering: .acquiring) + liveMaps.load(ordering: .acquiring) + liveLinks.load(ordering: .acquiring)
    }

    /// Objects whose last reference is gone (their IDs unpublished) but that wait for a
    /// grace period before they are freed — the RCU-deferred window, watched without a
    /// barrier.
    public var pendingFreeObjects: Int {
        liveProgs.load(ordering: .acquiring) + liveMaps.load(ordering: .acquiring) - progIDR.ids.count - mapIDR.ids.count
    }

    let serials = Atomic<UInt64>(0)
    /// Named counters step programs count into (StepProgram.swift).
    let counters: UnsafeMutablePointer<UInt64>
    let bookLockCounters = KLock()
    var counterNames: [String: UInt32] = [:]
    /// bpffs: pinned objects.
    let pinTable = PinTable()
    /// Every object from creation to free, by serial (the auditor and the graph walk it;
    /// the IDRs hold only published ones). Weak: the objects keep themselves alive.
    let objectsLock = KLock()
    var objects: [UInt64: WeakObject] = [:]
    /// Holders outside the kernel's own objects that take references: processes' fd
    /// tables, devices, run arrays (weak).
    var holders: [ObjectIdentifier: WeakObject] = [:]

    /// libxdp's dispatcher registry (LibXDP.swift): user-space state, by program ID.
    let libxdpLock = KLock()
    var libxdpDispatchers: [UInt32: [XDPProgramSpec]] = [:]
    /// Serialises chain-slot changes so the cycle check and the exchange are one step.
    let chainLock = KLock()
    private let bookLock = KLock()
    private var _violations: [RefcountViolation] = []
    private var _events: [LifecycleEvent] = []
    private var logging = false
    private var quarantine: [(UnsafeMutableRawPointer, Int)] = []
    private var quarantineHead = 0

    public init(_ config: KernelConfig = KernelConfig()) {
        self.config = config
        rcu = RCUDomain(checked: config.checked)
        progIDR = IDR(range: config.idRange)
        mapIDR = IDR(range: config.idRange)
        linkIDR = IDR(range: config.idRange)
        counters = allocRecord(bytes: kernelCounterSlots * 8).bindMemory(to: UInt64.self, capacity: kernelCounterSlots)
        counterNames[faultCallDepthCounter] = 0  // counter 0: bodies count call-depth faults there
        // The interpreter's faults (bpf_interpreter.h BPFI_FAULT_*), at fixed slots.
        for (i, name) in interpreterFaultCounters.enumerated() where i > 0 { counterNames[name] = UInt32(i) }
        xdpDispatcher = BPFDispatcher(kernel: self, name: "xdp", registered: false)
    }

    deinit {
        rcu.shutdown()
        for (p, _) in quarantine { p.deallocate() }
        counters.deallocate()
    }

    /// Waits until every free queued so far has happened (rcu_barrier()).
    public func rcuBarrier() { rcu.barrier() }

    /// Waits until no deferred work is left, including frees queued by frees (a chain of
    /// N programs is released one grace period per link).
    public func quiesce() {
        repeat { rcu.barrier() } while rcu.pendingCallbacks > 0
    }

    // MARK: violations and events

    func record(_ v: RefcountViolation) {
        bookLock.withLock { _violations.append(v) }
    }

    /// Forgets recorded violations (for tests whose point was to provoke one).
    public func clearViolationsForTesting() { bookLock.withLock { _violations.removeAll() } }

    /// Refcount rules broken so far.
    public var violations: [RefcountViolation] { bookLock.withLock { _violations } }

    /// Starts recording lifecycle events (for learners, `bpflab trace` and tests).
    public func startEventLog() { bookLock.withLock { logging = true; _events.removeAll() } }
    public var events: [LifecycleEvent] { bookLock.withLock { _events } }

    func log(_ kind: String, _ name: String, _ serial: UInt64, _ id: UInt32, _ stage: LifecycleStage) {
        bookLock.withLock {
            if logging { _events.append(LifecycleEvent(kind: kind, name: name, serial: serial, id: id, stage: stage)) }
        }
    }

    // MARK: freeing records

    /// Frees a record: in checked mode it is overwritten with POISON_FREE and quarantined
    /// (its memory stays mapped, so a late reader reads poison instead of someone else's
    /// data, and checked readers report it); otherwise released at once.
    func freeRecord(_ p: UnsafeMutableRawPointer, bytes: Int) {
        guard checked, config.quarantineCapacity > 0 else {
            p.deallocate()
            return
        }
        // Poison with atomic stores so a (buggy) concurrent reader is a reported
        // use-after-free, not a data race the sanitizer stops on.
        let words = p.assumingMemoryBound(to: UInt64.self)
        for i in 0..<(bytes / 8) { cbpf_write_once_u64(words + i, CBPF_POISON_MAGIC) }
        bookLock.withLock {
            if quarantine.count < config.quarantineCapacity {
                quarantine.append((p, bytes))
            } else {
                quarantine[quarantineHead].0.deallocate()
                quarantine[quarantineHead] = (p, bytes)
                quarantineHead = (quarantineHead + 1) % config.quarantineCapacity
            }
        }
    }
}

/// A weak reference, for registries that must not keep their objects alive.
final class WeakObject: @unchecked Sendable {
    weak var object: AnyObject?
    init(_ o: AnyObject) { object = o }
}

extension Kernel {
    func registerObject(_ serial: UInt64, _ o: AnyObject) { objectsLock.withLock { objects[serial] = WeakObject(o) } }
    func unregisterObject(_ serial: UInt64) { objectsLock.withLock { _ = objects.removeValue(forKey: serial) } }
    func registerHolder(_ o: AnyObject) { objectsLock.withLock { holders[ObjectIdentifier(o)] = WeakObject(o) } }
    /// Every object not yet freed (live or waiting for its grace period), by serial.
    var allObjects: [AnyObject] {
        objectsLock.withLock { objects.sorted { $0.key < $1.key }.compactMap { $0.value.object } }
    }
    var allHolders: [AnyObject] { objectsLock.withLock { holders.values.compactMap(\.object) } }
}

/// The counter a run's call-depth fault is counted in (slot 0 of the kernel's counters).
public let faultCallDepthCounter = "fault.call_depth"
/// The counters the bytecode interpreter counts its faults in, by BPFI_FAULT_* slot: an
/// access outside every region the run may touch, too many backward jumps, a helper given
/// the wrong kind of argument, an opcode the interpreter lacks.
public let interpreterFaultCounters = [faultCallDepthCounter, "fault.mem", "fault.budget", "fault.helper", "fault.insn"]

/// Fault injection for record allocation: while positive, each `allocRecordOrFail` fails
/// with ENOMEM and decrements it (tests show every caller answers with an errno).
public let allocRecordFailures = Atomic<Int>(0)

/// Allocates zeroed, cache-line-aligned memory for a record whose size a user chose (map
/// storage, program images): ENOMEM instead of a trap when the memory is not there
/// (kmalloc's NULL, e.g. under `ulimit -v`). Free with `deallocate()` / `freeRecord`.
func allocRecordOrFail(bytes: Int, what: String) throws -> UnsafeMutableRawPointer {
    if allocRecordFailures.load(ordering: .relaxed) > 0 {
        allocRecordFailures.subtract(1, ordering: .relaxed)
        throw fail(.ENOMEM, "cannot allocate \(bytes) bytes for \(what) (fault injected)")
    }
    var p: UnsafeMutableRawPointer?
    guard posix_memalign(&p, Int(CBPF_CACHELINE), max(bytes, 1)) == 0, let p else {
        throw fail(.ENOMEM, "cannot allocate \(bytes) bytes for \(what)")
    }
    p.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    return p
}

/// Allocates zeroed, cache-line-aligned memory for a record.
func allocRecord(bytes: Int) -> UnsafeMutableRawPointer {
    let p = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: Int(CBPF_CACHELINE))
    p.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    return p
}


/// A weak reference, for registries that must not keep their entries alive.
final class Weak<T: AnyObject>: @unchecked Sendable {
    weak var value: T?
    init(_ v: T) { value = v }
}
