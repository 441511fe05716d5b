// PerCPUArrayMap.swift — BPF_MAP_TYPE_PERCPU_ARRAY: one copy of every element per CPU.
//
// Mirrors: kernel/bpf/arraymap.c (percpu_array_map_lookup_elem: this CPU's copy;
// bpf_percpu_array_copy: the syscall's lookup returns every CPU's value, each rounded up
// to 8 bytes; bpf_percpu_array_update: the syscall writes every CPU's copy). The lab sizes
// per-CPU data for CBPF_NR_CPUS (64) CPUs.
import CBPFShims

public final class PerCPUArrayMap: BPFMap, @unchecked Sendable {
    let elemSize: Int
    let storage: UnsafeMutableRawPointer
    let bytes: Int

    static func allocCheck(_ attr: MapCreateAttr) throws {
        if attr.maxEntries == 0 || attr.keySize != 4 || attr.valueSize == 0 {
            throw fail(.EINVAL, "per-CPU arrays need max_entries > 0, key_size 4 and value_size > 0 (got \(attr.maxEntries), \(attr.keySize), \(attr.valueSize))")
        }
        if attr.valueSize > 32768 {
            throw fail(.E2BIG, "value_size \(attr.valueSize) exceeds PCPU_MIN_UNIT_SIZE (32 KiB)")
        }
        if UInt64(attr.maxEntries) * UInt64((attr.valueSize + 7) & ~7) * UInt64(CBPF_NR_CPUS) > 1 << 30 {
            throw fail(.ENOMEM, "per-CPU array of \(attr.maxEntries) × \(attr.valueSize) bytes × \(CBPF_NR_CPUS) CPUs is larger than 1 GiB")
        }
    }

    /// CPUs each element has a copy for.
    public static let cpus = Int(CBPF_NR_CPUS)

    init(kernel: Kernel, attr: MapCreateAttr) throws {
        elemSize = Int((attr.valueSize + 7) & ~7)
        bytes = elemSize * Int(attr.maxEntries) * PerCPUArrayMap.cpus
        storage = try allocRecordOrFail(bytes: max(64, bytes), what: "per-CPU array '\(attr.name)'")
        super.init(kernel: kernel, attr: attr, type: .percpuArray)
        record.pointee.values = storage.assumingMemoryBound(to: UInt8.self)
        record.pointee.values_bytes = UInt64(bytes)
        record.pointee.elem_size = UInt32(elemSize)
    }

    override func freeStorage() {
        record.pointee.values = nil
        record.pointee.values_bytes = 0
        storage.deallocate()
    }

    private func slot(_ cpu: Int, _ i: UInt32) -> UnsafeMutableRawPointer {
        storage + (cpu * Int(maxEntries) + Int(i)) * elemSize
    }

    /// Every CPU's value, each padded to 8 bytes (what BPF_MAP_LOOKUP_ELEM returns).
    override func lookup(key: [UInt8]) throws -> [UInt8] {
        let i = try indexKey(key)
        guard i < maxEntries else { throw fail(.ENOENT, "index \(i) is not below max_entries \(maxEntries)") }
        var out: [UInt8] = []
        out.reserveCapacity(elemSize * PerCPUArrayMap.cpus)
        for c in 0..<PerCPUArrayMap.cpus {
            out += UnsafeRawBufferPointer(start: slot(c, i), count: elemSize)
        }
        return out
    }

    /// The value for every CPU: either one value (copied to each CPU) or all of them
    /// (value_size rounded to 8, per CPU), as bpf_percpu_array_update takes.
    override func update(key: [UInt8], value: [UInt8], flags: UInt64, fds: FDTable) throws {
        let i = try arrayUpdateIndex(key, flags: flags)
        let all = value.count == elemSize * PerCPUArrayMap.cpus
        guard all || value.count == Int(valueSize) else {
            throw fail(.EINVAL, "value is \(value.count) bytes; give \(valueSize) (every CPU) or \(elemSize * PerCPUArrayMap.cpus) (\(PerCPUArrayMap.cpus) CPUs × \(elemSize))")
        }
        value.withUnsafeBytes { v in
            for c in 0..<PerCPUArrayMap.cpus {
                slot(c, i).copyMemory(from: v.baseAddress! + (all ? c * elemSize : 0), byteCount: Int(valueSize))
            }
        }
    }

    override func delete(key: [UInt8]) throws {
        throw fail(.EINVAL, "array elements cannot be deleted")
    }
}
