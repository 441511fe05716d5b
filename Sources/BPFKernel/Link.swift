// Link.swift — BPF links: an attachment as an object with an ID, a refcount and an fd.
//
// Mirrors: kernel/bpf/syscall.c (struct bpf_link and bpf_link_ops; bpf_link_init,
// bpf_link_prime/settle/cleanup, bpf_link_inc/put, bpf_link_free, link_create,
// link_update, link_detach, bpf_link_get_fd_by_id, bpf_link_get_next_id,
// bpf_link_get_info_by_fd; bpf_tracing_prog_attach and bpf_tracing_link_lops),
// net/core/dev.c (bpf_xdp_link_attach, bpf_xdp_link_update, bpf_xdp_link_release,
// bpf_xdp_link_detach; dev_xdp_attach's "link already attached" rules).
//
// The mechanism, its rules and why: BPFKernel.docc/links.md (the DocC article "Links").
import CBPFShims
import Synchronization

/// enum bpf_link_type (the ones the lab models).
public enum LinkType: UInt32, Sendable {
    case tracing = 2
    case xdp = 6

    public var name: String { self == .tracing ? "tracing" : "xdp" }
}

/// BPF_F_REPLACE for LINK_UPDATE.
public let linkUpdateReplace: UInt32 = 1 << 2

/// What BPF_OBJ_GET_INFO_BY_FD reports for a link (struct bpf_link_info).
public struct LinkInfo: Sendable, Equatable {
    public let id: UInt32
    public let type: LinkType
    public let progID: UInt32
    /// XDP: the device's ifindex (0 once detached). Tracing: the target program's ID.
    public let targetID: UInt32
    public let attachType: AttachType
    public let cookie: UInt64
    public let detached: Bool
}

public class BPFLink: @unchecked Sendable, CustomStringConvertible {
    public let kernel: Kernel
    public let type: LinkType
    public let serial: UInt64
    let refcnt: UnsafeMutablePointer<UInt64>
    let lock = KLock()  // link->mutex-like: serialises update/detach/release
    /// The program the link holds (one reference).
    private(set) var progRef: BPFProg?
    private var released = false
    private var selfRetain: Unmanaged<BPFLink>?
    private let _id = Atomic<UInt32>(0)

    init(kernel: Kernel, type: LinkType, prog: BPFProg) {
        self.kernel = kernel
        self.type = type
        self.serial = kernel.serials.add(1, ordering: .relaxed).newValue
        refcnt = allocRecord(bytes: 64).bindMemory(to: UInt64.self, capacity: 8)
        refcnt.initialize(to: 1)
        progRef = prog
    }

    deinit { refcnt.deallocate() }

    /// bpf_link_settle: publish the ID (after the attachment succeeded).
    func publish() throws {
        let id = try kernel.linkIDR.alloc(self)
        _id.store(id, ordering: .releasing)
        selfRetain = Unmanaged.passRetained(self)
        kernel.registerObject(serial, self)
        kernel.liveLinks.add(1, ordering: .relaxed)
        kernel.log("link", type.name, serial, id, .published)
    }

    public var id: UInt32 { _id.load(ordering: .acquiring) }
    /// The current reference count (a snapshot; for display and tests).
    public var refcountValue: UInt64 { Refcount64(refcnt).value }
    public var prog: BPFProg? { lock.withLock { progRef } }
    public var description: String { "link \(id) \(type.name) prog '\(prog?.name ?? "-")'" }
    /// Whether the attachment is gone (LINK_DETACH, or the target went away).
    public var isDetached: Bool { lock.withLock { detachedLocked } }
    var detachedLocked: Bool { false }

    /// bpf_link_inc. The caller holds a reference.
    public func inc() {
        if !Refcount64(refcnt).addIfHeld(1) { kernel.record(.incrementFromZero(kind: "link", name: type.name)) }
    }

