// Map.swift — the map object: two reference counts, an ID, and per-type operations.
//
// Mirrors: kernel/bpf/syscall.c (map_create, bpf_map_inc, bpf_map_inc_with_uref,
// bpf_map_inc_not_zero, bpf_map_put, bpf_map_put_uref, bpf_map_put_with_uref,
// bpf_map_free_id, bpf_map_free_deferred) and kernel/bpf/arraymap.c (array_map_alloc_check,
// array_map_lookup_elem, array_map_update_elem, array_map_delete_elem).
//
// The mechanism, its rules and why: BPFKernel.docc/maps-and-user-references.md (the DocC article "Maps and user references").
import CBPFShims
import Synchronization

/// enum bpf_map_type (the ones the lab models).
public enum MapType: UInt32, Sendable, CaseIterable {
    case hash = 1
    case array = 2
    case progArray = 3
    case percpuArray = 6
    /// The lab's static-key map (seed 000's proposal; not a mainline map type).
    case staticKey = 0x1000

    public var name: String {
        switch self {
        case .hash: return "hash"
        case .array: return "array"
        case .progArray: return "prog_array"
        case .percpuArray: return "percpu_array"
        case .staticKey: return "static_key"
        }
    }
}

/// Element update flags (BPF_ANY, BPF_NOEXIST, BPF_EXIST).
public enum MapUpdateFlag: UInt64, Sendable {
    case any = 0
    case noExist = 1
    case exist = 2
}

/// The BPF_MAP_CREATE attributes the lab understands.
public struct MapCreateAttr: Sendable {
    public var mapType: UInt32
    public var keySize: UInt32
    public var valueSize: UInt32
    public var maxEntries: UInt32
    public var mapFlags: UInt32
    public var name: String

    public init(type: MapType, keySize: UInt32 = 4, valueSize: UInt32 = 4, maxEntries: UInt32,
                flags: UInt32 = 0, name: String = "") {
        self.mapType = type.rawValue
        self.keySize = keySize
        self.valueSize = valueSize
        self.maxEntries = maxEntries
        self.mapFlags = flags
        self.name = name
    }
}

/// Base of every map. Subclasses implement the element operations and the release hooks.
public class BPFMap: @unchecked Sendable, CustomStringConvertible {
    public let kernel: Kernel
    public let type: MapType
    public let keySize: UInt32
    public let valueSize: UInt32
    public let maxEntries: UInt32
    public let mapFlags: UInt32
    public let name: String
    public let serial: UInt64
    /// [0] refcnt, [1] usercnt, [2] id.
    let counters: UnsafeMutablePointer<UInt64>
    let state = Atomic<UInt8>(ObjectState.live.rawValue)
    private var selfRetain: Unmanaged<BPFMap>?
    /// What programs reach (struct bpf_map as the helpers read it): the interpreter's
    /// helpers find the elements through it. Subclasses fill in their storage.
    public let record: UnsafeMutablePointer<cbpf_map>

