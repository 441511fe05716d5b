// HashMap.swift — BPF_MAP_TYPE_HASH, preallocated.
//
// Mirrors: kernel/bpf/hashtab.c (htab_map_alloc_check, htab_map_alloc with prealloc,
// htab_map_lookup_elem, htab_map_update_elem, htab_map_delete_elem,
// htab_map_get_next_key). The table itself is C (BPFPrograms/htab.c), because programs
// reach it from the interpreter's helpers as well as from the syscall side; see
// bpf_htab.h for what is and is not the kernel's behaviour (elements reused at once, as
// the kernel's preallocated htab does; one extra element instead of one per CPU).
//
// The mechanism, its rules and why: BPFKernel.docc/bytecode-and-the-interpreter.md (the DocC article "Bytecode and the interpreter").
import CBPFShims
import BPFPrograms

public final class HashMap: BPFMap, @unchecked Sendable {
    static func allocCheck(_ attr: MapCreateAttr) throws {
        if attr.maxEntries == 0 || attr.keySize == 0 || attr.valueSize == 0 {
            throw fail(.EINVAL, "hash maps need max_entries, key_size and value_size > 0 (got \(attr.maxEntries), \(attr.keySize), \(attr.valueSize))")
        }
        if attr.keySize > 512 {
            throw fail(.E2BIG, "key_size \(attr.keySize) exceeds MAX_BPF_STACK (512): a program could not hold the key")
        }
        if attr.valueSize > 1 << 20 {
            throw fail(.E2BIG, "value_size \(attr.valueSize) exceeds the lab's 1 MiB limit")
        }
        if UInt64(attr.maxEntries) * UInt64((attr.valueSize + 7) & ~7 + (attr.keySize + 15) & ~7) > 1 << 30 {
            throw fail(.ENOMEM, "hash map of \(attr.maxEntries) elements is larger than 1 GiB")
        }
    }

    init(kernel: Kernel, attr: MapCreateAttr) throws {
        super.init(kernel: kernel, attr: attr, type: .hash)
        if cbpf_htab_create(record) != 0 {
            throw fail(.ENOMEM, "cannot allocate hash map '\(attr.name)' of \(attr.maxEntries) elements")
        }
    }

    override func freeStorage() { cbpf_htab_destroy(record) }

    /// Elements in use.
    public var count: Int { Int(cbpf_htab_count(record)) }

    private func checkKey(_ key: [UInt8]) throws {
        guard key.count == Int(keySize) else {
            throw fail(.EINVAL, "key is \(key.count) bytes; this map's keys are \(keySize)")
        }
    }

    override func lookup(key: [UInt8]) throws -> [UInt8] {
        try checkKey(key)
        var out = [UInt8](repeating: 0, count: Int(valueSize))
        let r = out.withUnsafeMutableBufferPointer { o in key.withUnsafeBufferPointer { cbpf_htab_copy_value(record, $0.baseAddress, o.baseAddress) } }
        guard r == 0 else { throw fail(.ENOENT, "no element with this key") }
        return out
    }

    override func update(key: [UInt8], value: [UInt8], flags: UInt64, fds: FDTable) throws {
        guard MapUpdateFlag(rawValue: flags) != nil else {
            throw fail(.EINVAL, "unknown update flags 0x\(String(flags, radix: 16))")
        }
        try checkKey(key)
        guard value.count == Int(valueSize) else {
            throw fail(.EINVAL, "value is \(value.count) bytes; this map's values are \(valueSize)")
        }
        let r = key.withUnsafeBufferPointer { k in value.withUnsafeBufferPointer { cbpf_htab_update(record, k.baseAddress, $0.baseAddress, flags) } }
        switch r {
        case 0: return
        case -Int64(Errno.EEXIST.rawValue): throw fail(.EEXIST, "the key exists (BPF_NOEXIST)")
        case -Int64(Errno.ENOENT.rawValue): throw fail(.ENOENT, "no element with this key (BPF_EXIST)")
        case -Int64(Errno.E2BIG.rawValue): throw fail(.E2BIG, "the map is full (\(maxEntries) elements)")
        default: throw fail(.EINVAL, "update failed (\(r))")
        }
    }

    override func delete(key: [UInt8]) throws {
        try checkKey(key)
        let r = key.withUnsafeBufferPointer { cbpf_htab_delete(record, $0.baseAddress) }
        guard r == 0 else { throw fail(.ENOENT, "no element with this key") }
    }

    override func nextKey(after key: [UInt8]?) throws -> [UInt8] {
        if let key { try checkKey(key) }
        var out = [UInt8](repeating: 0, count: Int(keySize))
        let r = out.withUnsafeMutableBufferPointer { o in
            if let key { return key.withUnsafeBufferPointer { cbpf_htab_next_key(record, $0.baseAddress, o.baseAddress) } }
            return cbpf_htab_next_key(record, nil, o.baseAddress)
        }
        guard r == 0 else { throw fail(.ENOENT, "no key after this one") }
        return out
    }
}