    /// bpf_link_inc_not_zero (lookup by ID).
    func incNotZero() throws {
        guard Refcount64(refcnt).incNotZero() else { throw fail(.ENOENT, "link is being freed") }
    }

    /// bpf_link_put: the last put detaches (ops->release), puts the program, frees.
    public func put() {
        let old = Refcount64(refcnt).decFromNonZero()
        if old == 0 {
            kernel.record(.putOnDeadObject(kind: "link", name: type.name))
            return
        }
        guard old == 1 else { return }
        let id = self.id
        kernel.log("link", type.name, serial, id, .lastPut)
        if id != 0 { kernel.linkIDR.remove(id) }  // bpf_link_free_id
        let p: BPFProg? = lock.withLock {
            released = true
            releaseLocked()   // ops->release: undo the attachment
            let p = progRef
            progRef = nil
            return p
        }
        p?.put()  // the link's program reference, after the attachment is gone
        kernel.log("link", type.name, serial, id, .freed)
        if selfRetain != nil {
            kernel.liveLinks.subtract(1, ordering: .releasing)
            kernel.unregisterObject(serial)
        }
        let me = selfRetain
        selfRetain = nil
        me?.release()
    }

    /// LINK_DETACH: undo the attachment now; the link object stays until its last put.
    func detach() throws {
        try lock.withLock {
            guard supportsDetach else { throw fail(.EOPNOTSUPP, "\(type.name) links cannot be detached early") }
            releaseLocked()
        }
    }

    // MARK: per type (called under `lock`)

    var supportsDetach: Bool { true }
    /// Undo the attachment (idempotent).
    func releaseLocked() {}
    /// Replace the program; returns the old one for the caller to put.
    func updateLocked(_ new: BPFProg, expected: BPFProg?) throws -> BPFProg {
        throw fail(.EINVAL, "\(type.name) links cannot change their program")
    }
    var infoLocked: (targetID: UInt32, attachType: AttachType, cookie: UInt64) { (0, .unspecified, 0) }

    func setProgLocked(_ p: BPFProg) -> BPFProg? {
        let old = progRef
        progRef = p
        return old
    }

    public func info() -> LinkInfo {
        lock.withLock {
            let i = infoLocked
            return LinkInfo(id: id, type: type, progID: progRef?.id ?? 0, targetID: i.targetID,
                            attachType: i.attachType, cookie: i.cookie, detached: detachedLocked)
        }
    }
}

/// An XDP link: owns the device's XDP attachment.
public final class XDPLink: BPFLink, @unchecked Sendable {
    private(set) var device: NetDevice?
    /// The mode slot the link owns.
    public let mode: XDPMode

    init(kernel: Kernel, prog: BPFProg, device: NetDevice, mode: XDPMode) {
        self.device = device
        self.mode = mode
        super.init(kernel: kernel, type: .xdp, prog: prog)
    }

    override var detachedLocked: Bool { device == nil }

    /// The device is going away (or LINK_DETACH): it runs no program any more.
    override func releaseLocked() {
        guard let dev = device else { return }
        device = nil
        let old = dev.releaseLink(self)
        old?.put()  // the device's reference on the program
    }

    /// unregister_netdevice: the link stays, detached.
    func deviceGone() {
        lock.withLock { device = nil }
    }

    override func updateLocked(_ new: BPFProg, expected: BPFProg?) throws -> BPFProg {
        guard let dev = device else { throw fail(.ENOLINK, "the link's device is gone or the link was detached") }
        let cur = progRef!
        if let expected, expected !== cur {
            throw fail(.EPERM, "the link runs '\(cur.name)', not the expected '\(expected.name)'")
        }
        if new.type != cur.type || new.expectedAttachType != cur.expectedAttachType {
            throw fail(.EINVAL, "'\(new.name)' is a \(new.type.name) program; the link needs \(cur.type.name)")
        }
        new.inc()  // the device's reference on the new program
        let oldDev = dev.withLock { dev.install(new, mode: mode) }
        oldDev?.put()  // the device's reference on the old program
        return setProgLocked(new)!
    }

