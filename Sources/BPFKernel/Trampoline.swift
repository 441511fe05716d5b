// Trampoline.swift — trampolines and program extensions, and the text poking under them.
//
// Mirrors: kernel/bpf/trampoline.c (bpf_trampoline_lookup, bpf_trampoline_link_prog /
// unlink_prog with their EBUSY/E2BIG rules, bpf_trampoline_update: build a new image,
// switch, free the old one after the readers are gone), include/linux/bpf.h
// (BPF_MAX_TRAMP_LINKS, enum bpf_tramp_prog_type), arch/x86/net/bpf_jit_comp.c
// (bpf_arch_text_poke: patch only if the site holds the expected old target, else EBUSY).
//
// The mechanism, its rules and why: BPFKernel.docc/trampolines-and-extensions.md (the DocC article "Trampolines and extensions").
import BPFMachineCode
import CBPFShims
import BPFPrograms

/// enum bpf_tramp_prog_type.
public enum TrampolineKind: Int, Sendable, CaseIterable {
    case fentry, modifyReturn, fexit, replace

    init?(_ t: AttachType) {
        switch t {
        case .traceFentry: self = .fentry
        case .traceFexit: self = .fexit
        case .modifyReturn: self = .modifyReturn
        default: return nil
        }
    }

    var attachType: AttachType {
        switch self {
        case .fentry: return .traceFentry
        case .fexit: return .traceFexit
        case .modifyReturn: return .modifyReturn
        case .replace: return .unspecified
        }
    }
}

/// BPF_MAX_TRAMP_LINKS.
public let maxTrampolineLinks = Int(CBPF_MAX_TRAMP_LINKS)

struct TrampolineKey: Hashable {
    let target: ObjectIdentifier
    let function: Int
}

/// What a trampoline wraps: a function of a loaded program, or a kernel function.
public enum TrampolineTarget: @unchecked Sendable {
    case prog(BPFProg, function: Int)
    case kernel(KernelFunction)

    var key: TrampolineKey {
        switch self {
        case let .prog(p, f): return TrampolineKey(target: ObjectIdentifier(p), function: f)
        case let .kernel(k): return TrampolineKey(target: ObjectIdentifier(k), function: 0)
        }
    }
    var text: UnsafeMutablePointer<cbpf_text> {
        switch self {
        case let .prog(p, f): return p.functions[f].text
        case let .kernel(k): return k.text
        }
    }
    /// "function of program" for messages.
    var name: String {
        switch self {
        case let .prog(p, f): return "'\(p.functions[f].name)' of '\(p.name)'"
        case let .kernel(k): return "kernel function '\(k.name)'"
        }
    }
    var prog: BPFProg? { if case let .prog(p, _) = self { return p } else { return nil } }
}

func sameFunc(_ a: cbpf_func_t?, _ b: cbpf_func_t?) -> Bool {
    unsafeBitCast(a, to: UInt.self) == unsafeBitCast(b, to: UInt.self)
}

/// bpf_arch_text_poke: patch `site` from `expected` to `new`. EBUSY (and nothing changes)
/// when the site does not hold `expected`.
func textPoke(_ site: UnsafeMutablePointer<cbpf_text>, expected: cbpf_func_t?, new: cbpf_func_t?, what: String) throws {
    let found = cbpf_text_poke(site, expected, new)
    if !sameFunc(found, expected) {
        throw fail(.EBUSY, "\(what): the call site does not hold the expected target")
    }
}

final class Trampoline: @unchecked Sendable {
    let kernel: Kernel
    let target: TrampolineTarget
    let text: UnsafeMutablePointer<cbpf_text>
    let header: UnsafeMutablePointer<cbpf_text_hdr>
    private var links: [TrampolineKind: [TracingLink]] = [:]
    private var image: (ptr: UnsafeMutablePointer<cbpf_tramp_image>, bytes: Int)?
    /// What this trampoline last poked the entry to (the function's own body at first).
    private var pokedTo: cbpf_func_t?
    /// The generated trampoline, for a generated function (MachineTrampoline.swift).
    private var generated: CodeBlock?

    init(kernel: Kernel, target: TrampolineTarget) {
        self.kernel = kernel
        self.target = target
        text = target.text
        header = cbpf_text_hdr_of(text.pointee.data)
        pokedTo = header.pointee.orig
    }