    init(kernel: Kernel, attr: MapCreateAttr, type: MapType) {
        record = allocRecord(bytes: MemoryLayout<cbpf_map>.stride).bindMemory(to: cbpf_map.self, capacity: 1)
        record.pointee.magic = CBPF_MAP_MAGIC
        record.pointee.type = type.rawValue
        record.pointee.key_size = attr.keySize
        record.pointee.value_size = attr.valueSize
        record.pointee.max_entries = attr.maxEntries
        self.kernel = kernel
        self.type = type
        self.keySize = attr.keySize
        self.valueSize = attr.valueSize
        self.maxEntries = attr.maxEntries
        self.mapFlags = attr.mapFlags
        self.name = attr.name
        self.serial = kernel.serials.add(1, ordering: .relaxed).newValue
        counters = allocRecord(bytes: 64).bindMemory(to: UInt64.self, capacity: 8)
        counters[0] = 1  // the creator's fd: refcnt and usercnt
        counters[1] = 1
        record.pointee.owner = UnsafeMutableRawPointer(Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        counters.deallocate()
        record.deallocate()
    }

    /// map_create's core: validate, build, publish. Returns the map holding one
    /// reference and one user reference (the caller's fd): balance with `putWithUref()`.
    static func create(kernel: Kernel, attr: MapCreateAttr) throws -> BPFMap {
        guard let type = MapType(rawValue: attr.mapType) else {
            throw fail(.EINVAL, "unknown map type \(attr.mapType)")
        }
        if attr.mapFlags != 0 {
            throw fail(.EINVAL, "unsupported map_flags 0x\(String(attr.mapFlags, radix: 16))")
        }
        try checkObjName(attr.name)
        let map: BPFMap
        switch type {
        case .array:
            try ArrayMap.allocCheck(attr)
            map = try ArrayMap(kernel: kernel, attr: attr)
        case .progArray:
            try ProgArray.allocCheck(attr)
            map = try ProgArray(kernel: kernel, attr: attr)
        case .staticKey:
            try StaticKeyMap.allocCheck(attr)
            map = StaticKeyMap(kernel: kernel, attr: attr)
        case .hash:
            try HashMap.allocCheck(attr)
            map = try HashMap(kernel: kernel, attr: attr)
        case .percpuArray:
            try PerCPUArrayMap.allocCheck(attr)
            map = try PerCPUArrayMap(kernel: kernel, attr: attr)
        }
        do {
            let id = try kernel.mapIDR.alloc(map)
            cbpf_store_release_u64(map.counters + 2, UInt64(id))
        } catch {
            map.freeStorage()
            throw error
        }
        map.selfRetain = Unmanaged.passRetained(map)
        kernel.registerObject(map.serial, map)
        kernel.liveMaps.add(1, ordering: .relaxed)
        kernel.log("map", map.name, map.serial, map.id, .created)
        kernel.log("map", map.name, map.serial, map.id, .published)
        return map
    }

    public var id: UInt32 { UInt32(cbpf_load_acquire_u64(counters + 2)) }
    var refcount: Refcount64 { Refcount64(counters) }
    var usercount: Refcount64 { Refcount64(counters + 1) }
    public var refcnt: UInt64 { objectState == .freed ? 0 : refcount.value }
    public var usercnt: UInt64 { objectState == .freed ? 0 : usercount.value }
    public var objectState: ObjectState { ObjectState(rawValue: state.load(ordering: .acquiring))! }
    public var description: String { "map \(id) \(type.name) '\(name)'" }

    // MARK: references

    /// bpf_map_inc: +1 refcnt (a kernel holder, e.g. a program). Balance with `put()`.
    public func inc() {
        guard objectState != .freed, refcount.addIfHeld(1) else {
            kernel.record(.incrementFromZero(kind: "map", name: name))
            return
        }
    }

    /// bpf_map_inc_with_uref: +1 refcnt and +1 usercnt (an fd or a pin).
    /// Balance with `putWithUref()`.
    public func incWithUref() {
        inc()
        if !usercount.addIfHeld(1) {
            kernel.record(.incrementFromZero(kind: "map(uref)", name: name))
        }
    }

    /// bpf_map_inc_not_zero for lookups by ID: takes a user reference too (the result
    /// becomes an fd). Throws ENOENT on a dying map.
    public func incNotZeroWithUref() throws {
        guard objectState != .freed, refcount.incNotZero() else {
            throw fail(.ENOENT, "map '\(name)' is being freed")
        }
        _ = usercount.add(1)
    }

    /// bpf_map_put: -1 refcnt; the last put unpublishes the ID and defers the free.
    public func put() {
        guard objectState != .freed else {
            kernel.record(.putOnDeadObject(kind: "map", name: name))
            return
        }
        let old = refcount.decFromNonZero()
        if old == 0 {
            kernel.record(.putOnDeadObject(kind: "map", name: name))
            return
        }
        guard old == 1 else { return }
        state.store(ObjectState.dying.rawValue, ordering: .releasing)
        let id = self.id
        kernel.log("map", name, serial, id, .lastPut)
        kernel.mapIDR.remove(id)  // bpf_map_free_id
        cbpf_store_release_u64(counters + 2, 0)
        kernel.log("map", name, serial, id, .unpublished)
        kernel.log("map", name, serial, id, .deferred)
        kernel.rcu.callRCU {
            self.kernel.log("map", self.name, self.serial, id, .afterGracePeriod)
            self.freeStorage()  // map->ops->map_free
            self.kernel.liveMaps.subtract(1, ordering: .releasing)
            self.state.store(ObjectState.freed.rawValue, ordering: .releasing)
            self.kernel.log("map", self.name, self.serial, id, .freed)
            self.kernel.unregisterObject(self.serial)
            let me = self.selfRetain
            self.selfRetain = nil
            me?.release()
        }
    }

    /// bpf_map_put_with_uref: drop a user reference (an fd closed, a pin removed). When
    /// the last user reference goes, `releaseUref` runs (prog arrays flush).
    public func putWithUref() {
        let old = usercount.decFromNonZero()
        if old == 0 {
            kernel.record(.putOnDeadObject(kind: "map(uref)", name: name))
        } else if old == 1 {
            releaseUref()
        }
        put()
    }

    // MARK: operations (overridden per type)

    /// map_release_uref: the last user reference went away.
    func releaseUref() {}
    /// map_free: release the storage (after the grace period).
    func freeStorage() {}

    func lookup(key: [UInt8]) throws -> [UInt8] {
        throw fail(.EOPNOTSUPP, "\(type.name) maps do not support lookup")
    }
    func update(key: [UInt8], value: [UInt8], flags: UInt64, fds: FDTable) throws {
        throw fail(.EOPNOTSUPP, "\(type.name) maps do not support update")
    }
    func delete(key: [UInt8]) throws {
        throw fail(.EOPNOTSUPP, "\(type.name) maps do not support delete")
    }

    /// map_get_next_key for index-keyed maps: the index after `key`, or 0 for nil / an
    /// out-of-range key; ENOENT after the last.
    func nextKey(after key: [UInt8]?) throws -> [UInt8] {
        var next: UInt32 = 0
        if let key {
            let i = try indexKey(key)
            if i < maxEntries {
                if i == maxEntries - 1 { throw fail(.ENOENT, "index \(i) is the last key") }
                next = i + 1
            }
        }
        return withUnsafeBytes(of: next.littleEndian) { Array($0) }
    }

    /// array_map_update_elem's checks, shared by every array kind: known flags (EINVAL),
    /// an index below max_entries (E2BIG), never BPF_NOEXIST (EEXIST: elements always exist).
    func arrayUpdateIndex(_ key: [UInt8], flags: UInt64) throws -> UInt32 {
        guard let flag = MapUpdateFlag(rawValue: flags) else {
            throw fail(.EINVAL, "unknown update flags 0x\(String(flags, radix: 16))")
        }
        let i = try indexKey(key)
        guard i < maxEntries else { throw fail(.E2BIG, "index \(i) is not below max_entries \(maxEntries)") }
        if flag == .noExist { throw fail(.EEXIST, "array elements always exist (BPF_NOEXIST)") }
        return i
    }

    /// The u32 index in a 4-byte key.
    func indexKey(_ key: [UInt8]) throws -> UInt32 {
        guard key.count == 4 else {
            throw fail(.EINVAL, "key is \(key.count) bytes; this map's keys are 4-byte indices")
        }
        return UInt32(key[0]) | UInt32(key[1]) << 8 | UInt32(key[2]) << 16 | UInt32(key[3]) << 24
    }
}

/// BPF_MAP_TYPE_ARRAY: fixed slots of `valueSize` bytes, all present from the start.
public final class ArrayMap: BPFMap, @unchecked Sendable {
    let elemSize: Int
    let storage: UnsafeMutableRawPointer
    private let lock = KLock()  // the syscall side's copies are whole; programs read values unlocked