    override var infoLocked: (targetID: UInt32, attachType: AttachType, cookie: UInt64) {
        (device?.ifindex ?? 0, .xdp, 0)
    }
}

/// A tracing link: one program on a trampoline (fentry, fexit, fmod_ret) or an extension
/// replacing a function (freplace). It holds its target program (the reference moved from
/// the program's dst_prog, or taken on the target the link named); a kernel-function
/// target needs none. Tracing links have no detach (bpf_tracing_link_lops has no .detach).
public final class TracingLink: BPFLink, @unchecked Sendable {
    let kind: TrampolineKind
    public let cookie: UInt64
    /// The program (tracing links never change it; read without the link's lock).
    let tracedProg: BPFProg
    let target: TrampolineTarget
    /// The target program's reference this link holds (put when the link is released).
    private var targetRef: BPFProg?
    /// The target reference it holds (for the auditor; no reference taken).
    var heldTarget: BPFProg? { lock.withLock { targetRef } }
    /// Whether that reference came from the program's aux (its load-time dst_prog).
    let fromAux: Bool
    private(set) var trampoline: Trampoline?

    init(kernel: Kernel, prog: BPFProg, kind: TrampolineKind, cookie: UInt64, target: TrampolineTarget, targetRef: BPFProg?,
         fromAux: Bool = false) {
        self.fromAux = fromAux
        self.kind = kind
        self.cookie = cookie
        self.tracedProg = prog
        self.target = target
        self.targetRef = targetRef
        super.init(kernel: kernel, type: .tracing, prog: prog)
    }

    override var detachedLocked: Bool { trampoline == nil }
    override var supportsDetach: Bool { false }

    func attach(_ tr: Trampoline) throws {
        try tr.link(self)
        trampoline = tr
    }

    /// Gives the target reference back to the caller (a link that failed before it was
    /// published: the reference returns to where it came from).
    func takeTargetRef() -> BPFProg? {
        let t = targetRef
        targetRef = nil
        return t
    }

    override func releaseLocked() {
        if let tr = trampoline {
            trampoline = nil
            tr.unlink(self)
        }
        if let t = targetRef {
            targetRef = nil
            t.put()  // the link's reference on its target, after the trampoline is gone
        }
    }

    override var infoLocked: (targetID: UInt32, attachType: AttachType, cookie: UInt64) {
        (target.prog?.id ?? 0, kind.attachType, cookie)
    }
}

/// BPF_LINK_CREATE's attributes.
public struct LinkCreateAttr: Sendable {
    public var progFD: Int32
    /// XDP: the device. Tracing/extension: nil (the target was given at load).
    public var device: NetDevice?
    public var attachType: AttachType
    public var flags: UInt32
    /// Tracing: the cookie the program reads with bpf_get_attach_cookie.
    public var cookie: UInt64
    /// target_fd + target_btf_id: a new target program and function (extensions only).
    public var targetProgFD: Int32
    public var targetFunc: String?

    public init(progFD: Int32, device: NetDevice? = nil, attachType: AttachType, flags: UInt32 = 0, cookie: UInt64 = 0,
                targetProgFD: Int32 = -1, targetFunc: String? = nil) {
        self.progFD = progFD
        self.device = device
        self.attachType = attachType
        self.flags = flags
        self.cookie = cookie
        self.targetProgFD = targetProgFD
        self.targetFunc = targetFunc
    }
}

extension BPF {
    /// BPF_LINK_CREATE. Returns a link fd. On error nothing is attached.
    public func linkCreate(_ attr: LinkCreateAttr) throws -> Int32 {
        let prog = try fds.getProg(attr.progFD)  // becomes the link's reference
        do {
            return try fds.installNew { .link(try makeLink(prog, attr)) }
        } catch {
            prog.put()  // getProg
            throw error
        }
    }

