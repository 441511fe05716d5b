// ProgArray.swift — BPF_MAP_TYPE_PROG_ARRAY: the table tail calls jump through.
//
// Mirrors: kernel/bpf/arraymap.c (prog_array_map_alloc, fd_array_map_alloc_check,
// bpf_fd_array_map_update_elem, fd_array_map_delete_elem, prog_fd_array_get_ptr,
// prog_fd_array_put_ptr, prog_fd_array_sys_lookup_elem, prog_array_map_clear(_deferred),
// prog_array_map_poke_track/untrack/run), kernel/bpf/core.c (__bpf_prog_map_compatible).
//
// The mechanism, its rules and why: BPFKernel.docc/prog-arrays-and-tail-calls.md (the DocC article "Prog arrays and tail calls").
import CBPFShims
import BPFPrograms
import Synchronization

public final class ProgArray: BPFMap, @unchecked Sendable {
    /// The hot record tail calls read.
    public let array: UnsafeMutablePointer<cbpf_array>
    private let slotsLock = KLock()  // serialises updates and poke runs (map->poke_mutex)
    private var ownerType: ProgType?
    private var ownerJited = false
    private var ownerMachine = false
    private var ownerFrags = false
    private var pokes: [(desc: UnsafeMutablePointer<bpfp_poke_desc>, prog: ObjectIdentifier)] = []
    private var machinePokes: [(poke: MachineTailPoke, prog: ObjectIdentifier)] = []
    /// Generated-code pokes that failed (text_poke_bp's core sync refused): the auditor's.
    public private(set) var pokeFailures = 0
    private let arrayBytes: Int
    /// Flushes queued and not yet run (each holds a reference on the array).
    let pendingFlushes = Atomic<Int>(0)

    static func allocCheck(_ attr: MapCreateAttr) throws {
        if attr.maxEntries == 0 || attr.keySize != 4 || attr.valueSize != 4 {
            throw fail(.EINVAL, "prog arrays need max_entries > 0, key_size 4 and value_size 4 (got \(attr.maxEntries), \(attr.keySize), \(attr.valueSize))")
        }
        if attr.maxEntries > 1 << 24 {
            throw fail(.ENOMEM, "prog array of \(attr.maxEntries) slots is larger than the lab allows (16M)")
        }
    }

    init(kernel: Kernel, attr: MapCreateAttr) throws {
        arrayBytes = MemoryLayout<cbpf_array>.stride + Int(attr.maxEntries) * MemoryLayout<UnsafeMutableRawPointer>.stride
        array = try allocRecordOrFail(bytes: arrayBytes, what: "prog array '\(attr.name)'").bindMemory(to: cbpf_array.self, capacity: 1)
        var mask: UInt32 = 1
        while mask < attr.maxEntries { mask <<= 1 }
        array.pointee.max_entries = attr.maxEntries
        array.pointee.index_mask = mask - 1
        array.pointee.magic = CBPF_ARRAY_MAGIC
        super.init(kernel: kernel, attr: attr, type: .progArray)
        record.pointee.progs = array
        array.pointee.owner = UnsafeMutableRawPointer(Unmanaged.passUnretained(self).toOpaque())
    }

    override func freeStorage() {
        // The flush emptied the array unless it never had a user reference; put what is left.
        for i in 0..<maxEntries {
            if let p = cbpf_array_xchg(array, i, nil) { BPFProg.fromRaw(p).put() }
        }
        kernel.freeRecord(UnsafeMutableRawPointer(array), bytes: arrayBytes)
    }

    // MARK: the owner rule

    /// The type programs are compared under: an extension counts as its target's type.
    /// (resolve_prog_type: the target's type saved at load, which outlives the move of
    /// dst_prog into the extension's first link.)
    static func effectiveType(_ p: BPFProg) -> ProgType {
        p.type == .ext ? (p.savedDstType ?? p.type) : p.type
    }

    /// __bpf_prog_map_compatible for a program being loaded with this array among its
    /// maps, without claiming: EINVAL if its kind differs from the owner's.
    func checkCompatible(type: ProgType, jited: Bool, machine: Bool, frags: Bool, name progName: String) throws {
        try slotsLock.withLock {
            try checkOwner(type: type, jited: jited, machine: machine, frags: frags, progName: progName)
        }
    }