    static func allocCheck(_ attr: MapCreateAttr) throws {
        if attr.maxEntries == 0 || attr.keySize != 4 || attr.valueSize == 0 {
            throw fail(.EINVAL, "array maps need max_entries > 0, key_size 4 and value_size > 0 (got \(attr.maxEntries), \(attr.keySize), \(attr.valueSize))")
        }
        if attr.valueSize > 1 << 20 {
            throw fail(.E2BIG, "value_size \(attr.valueSize) exceeds the lab's 1 MiB limit")
        }
        if UInt64(attr.maxEntries) * UInt64((attr.valueSize + 7) & ~7) > 1 << 30 {
            throw fail(.ENOMEM, "array of \(attr.maxEntries) × \(attr.valueSize) bytes is larger than 1 GiB")
        }
    }

    init(kernel: Kernel, attr: MapCreateAttr) throws {
        elemSize = Int((attr.valueSize + 7) & ~7)
        storage = try allocRecordOrFail(bytes: max(64, elemSize * Int(attr.maxEntries)), what: "array map '\(attr.name)'")
        super.init(kernel: kernel, attr: attr, type: .array)
        record.pointee.values = storage.assumingMemoryBound(to: UInt8.self)
        record.pointee.values_bytes = UInt64(elemSize) * UInt64(attr.maxEntries)
        record.pointee.elem_size = UInt32(elemSize)
    }

    /// The address of element `index`'s value (direct value access: ld_imm64 map_value).
    func valueAddress(_ index: UInt32, offset: UInt32) -> UnsafeMutableRawPointer {
        storage + Int(index) * elemSize + Int(offset)
    }

    override func freeStorage() {
        record.pointee.values = nil
        record.pointee.values_bytes = 0
        storage.deallocate()
    }

    override func lookup(key: [UInt8]) throws -> [UInt8] {
        let i = try indexKey(key)
        guard i < maxEntries else { throw fail(.ENOENT, "index \(i) is not below max_entries \(maxEntries)") }
        return lock.withLock {
            Array(UnsafeRawBufferPointer(start: storage + Int(i) * elemSize, count: Int(valueSize)))
        }
    }

    override func update(key: [UInt8], value: [UInt8], flags: UInt64, fds: FDTable) throws {
        let i = try arrayUpdateIndex(key, flags: flags)
        guard value.count == Int(valueSize) else {
            throw fail(.EINVAL, "value is \(value.count) bytes; this map's values are \(valueSize)")
        }
        lock.withLock {
            value.withUnsafeBytes { storage.advanced(by: Int(i) * elemSize).copyMemory(from: $0.baseAddress!, byteCount: value.count) }
        }
    }

    override func delete(key: [UInt8]) throws {
        throw fail(.EINVAL, "array elements cannot be deleted")
    }
}