    private var tracingCount: Int {
        (links[.fentry]?.count ?? 0) + (links[.fexit]?.count ?? 0) + (links[.modifyReturn]?.count ?? 0)
    }
    var isEmpty: Bool { tracingCount == 0 && (links[.replace]?.isEmpty ?? true) }

    /// bpf_trampoline_link_prog. Called under kernel.trampolineLock.
    func link(_ l: TracingLink) throws {
        let prog = l.tracedProg
        let ext = links[.replace]?.first
        if l.kind == .replace {
            guard let tp = target.prog else { throw fail(.EINVAL, "extensions replace functions of BPF programs only") }
            if let ext { throw fail(.EBUSY, "\(target.name) is already replaced by '\(ext.tracedProg.name)'") }
            if tracingCount > 0 {
                throw fail(.EBUSY, "\(target.name) has fentry/fexit programs; an extension cannot replace it")
            }
            try tp.extLock.withLock {
                if tp.tailCallMemberships.load(ordering: .acquiring) > 0 {
                    throw fail(.EBUSY, "'\(tp.name)' is in a prog array; a tail-call target cannot be extended")
                }
                tp.extensionCount.add(1, ordering: .releasing)
            }
            links[.replace] = [l]
            do {
                try publish()
            } catch {
                links[.replace] = []
                tp.extensionCount.subtract(1, ordering: .releasing)
                throw error
            }
            return
        }
        if ext != nil {
            throw fail(.EBUSY, "\(target.name) is replaced by an extension; fentry/fexit cannot attach")
        }
        if links.values.joined().contains(where: { $0.tracedProg === prog }) {
            throw fail(.EBUSY, "'\(prog.name)' is already attached to this trampoline")
        }
        if tracingCount >= maxTrampolineLinks {
            throw fail(.E2BIG, "the trampoline of \(target.name) already has \(maxTrampolineLinks) programs (BPF_MAX_TRAMP_LINKS)")
        }
        links[l.kind, default: []].append(l)
        do {
            try publish()
        } catch {
            links[l.kind]!.removeLast()
            throw error
        }
    }

    /// bpf_trampoline_unlink_prog. Called with the link's lock held; takes the trampoline lock.
    func unlink(_ l: TracingLink) {
        kernel.trampolineLock.withLock {
            links[l.kind]?.removeAll { $0 === l }
            try? publish()  // removing never fails: the entry holds what this trampoline put there
            if l.kind == .replace { target.prog?.extensionCount.subtract(1, ordering: .releasing) }
            if isEmpty { kernel.trampolines[target.key] = nil }
        }
    }