    private func checkOwner(type t: ProgType, jited: Bool, machine: Bool, frags: Bool, progName: String) throws {
        guard let ot = ownerType else { return }
        if ot != t {
            throw fail(.EINVAL, "prog array '\(name)' belongs to \(ot.name) programs; '\(progName)' is \(t.name)")
        }
        if ownerJited != jited {
            throw fail(.EINVAL, "prog array '\(name)' holds \(ownerJited ? "JIT-ed" : "interpreted") programs; '\(progName)' is \(jited ? "JIT-ed" : "interpreted")")
        }
        if ownerFrags != frags {
            throw fail(.EINVAL, "prog array '\(name)' holds programs \(ownerFrags ? "with" : "without") BPF_F_XDP_HAS_FRAGS; '\(progName)' is \(frags ? "with" : "without")")
        }
        // The lab's rule beside the kernel's jited one, for the same reason: a generated tail
        // call jumps past the target's generated prologue, which only the machine engine's
        // programs have, and keeps the count in that frame.
        if ownerMachine != machine {
            throw fail(.EINVAL, "prog array '\(name)' holds \(ownerMachine ? "machine-code" : "native") programs; '\(progName)' is \(machine ? "machine code" : "native")")
        }
    }

    /// Claims ownership for a loaded program's kind if the array has no owner yet.
    func claimOwner(type: ProgType, jited: Bool, machine: Bool, frags: Bool) {
        slotsLock.withLock {
            if ownerType == nil {
                ownerType = type
                ownerJited = jited
                ownerMachine = machine
                ownerFrags = frags
            }
        }
    }

    private func checkCompatibleLocked(_ prog: BPFProg) throws {
        if prog.type == .ext {
            throw fail(.EINVAL, "extension programs cannot be tail-call targets")
        }
        try checkOwner(type: ProgArray.effectiveType(prog), jited: prog.jited, machine: prog.machineCode, frags: prog.hasFrags, progName: prog.name)
    }

    /// The owner's program type, if fixed.
    public var owner: (type: ProgType, jited: Bool)? {
        slotsLock.withLock { ownerType.map { ($0, ownerJited) } }
    }

    // MARK: element operations (user space)

    /// bpf_fd_array_map_update_elem: `value` is a program fd (u32).
    override func update(key: [UInt8], value: [UInt8], flags: UInt64, fds: FDTable) throws {
        if flags != MapUpdateFlag.any.rawValue {
            throw fail(.EINVAL, "prog array updates take only BPF_ANY (got flags 0x\(String(flags, radix: 16)))")
        }
        let index = try indexKey(key)
        if index >= maxEntries {
            throw fail(.E2BIG, "index \(index) is not below max_entries \(maxEntries)")
        }
        guard value.count == 4 else {
            throw fail(.EINVAL, "value is \(value.count) bytes; a prog array value is a 4-byte program fd")
        }
        let fd = Int32(bitPattern: UInt32(value[0]) | UInt32(value[1]) << 8 | UInt32(value[2]) << 16 | UInt32(value[3]) << 24)
        let prog = try fds.getProg(fd)  // prog_fd_array_get_ptr: the slot's reference
        do {
            try insert(prog, at: index)
        } catch {
            prog.put()  // getProg
            throw error
        }
    }

    /// Puts `prog` (whose reference the slot takes over) into slot `index`.
    /// EINVAL if the owner rule refuses it, EBUSY if it is extended.
    public func insert(_ prog: BPFProg, at index: UInt32) throws {
        precondition(index < maxEntries)
        let old: UnsafeMutablePointer<cbpf_prog>? = try slotsLock.withLock {
            try checkCompatibleLocked(prog)
            // bpf_prog_map_compatible claims the owner as it checks — before
            // prog_fd_array_get_ptr's extended-program test: an insert refused with EBUSY
            // below has still fixed the array's owner (as the kernel's does).
            if ownerType == nil {
                ownerType = ProgArray.effectiveType(prog)
                ownerJited = prog.jited
                ownerMachine = prog.machineCode
                ownerFrags = prog.hasFrags
            }
            // The freplace interlock: checked and counted under the program's ext lock, so
            // an extension attaching at the same moment sees either the membership or not.
            try prog.extLock.withLock {
                if prog.extensionAttached {
                    throw fail(.EBUSY, "'\(prog.name)' is extended by a freplace program and cannot be a tail-call target")
                }
                prog.tailCallMemberships.add(1, ordering: .releasing)
            }
            let old = cbpf_array_xchg(array, index, prog.raw)
            pokeRun(index: index, old: old, new: prog.raw)
            return old
        }
        if let old {
            let o = BPFProg.fromRaw(old)
            o.tailCallMemberships.subtract(1, ordering: .relaxed)
            o.put()  // the slot's reference, after the exchange
        }
    }

    /// fd_array_map_delete_elem.
    override func delete(key: [UInt8]) throws {
        let index = try indexKey(key)
        if index >= maxEntries {
            throw fail(.E2BIG, "index \(index) is not below max_entries \(maxEntries)")
        }
        guard try remove(at: index) else {
            throw fail(.ENOENT, "slot \(index) of prog array '\(name)' is empty")
        }
    }