    private func makeLink(_ prog: BPFProg, _ attr: LinkCreateAttr) throws -> BPFLink {
        let link: BPFLink
        switch prog.type {
        case .xdp:
            guard attr.attachType == .xdp, let dev = attr.device else {
                throw fail(.EINVAL, "an xdp program links to a device with attach type xdp")
            }
            // bpf_xdp_link_attach: XDP_FLAGS_MODES only (no UPDATE_IF_NOEXIST, no REPLACE).
            try NetDevice.checkFlags(attr.flags, allowed: .modes)
            if attr.cookie != 0 { throw fail(.EINVAL, "XDP links carry no cookie") }
            if attr.targetProgFD >= 0 || attr.targetFunc != nil { throw fail(.EINVAL, "XDP links take no target program") }
            let l = XDPLink(kernel: kernel, prog: prog, device: dev, mode: XDPMode(flags: attr.flags))
            prog.inc()  // the device's reference
            do { try dev.attachLink(l, prog, mode: l.mode) } catch { prog.sub(1); throw error }
            link = l
        case .tracing, .ext:
            let kind: TrampolineKind
            if prog.type == .ext {
                guard attr.attachType == .unspecified else {
                    throw fail(.EINVAL, "extension links take no attach type")
                }
                kind = .replace
            } else {
                guard attr.attachType.rawValue == prog.expectedAttachType, let k = TrampolineKind(attr.attachType) else {
                    throw fail(.EINVAL, "'\(prog.name)' was loaded as attach type \(prog.expectedAttachType), not \(attr.attachType.rawValue)")
                }
                kind = k
            }
            if attr.device != nil || attr.flags != 0 {
                throw fail(.EINVAL, "tracing links take no device and no flags")
            }
            let l = try tracingLink(prog, kind: kind, attr)
            do {
                try kernel.withTrampoline(target: l.target) { tr in try l.attach(tr) }
            } catch {
                giveBackTarget(l, prog)
                throw error
            }
            link = l
        default:
            throw fail(.EINVAL, "\(prog.type.name) programs cannot be linked")
        }
        do {
            try link.publish()
        } catch {
            if let tl = link as? TracingLink { giveBackTarget(tl, prog) }
            link.lock.withLock { link.releaseLocked() }
            prog.inc()  // the caller's catch puts the getProg reference; the link never owned one
            link.put()
            throw error
        }
        return link
    }

    /// bpf_tracing_prog_attach's choice of target. A new target (target_fd + function)
    /// may be named by extensions only (EINVAL for tracing programs); the link then takes
    /// a reference on it. Without one, the first link takes over the load-time target and
    /// its reference from the program's aux; after that a program attached to a BPF
    /// program has no target left (EINVAL), while one attached to a kernel function may
    /// link again (its target is known from its attach_btf_id).
    private func tracingLink(_ prog: BPFProg, kind: TrampolineKind, _ attr: LinkCreateAttr) throws -> TracingLink {
        if (attr.targetProgFD >= 0) != (attr.targetFunc != nil) {
            throw fail(.EINVAL, "a new target needs both target_fd and target_btf_id (the function)")
        }
        if attr.targetProgFD >= 0 {
            guard prog.type == .ext else {
                throw fail(.EINVAL, "only extension programs may name a new target when linking; '\(prog.name)' is \(prog.type.name)")
            }
            let tgt = try fds.getProg(attr.targetProgFD)  // the link's reference on its new target
            do {
                guard let t = try BPFProg.checkAttachTarget(kernel: kernel, type: prog.type, expectedAttachType: prog.expectedAttachType,
                                                            attachFunc: attr.targetFunc, target: tgt) else {
                    throw fail(.EINVAL, "'\(prog.name)' cannot attach to '\(tgt.name)'")
                }
                if ProgArray.effectiveType(prog) != tgt.type {
                    throw fail(.EINVAL, "'\(prog.name)' was loaded for \(ProgArray.effectiveType(prog).name) programs; '\(tgt.name)' is \(tgt.type.name)")
                }
                return TracingLink(kernel: kernel, prog: prog, kind: kind, cookie: attr.cookie, target: t, targetRef: tgt)
            } catch {
                tgt.put()  // getProg
                throw error
            }
        }
        if let (d, f) = prog.takeDstProg() {
            return TracingLink(kernel: kernel, prog: prog, kind: kind, cookie: attr.cookie, target: .prog(d, function: f), targetRef: d, fromAux: true)
        }
        if let kf = prog.dstKernelFunc {
            return TracingLink(kernel: kernel, prog: prog, kind: kind, cookie: attr.cookie, target: .kernel(kf), targetRef: nil)
        }
        throw fail(.EINVAL, "'\(prog.name)' was already attached and its load-time target went to that link; name a target (target_fd and function)")
    }

