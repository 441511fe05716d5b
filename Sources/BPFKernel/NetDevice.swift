// NetDevice.swift — a simulated network device with N RX queues and an XDP hook.
//
// Mirrors: net/core/dev.c (dev_change_xdp_fd / dev_xdp_attach: the flag checks and their
// errnos; dev_xdp_install), include/uapi/linux/if_link.h (XDP_FLAGS_*), and the driver
// side of XDP (each RX queue's NAPI poll reads the device's program with
// rcu_dereference and runs it per packet).
//
// The device holds one reference on the attached program. Attaching publishes the new
// program with an exchange; the old one is put after the exchange, so a queue that is
// still in the middle of a poll finishes the packet with the old program (it is freed
// only after a grace period).
import CBPFShims

/// XDP_FLAGS_* (include/uapi/linux/if_link.h).
public struct XDPFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let updateIfNoExist = XDPFlags(rawValue: 1 << 0)
    public static let skbMode = XDPFlags(rawValue: 1 << 1)
    public static let drvMode = XDPFlags(rawValue: 1 << 2)
    public static let hwMode = XDPFlags(rawValue: 1 << 3)
    public static let replace = XDPFlags(rawValue: 1 << 4)
    public static let modes: XDPFlags = [.skbMode, .drvMode, .hwMode]
    public static let all: XDPFlags = [.updateIfNoExist, .modes, .replace]
}

public final class NetDevice: @unchecked Sendable {
    public let kernel: Kernel
    public let name: String
    public let ifindex: UInt32
    public let queues: Int
    /// The published program (struct net_device's xdp_prog); read per packet.
    public let xdpSlot: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let lock = KLock()  // rtnl_lock
    private var attached: BPFProg?
    /// The XDP link that owns the attachment, if any (legacy attach is then refused).
    private var link: XDPLink?

    public init(kernel: Kernel, name: String, ifindex: UInt32 = 1, queues: Int = 1) {
        self.kernel = kernel
        self.name = name
        self.ifindex = ifindex
        self.queues = max(1, queues)
        xdpSlot = .allocate(capacity: 1)
        xdpSlot.initialize(to: nil)
    }

    deinit {
        detachAll()
        xdpSlot.deallocate()
    }

    /// The attached program (no reference taken).
    public var program: BPFProg? { lock.withLock { attached } }

    /// The program a queue would run now (rcu_dereference(dev->xdp_prog)); the caller is
    /// an RCU reader.
    @inlinable @inline(__always)
    public var currentProg: UnsafePointer<cbpf_prog>? {
        cbpf_rcu_dereference(xdpSlot).map { UnsafePointer($0.assumingMemoryBound(to: cbpf_prog.self)) }
    }

    /// dev_xdp_attach: attach `prog` (or detach with nil) under the kernel's flag rules.
    /// Takes over the caller's reference on `prog` on success.
    func attach(_ prog: BPFProg?, flags: UInt32, expected: BPFProg?, expectedGiven: Bool) throws {
        let f = XDPFlags(rawValue: flags)
        if flags & ~XDPFlags.all.rawValue != 0 {
            throw fail(.EINVAL, "unknown XDP flags 0x\(String(flags & ~XDPFlags.all.rawValue, radix: 16))")
        }
        if f.intersection(.modes).rawValue.nonzeroBitCount > 1 {
            throw fail(.EINVAL, "only one of XDP_FLAGS_SKB_MODE, DRV_MODE and HW_MODE may be given")
        }
        if expectedGiven && !f.contains(.replace) {
            throw fail(.EINVAL, "an expected old program was given without XDP_FLAGS_REPLACE")
        }
        if let prog, prog.type != .xdp {
            throw fail(.EINVAL, "'\(prog.name)' is a \(prog.type.name) program, not xdp")
        }
        let old: BPFProg? = try lock.withLock {
            if link != nil {
                throw fail(.EBUSY, "\(name) has an XDP link attached; update or detach the link instead")
            }
            if f.contains(.replace) && attached !== expected {
                throw fail(.EEXIST, "\(name) runs '\(attached?.name ?? "no program")', not the expected '\(expected?.name ?? "no program")'")
            }
            if f.contains(.updateIfNoExist), prog != nil, attached != nil {
                throw fail(.EBUSY, "\(name) already runs '\(attached!.name)' (XDP_FLAGS_UPDATE_IF_NOEXIST)")
            }
            return install(prog)
        }
        old?.put()  // the device's reference on the old program, after the exchange
    }

    /// dev_xdp_install: publish; returns the previous program for the caller to put.
    func install(_ prog: BPFProg?) -> BPFProg? {
        let old = attached
        attached = prog
        _ = cbpf_xchg_ptr(xdpSlot, prog.map { UnsafeMutableRawPointer($0.raw) })
        return old
    }

    /// Exchanges under the device lock for links (Link.swift).
    func withLock<T>(_ body: () throws -> T) rethrows -> T { try lock.withLock(body) }

    /// bpf_xdp_link_attach's device half: the link takes the attachment. EBUSY if a
    /// program (legacy) or another link is attached. Takes over a reference on `prog`.
    func attachLink(_ l: XDPLink, _ prog: BPFProg) throws {
        try lock.withLock {
            if link != nil { throw fail(.EBUSY, "\(name) already has an XDP link") }
            if let a = attached { throw fail(.EBUSY, "\(name) runs '\(a.name)' attached without a link; detach it first") }
            link = l
            _ = install(prog)
        }
    }

    /// The link's release: the device runs nothing. Returns the program to put.
    func releaseLink(_ l: XDPLink) -> BPFProg? {
        lock.withLock {
            guard link === l else { return nil }
            link = nil
            return install(nil)
        }
    }

    /// Detaches whatever is attached (device teardown). A link stays, detached: later
    /// updates through it answer ENOLINK.
    public func detachAll() {
        let (old, l): (BPFProg?, XDPLink?) = lock.withLock {
            let l = link
            link = nil
            return (install(nil), l)
        }
        l?.deviceGone()
        old?.put()
    }

    /// unregister_netdevice.
    public func unregister() { detachAll() }

    /// One packet through the hook, as a driver would run it: no program → XDP_PASS.
    @inlinable @inline(__always)
    public func runXDP(_ ctx: XDPContext) -> UInt32 {
        guard let p = currentProg else { return UInt32(CBPF_XDP_PASS) }
        return bpfProgRun(p, ctx)
    }
}

extension BPF {
    /// bpf_xdp_attach / dev_change_xdp_fd: attach the program behind `fd` (-1 detaches).
    /// `expectedFD` (> 0) names the program that must be attached now (with REPLACE).
    public func xdpAttach(_ dev: NetDevice, fd: Int32, flags: UInt32 = 0, expectedFD: Int32 = -1) throws {
        let prog = fd >= 0 ? try fds.getProg(fd) : nil  // the device's reference
        var expected: BPFProg?
        do {
            if expectedFD >= 0 { expected = try fds.getProg(expectedFD) }
            defer { expected?.put() }  // getProg
            try dev.attach(prog, flags: flags, expected: expected, expectedGiven: expectedFD >= 0)
        } catch {
            prog?.put()
            throw error
        }
    }
}