    /// Empties slot `index`; false if it was already empty.
    @discardableResult
    public func remove(at index: UInt32) throws -> Bool {
        let old: UnsafeMutablePointer<cbpf_prog>? = slotsLock.withLock {
            let old = cbpf_array_xchg(array, index, nil)
            if old != nil { pokeRun(index: index, old: old, new: nil) }
            return old
        }
        guard let old else { return false }
        let o = BPFProg.fromRaw(old)
        o.tailCallMemberships.subtract(1, ordering: .relaxed)
        o.put()  // the slot's reference
        return true
    }

    /// prog_fd_array_sys_lookup_elem: the ID of the program in slot `index`.
    override func lookup(key: [UInt8]) throws -> [UInt8] {
        let index = try indexKey(key)
        guard index < maxEntries else {
            throw fail(.ENOENT, "index \(index) is not below max_entries \(maxEntries)")
        }
        let id: UInt32 = try slotsLock.withLock {
            guard let p = cbpf_array_slot(array, index) else {
                throw fail(.ENOENT, "slot \(index) of prog array '\(name)' is empty")
            }
            return p.pointee.aux.pointee.id
        }
        return withUnsafeBytes(of: id.littleEndian) { Array($0) }
    }

    /// The programs in the slots (for display and tests).
    public var members: [UInt32: BPFProg] {
        slotsLock.withLock {
            var r: [UInt32: BPFProg] = [:]
            for i in 0..<maxEntries {
                if let p = cbpf_array_slot(array, i) { r[i] = BPFProg.fromRaw(p) }
            }
            return r
        }
    }

    // MARK: the user-reference flush

    /// prog_array_map_clear: the last user reference went. Flush every slot — deferred, as
    /// the kernel defers it to a work item — holding the map alive until it has run.
    override func releaseUref() {
        inc()  // held by the deferred flush; put below
        pendingFlushes.add(1, ordering: .relaxed)
        kernel.rcu.callRCU {
            self.pendingFlushes.subtract(1, ordering: .relaxed)
            for i in 0..<self.maxEntries { _ = try? self.remove(at: i) }
            self.kernel.log("map", self.name, self.serial, self.id, .flushed)
            self.put()  // the inc above
        }
    }

    // MARK: direct tail calls

    /// prog_array_map_poke_track: a program with a direct tail call through this array
    /// registers its descriptor; the current slot content is patched in at once.
    func trackPoke(_ desc: UnsafeMutablePointer<bpfp_poke_desc>, owner: BPFProg) {
        slotsLock.withLock {
            pokes.append((desc, ObjectIdentifier(owner)))
            let cur = desc.pointee.key < maxEntries ? cbpf_array_slot(array, desc.pointee.key) : nil
            bpfp_poke_set(desc, cur)
        }
    }

    /// The same for a generated direct tail call (bpf_tail_call_direct_fixup): the slot's
    /// program patched in before the program can run.
    func trackPoke(_ poke: MachineTailPoke, owner: BPFProg) {
        slotsLock.withLock {
            machinePokes.append((poke, ObjectIdentifier(owner)))
            if poke.key < maxEntries, let cur = cbpf_array_slot(array, poke.key) {
                poked { try poke.set(cur) }
            }
        }
    }

    /// prog_array_map_poke_untrack: the program is being freed.
    func untrackPoke(owner: BPFProg) {
        slotsLock.withLock {
            pokes.removeAll { $0.prog == ObjectIdentifier(owner) }
            machinePokes.removeAll { $0.prog == ObjectIdentifier(owner) }
        }
    }

    private func poked(_ body: () throws -> Void) {
        do { try body() } catch { pokeFailures += 1 }
    }

    /// prog_array_map_poke_run: re-point every direct jump for slot `index`. Called with
    /// the slots lock held, after the exchange.
    private func pokeRun(index: UInt32, old: UnsafeMutablePointer<cbpf_prog>?, new: UnsafeMutablePointer<cbpf_prog>?) {
        var needSync = false
        for (desc, _) in pokes where desc.pointee.key == index {
            if new != nil {
                bpfp_poke_set(desc, new)       // insert / replace: jump to the new target
            } else {
                bpfp_poke_bypass(desc)         // delete: restore the bypass first
                needSync = true
            }
        }
        for (poke, _) in machinePokes where poke.key == index {
            if let new {
                poked { try poke.set(new) }    // the target site, then the bypass to a NOP
            } else {
                poked { try poke.restoreBypass() }
                needSync = true
            }
        }
        if needSync {
            kernel.rcu.synchronize()           // no CPU can still be past the bypass check
            for (desc, _) in pokes where desc.pointee.key == index {
                bpfp_poke_clear_target(desc)   // then clear the old target
            }
            for (poke, _) in machinePokes where poke.key == index {
                poked { try poke.clearTarget() }
            }
        }
    }
}
