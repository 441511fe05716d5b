// StaticKey.swift — static keys: branches that cost nothing until they are switched on.
//
// Mirrors: include/linux/jump_label.h and kernel/jump_label.c (struct static_key,
// static_key_slow_inc/dec, static_branch_unlikely, the jump entries patched one by one by
// arch_jump_label_transform), kernel/bpf/syscall.c's bpf_stats_enabled_key (the first
// client), and the BPF static-keys proposal of seed 000 (a key as a map: flipped from user
// space by a map update, from a program by a kfunc; many branch sites per key).
//
// The mechanism, its rules and why: BPFKernel.docc/static-keys.md (the DocC article "Static keys").
import CBPFShims
import BPFPrograms
import BPFMachineCode

public final class StaticKey: @unchecked Sendable {
    public let name: String
    private let lock = KLock()  // jump_label_mutex
    private var count = 0
    private var sites: [UnsafeMutablePointer<cbpf_static_site>] = []
    /// Sites in generated machine code: a real 5-byte NOP, patched into a jmp and back.
    private var patched: [PatchSite] = []
    /// Flips of a machine-code site that failed (membarrier refused): the site kept its state.
    public private(set) var patchFailures = 0
    /// Called after each site is flipped, with the site's index (tests watch the
    /// one-at-a-time order through it). Runs under the key's lock.
    public var onSiteFlipped: ((Int, Bool) -> Void)?

    public init(name: String) { self.name = name }

    /// bpf_stats_enabled_key: BPF_PROG_RUN's stats branch and the trampoline's.
    public static let bpfStats: StaticKey = {
        let k = StaticKey(name: "bpf_stats_enabled_key")
        k.register(cbpf_stats_site_prog_run_ptr())
        k.register(cbpf_stats_site_tracing_ptr())
        return k
    }()

    /// static_key_slow_inc: one more enable; the first switches every site on.
    public func inc() {
        lock.withLock {
            count += 1
            if count == 1 { flipAll(on: true) }
        }
    }

    /// static_key_slow_dec: one enable fewer; the last switches every site off.
    /// EINVAL if the key has no enable to drop (the kernel WARNs and ignores it).
    public func dec() throws {
        try lock.withLock {
            guard count > 0 else { throw fail(.EINVAL, "static key '\(name)' is not enabled") }
            count -= 1
            if count == 0 { flipAll(on: false) }
        }
    }

    /// The number of outstanding enables.
    public var enableCount: Int { lock.withLock { count } }
    public var isEnabled: Bool { enableCount > 0 }
    /// The number of branch sites.
    public var siteCount: Int { lock.withLock { sites.count + patched.count } }

    private func flipAll(on: Bool) {
        for (i, s) in sites.enumerated() {
            cbpf_static_site_set(s, on ? 1 : 0)  // arch_jump_label_transform, one site
            onSiteFlipped?(i, on)
        }
        for (i, p) in patched.enumerated() {
            do { try p.set(jump: on) } catch { patchFailures += 1 }  // text_poke_bp, one site
            onSiteFlipped?(sites.count + i, on)
        }
    }

    /// A machine-code site of a program being loaded: set to the key's state before the
    /// program is published (no thread runs it yet).
    func register(patched site: PatchSite) {
        lock.withLock {
            // Cannot fail once the image was installed (the same membarrier succeeded then).
            if (try? site.setEarly(jump: count > 0)) == nil { patchFailures += 1 }
            patched.append(site)
        }
    }

    func unregister(patched site: PatchSite) {
        lock.withLock { patched.removeAll { $0 === site } }
    }

    /// A new branch site (a program using the key was loaded): it starts in the key's state.
    func register(_ site: UnsafeMutablePointer<cbpf_static_site>) {
        lock.withLock {
            cbpf_static_site_set(site, count > 0 ? 1 : 0)
            sites.append(site)
        }
    }

    /// The program owning the site is being freed.
    func unregister(_ site: UnsafeMutablePointer<cbpf_static_site>) {
        lock.withLock { sites.removeAll { $0 == site } }
    }
}

/// A static key as a map (seed 000's "map API"): key size 4, value size 4, one entry.
/// Updating element 0 to 1 is user space's enable, to 0 its disable; a program flips the
/// key with the `staticKeySet` kfunc, which is the programs' enable. Each of the two
/// clients holds at most one enable, so the key is on while either wants it.
public final class StaticKeyMap: BPFMap, @unchecked Sendable {
    public let key: StaticKey
    private let lock = KLock()
    private var userEnabled = false
    private var progEnabled = false

    static func allocCheck(_ attr: MapCreateAttr) throws {
        if attr.keySize != 4 || attr.valueSize != 4 || attr.maxEntries != 1 {
            throw fail(.EINVAL, "static-key maps have key_size 4, value_size 4 and max_entries 1 (got \(attr.keySize), \(attr.valueSize), \(attr.maxEntries))")
        }
    }

    init(kernel: Kernel, attr: MapCreateAttr) {
        key = StaticKey(name: attr.name.isEmpty ? "static_key" : attr.name)
        super.init(kernel: kernel, attr: attr, type: .staticKey)
    }

    override func freeStorage() {
        lock.withLock {
            if userEnabled { try? key.dec() }
            if progEnabled { try? key.dec() }
            userEnabled = false
            progEnabled = false
        }
    }

    override func lookup(key k: [UInt8]) throws -> [UInt8] {
        guard try indexKey(k) == 0 else { throw fail(.ENOENT, "a static-key map has only element 0") }
        let v: UInt32 = key.isEnabled ? 1 : 0
        return withUnsafeBytes(of: v.littleEndian) { Array($0) }
    }

    override func update(key k: [UInt8], value: [UInt8], flags: UInt64, fds: FDTable) throws {
        if flags != MapUpdateFlag.any.rawValue {
            throw fail(.EINVAL, "static-key maps take only BPF_ANY (got flags 0x\(String(flags, radix: 16)))")
        }
        guard try indexKey(k) == 0 else { throw fail(.E2BIG, "a static-key map has only element 0") }
        guard value.count == 4 else { throw fail(.EINVAL, "value is \(value.count) bytes; a static key's value is a 4-byte 0 or 1") }
        let v = UInt32(value[0]) | UInt32(value[1]) << 8 | UInt32(value[2]) << 16 | UInt32(value[3]) << 24
        guard v <= 1 else { throw fail(.EINVAL, "a static key is set to 0 or 1, not \(v)") }
        try set(user: true, on: v == 1)
    }

    override func delete(key: [UInt8]) throws {
        throw fail(.EINVAL, "static-key elements cannot be deleted")
    }

    /// One client's enable: idempotent per client.
    func set(user: Bool, on: Bool) throws {
        try lock.withLock {
            let was = user ? userEnabled : progEnabled
            guard was != on else { return }
            if on { key.inc() } else { try key.dec() }
            if user { userEnabled = on } else { progEnabled = on }
        }
    }
}

/// The kfunc behind `Step.staticKeySet`: arg = [StaticKeyMap (unretained), 0/1]. The
/// program holds the map (it is one of its used maps), so the map outlives every run.
let staticKeySetKfunc: bpfp_helper_fn = { _, arg in
    let words = arg!.assumingMemoryBound(to: UInt.self)
    let map = Unmanaged<StaticKeyMap>.fromOpaque(UnsafeRawPointer(bitPattern: words[0])!).takeUnretainedValue()
    do {
        try map.set(user: false, on: words[1] != 0)
        return 0
    } catch {
        return UInt32(bitPattern: -Errno.EINVAL.rawValue)
    }
}