    /// A link that failed before it was published hands its target reference back: to the
    /// program's aux if it came from there, else it is put.
    private func giveBackTarget(_ l: TracingLink, _ prog: BPFProg) {
        guard let t = l.lock.withLock({ l.takeTargetRef() }) else { return }
        if l.fromAux {
            prog.returnDstProg(t)  // the aux keeps its load-time target, as before the call
        } else {
            t.put()  // getProg in tracingLink
        }
    }

    /// BPF_LINK_UPDATE: replace the link's program. `expectedOldFD` (with BPF_F_REPLACE)
    /// names the program the link must hold now.
    public func linkUpdate(_ linkFD: Int32, newProgFD: Int32, flags: UInt32 = 0, expectedOldFD: Int32 = -1) throws {
        if flags & ~linkUpdateReplace != 0 {
            throw fail(.EINVAL, "unknown link update flags 0x\(String(flags & ~linkUpdateReplace, radix: 16)) (only BPF_F_REPLACE)")
        }
        let link = try fds.getLink(linkFD)
        defer { link.put() }  // getLink
        let new = try fds.getProg(newProgFD)
        defer { new.put() }  // getProg
        var expected: BPFProg?
        if flags & linkUpdateReplace != 0 {
            expected = try fds.getProg(expectedOldFD)
        } else if expectedOldFD >= 0 {
            throw fail(.EINVAL, "an expected old program was given without BPF_F_REPLACE")
        }
        defer { expected?.put() }  // getProg
        let old: BPFProg = try link.lock.withLock {
            new.inc()  // the link's reference on the new program
            do { return try link.updateLocked(new, expected: expected) } catch { new.sub(1); throw error }
        }
        old.put()  // the link's reference on the old program
    }

    /// BPF_LINK_DETACH.
    public func linkDetach(_ linkFD: Int32) throws {
        let link = try fds.getLink(linkFD)
        defer { link.put() }  // getLink
        try link.detach()
    }

    /// BPF_LINK_GET_FD_BY_ID.
    public func linkGetFdById(_ id: UInt32) throws -> Int32 {
        try fds.installNew {
            .link(try kernel.linkIDR.lookup(id) { l in
                guard let l else { throw fail(.ENOENT, "no link has ID \(id)") }
                try l.incNotZero()
                return l
            })
        }
    }

    /// BPF_LINK_GET_NEXT_ID.
    public func linkGetNextId(_ start: UInt32) throws -> UInt32 {
        guard let id = kernel.linkIDR.nextID(after: start) else { throw fail(.ENOENT, "no link ID above \(start)") }
        return id
    }

    /// BPF_OBJ_GET_INFO_BY_FD for a link.
    public func linkGetInfo(_ fd: Int32) throws -> LinkInfo {
        let l = try fds.getLink(fd)
        defer { l.put() }  // getLink
        return l.info()
    }
}
