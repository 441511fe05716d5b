// BPFDispatcher.swift — the kernel's bpf_dispatcher: direct calls for known programs.
//
// Mirrors: kernel/bpf/dispatcher.c (bpf_dispatcher_change_prog, bpf_dispatcher_update:
// fill the inactive half of the image, switch, synchronize_rcu before the old half is
// reused; bpf_dispatcher_add_prog/remove_prog with their per-program counts),
// include/linux/bpf.h (BPF_DISPATCHER_MAX = 48, DEFINE_BPF_DISPATCHER(xdp),
// bpf_dispatcher_nop_func: the fallback indirect call), arch/x86/net/bpf_jit_comp.c
// (arch_prepare_bpf_dispatcher: a binary search over sorted targets ending in direct jumps).
//
// The mechanism, its rules and why: BPFKernel.docc/the-kernel-s-bpf-dispatcher.md (the DocC article "The kernel's bpf_dispatcher").
import CBPFShims
import BPFMachineCode

public final class BPFDispatcher: @unchecked Sendable {
    public unowned let kernel: Kernel
    public let name: String
    /// struct bpf_dispatcher (its `active` pointer is what readers follow).
    public let raw: UnsafeMutablePointer<cbpf_dispatcher>
    private let halves: UnsafeMutablePointer<cbpf_dispatcher_half>
    private let lock = KLock()  // d->mutex
    private var targets: [(prog: BPFProg, users: Int)] = []
    private var activeHalf = 0
    /// Image switches so far (each followed by a grace period).
    public private(set) var updates = 0
    /// The generated image in use (the machine engine), freed after the grace period that
    /// follows its replacement.
    private var image: CodeBlock?
    private var imageUsers = 0
    private var generating: Bool { imageUsers > 0 }
    /// Why the last image could not be generated (the fallback, the search, is used then).
    public private(set) var imageError: String?

    /// Whether updates also generate the machine-code image (arch_prepare_bpf_dispatcher),
    /// which `bpfProgRunMachineDispatched` runs. Counted: each user that runs the image holds
    /// one (`useImage` / `releaseImage`); none by default — the native search needs none.
    public var generatesImage: Bool { lock.withLock { generating } }

    public func useImage() {
        lock.withLock {
            imageUsers += 1
            if imageUsers == 1 { update() }
        }
    }

    public func releaseImage() {
        lock.withLock {
            guard imageUsers > 0 else { return }
            imageUsers -= 1
            if imageUsers == 0 { update() }
        }
    }

    /// A dispatcher of its own (the kernel has one per hook: DEFINE_BPF_DISPATCHER(xdp) is
    /// `Kernel.xdpDispatcher`); the lab's machine-code designs take one each so their
    /// tables do not compete with the native designs' for the 48 slots.
    public convenience init(kernel: Kernel, name: String) {
        self.init(kernel: kernel, name: name, registered: true)
    }

    init(kernel: Kernel, name: String, registered: Bool) {
        self.kernel = kernel
        self.name = name
        raw = allocRecord(bytes: 64).bindMemory(to: cbpf_dispatcher.self, capacity: 1)
        raw.initialize(to: cbpf_dispatcher(active: nil, image: nil))
        let bytes = MemoryLayout<cbpf_dispatcher_half>.stride * 2
        halves = allocRecord(bytes: (bytes + 63) & ~63).bindMemory(to: cbpf_dispatcher_half.self, capacity: 2)
        halves.initialize(repeating: cbpf_dispatcher_half(), count: 2)
        if registered { kernel.registerDispatcher(self) }
    }

    deinit {
        if let image { CodeRegion.shared?.free(image) }
        raw.deallocate()
        halves.deallocate()
    }

    /// bpf_dispatcher_change_prog(from, to): `to` becomes a known target (if there is
    /// room; otherwise it is simply called indirectly), `from` loses one use.
    /// Returns whether `to` is now directly called.
    @discardableResult
    public func change(from: BPFProg?, to: BPFProg?) -> Bool {
        lock.withLock {
            var changed = false
            var dropped: BPFProg?
            if let from, let i = targets.firstIndex(where: { $0.prog === from }) {
                targets[i].users -= 1
                if targets[i].users == 0 {
                    dropped = targets.remove(at: i).prog
                    changed = true
                }
            }
            var hit = false
            if let to { hit = add(to, &changed) }
            if changed { update() }
            dropped?.put()  // the table's reference, after the switch and its grace period
            return hit
        }
    }

    private func add(_ p: BPFProg, _ changed: inout Bool) -> Bool {
        if let i = targets.firstIndex(where: { $0.prog === p }) {
            targets[i].users += 1
            return true
        }
        guard targets.count < Int(CBPF_DISPATCHER_MAX) else { return false }
        p.inc()  // the table's reference
        targets.append((p, 1))
        changed = true
        return true
    }

    /// bpf_dispatcher_update: fill the inactive half, switch, wait for readers of the old.
    private func update() {
        let next = 1 - activeHalf
        let h = halves + next
        let sorted = targets.map { UInt(bitPattern: $0.prog.raw) }.sorted()
        h.pointee.num = UInt32(sorted.count)
        withUnsafeMutableBytes(of: &h.pointee.progs) { buf in
            let slots = buf.bindMemory(to: UInt.self)
            for i in 0..<slots.count { slots[i] = i < sorted.count ? sorted[i] : 0 }
        }
        cbpf_rcu_assign_pointer(UnsafeMutableRawPointer(raw).assumingMemoryBound(to: UnsafeMutableRawPointer?.self),
                                targets.isEmpty ? nil : UnsafeMutableRawPointer(h))
        // The machine image for the same targets, published the same way.
        let old = image
        image = nil
        if generating, let region = CodeRegion.shared {
            do {
                let ts = targets.map { t in
                    DispatcherImage.Target(key: UInt64(UInt(bitPattern: t.prog.raw.pointee.insnsi)),
                                           function: UInt64(UInt(bitPattern: unsafeBitCast(cbpf_text_func(cbpf_prog_text(t.prog.raw)), to: UnsafeRawPointer.self))))
                }
                image = try DispatcherImage.build(ts, retpolines: Retpoline.mode.enabled, region: region)
                imageError = nil
            } catch {
                imageError = "\(error)"
            }
        }
        // Through a raw pointer to the field: an inout access to raw.pointee would be a Swift
        // write of the whole record, which readers load atomically.
        let imageSlot = (UnsafeMutableRawPointer(raw) + MemoryLayout<cbpf_dispatcher>.offset(of: \cbpf_dispatcher.image)!)
            .assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        cbpf_rcu_assign_pointer(imageSlot, image.map { UnsafeMutableRawPointer($0.rx) })
        activeHalf = next
        updates += 1
        kernel.rcu.synchronize()  // the old half may be rewritten only when no reader is in it
        if let old { CodeRegion.shared?.free(old) }  // no reader can be in the old image now
    }

    /// The programs called directly, sorted by address.
    public var knownTargets: [BPFProg] { lock.withLock { targets.map(\.prog) } }
    /// Whether `prog` is a known target.
    public func isKnown(_ prog: BPFProg) -> Bool { lock.withLock { targets.contains { $0.prog === prog } } }

    /// Drops every target (the lab's teardown; the kernel's dispatcher lives forever).
    public func reset() {
        let old: [BPFProg] = lock.withLock {
            let o = targets.map(\.prog)
            targets.removeAll()
            update()
            return o
        }
        for p in old { p.put() }
    }
}