    /// bpf_trampoline_update: build the image for the current links, exchange it, poke the
    /// entry if it changes, free the old image after a grace period.
    private func publish() throws {
        let ext = links[.replace]?.first?.tracedProg
        let entries = TrampolineKind.allCases.filter { $0 != .replace }.flatMap { k in links[k] ?? [] }
        let wanted: cbpf_func_t? = ext != nil ? bpfp_ext_entry : (entries.isEmpty ? header.pointee.orig : bpfp_tramp_entry)
        var new: (ptr: UnsafeMutablePointer<cbpf_tramp_image>, bytes: Int)?
        if ext != nil || !entries.isEmpty {
            let bytes = MemoryLayout<cbpf_tramp_image>.size + MemoryLayout<cbpf_tramp_item>.stride * entries.count
            let im = allocRecord(bytes: (bytes + 63) & ~63).bindMemory(to: cbpf_tramp_image.self, capacity: 1)
            im.pointee.magic = CBPF_TRAMP_MAGIC
            im.pointee.ext = ext.map { UnsafePointer($0.raw) }
            im.pointee.nfentry = UInt32(links[.fentry]?.count ?? 0)
            im.pointee.nmodret = UInt32(links[.modifyReturn]?.count ?? 0)
            im.pointee.nfexit = UInt32(links[.fexit]?.count ?? 0)
            let items = UnsafeMutableRawPointer(im).advanced(by: MemoryLayout<cbpf_tramp_image>.size)
                .bindMemory(to: cbpf_tramp_item.self, capacity: entries.count)
            for (i, l) in entries.enumerated() {
                items[i] = cbpf_tramp_item(prog: UnsafePointer(l.tracedProg.raw), cookie: l.cookie)
            }
            new = (im, (bytes + 63) & ~63)
        }
        let imageSlot = UnsafeMutableRawPointer(header).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        if case let .prog(p, f) = target, let entry = p.machineEntry(function: f) {
            // A generated function: its entry word stays; its NOP is patched (MachineEntry).
            var code: CodeBlock?
            if ext == nil && !entries.isEmpty {
                let items = { (k: TrampolineKind) in (self.links[k] ?? []).map { MachineTrampoline.Item(prog: $0.tracedProg, cookie: $0.cookie) } }
                precondition(links[.modifyReturn]?.isEmpty ?? true, "fmod_ret attaches to kernel functions only (checked at load)")
                do {
                    code = try MachineTrampoline.build(fentry: items(.fentry), fexit: items(.fexit),
                                                       function: UInt64(UInt(bitPattern: unsafeBitCast(header.pointee.orig, to: UnsafeRawPointer.self))),
                                                       data: text.pointee.data)
                } catch {
                    if let n = new { kernel.freeRecord(UnsafeMutableRawPointer(n.ptr), bytes: n.bytes) }
                    throw error
                }
            }
            if let n = new { cbpf_rcu_assign_pointer(imageSlot, UnsafeMutableRawPointer(n.ptr)) }  // what the stubs read
            entry.point(to: entry.target(ext: ext, trampoline: code))
            if new == nil { cbpf_rcu_assign_pointer(imageSlot, nil) }
            if let old = generated { kernel.rcu.callRCU { CodeRegion.shared?.free(old) } }  // after CPUs leave it
            generated = code
        } else if !sameFunc(pokedTo, wanted) {
            // The entry changes. A new image must be in place before the poke makes it
            // reachable; the poke must find what this trampoline last left there.
            let old = imageSlot.pointee
            if let n = new { cbpf_rcu_assign_pointer(imageSlot, UnsafeMutableRawPointer(n.ptr)) }
            do {
                try textPoke(text, expected: pokedTo, new: wanted, what: "poking \(target.name)")
            } catch {
                cbpf_rcu_assign_pointer(imageSlot, old)
                if let n = new { kernel.freeRecord(UnsafeMutableRawPointer(n.ptr), bytes: n.bytes) }
                throw error
            }
            pokedTo = wanted
            // Back to the function's own body: readers that still enter the trampoline
            // find no image and call the body (bpfp_tramp_entry's NULL case).
            if new == nil { cbpf_rcu_assign_pointer(imageSlot, nil) }
        } else if let n = new {
            cbpf_rcu_assign_pointer(imageSlot, UnsafeMutableRawPointer(n.ptr))
        }
        if let o = image {
            let k = kernel
            kernel.rcu.callRCU { k.freeRecord(UnsafeMutableRawPointer(o.ptr), bytes: o.bytes) }  // after readers leave it
        }
        image = new
    }

    /// The programs in the image, in run order (for the graph; no references).
    var imagePrograms: [(kind: TrampolineKind, prog: BPFProg)] {
        TrampolineKind.allCases.flatMap { k in (links[k] ?? []).map { (k, $0.tracedProg) } }
    }

    /// The image's counts, for tests and `prog show`: (fentry, fmod_ret, fexit, extension).
    var shape: (fentry: Int, modifyReturn: Int, fexit: Int, ext: Bool) {
        (links[.fentry]?.count ?? 0, links[.modifyReturn]?.count ?? 0, links[.fexit]?.count ?? 0, !(links[.replace]?.isEmpty ?? true))
    }
}

extension Kernel {
    /// bpf_trampoline_get: the trampoline of (target, function), created on first use;
    /// `body` runs under the trampoline lock. A trampoline left empty is dropped.
    func withTrampoline<T>(target: TrampolineTarget, _ body: (Trampoline) throws -> T) throws -> T {
        try trampolineLock.withLock {
            let key = target.key
            let tr = trampolines[key] ?? Trampoline(kernel: self, target: target)
            defer { trampolines[key] = tr.isEmpty ? nil : tr }
            return try body(tr)
        }
    }

    /// The shape of the trampoline on (target, function), if it has one.
    public func trampolineShape(target: BPFProg, function: Int = 0) -> (fentry: Int, modifyReturn: Int, fexit: Int, ext: Bool)? {
        trampolineLock.withLock { trampolines[TrampolineTarget.prog(target, function: function).key]?.shape }
    }

    /// The shape of the trampoline on a kernel function, if it has one.
    public func trampolineShape(kernelFunction name: String) -> (fentry: Int, modifyReturn: Int, fexit: Int, ext: Bool)? {
        guard let k = kernelFunctions[name] else { return nil }
        return trampolineLock.withLock { trampolines[TrampolineTarget.kernel(k).key]?.shape }
    }
}
