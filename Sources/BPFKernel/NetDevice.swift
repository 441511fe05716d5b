// NetDevice.swift — a simulated network device with N RX queues and an XDP hook.
//
// Mirrors: net/core/dev.c (dev_change_xdp_fd / dev_xdp_attach: the flag checks and their
// errnos; dev_xdp_install), include/uapi/linux/if_link.h (XDP_FLAGS_*), and the driver
// side of XDP (each RX queue's NAPI poll reads the device's program with
// rcu_dereference and runs it per packet).
//
// The mechanism, its rules and why: BPFKernel.docc/xdp-attach-and-its-modes.md (the DocC article "XDP attach and its modes").
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

/// enum bpf_xdp_mode: where an XDP program runs. Each mode has its own slot on the device
/// (dev->xdp_state[mode]).
public enum XDPMode: Int, Sendable, CaseIterable {
    /// XDP_FLAGS_SKB_MODE: generic XDP, run on the skb after the driver.
    case skb
    /// XDP_FLAGS_DRV_MODE: native XDP in the driver's NAPI poll (the default for a driver
    /// that supports it, as veth does).
    case drv
    /// XDP_FLAGS_HW_MODE: offloaded to the NIC.
    case hw

    public var name: String { ["skb", "drv", "hw"][rawValue] }
    var flag: XDPFlags { [XDPFlags.skbMode, .drvMode, .hwMode][rawValue] }

    /// dev_xdp_mode: the mode a flag set asks for (none given: native).
    public init(flags: UInt32) {
        let f = XDPFlags(rawValue: flags)
        self = f.contains(.skbMode) ? .skb : f.contains(.hwMode) ? .hw : .drv
    }
}

public final class NetDevice: @unchecked Sendable {
    public let kernel: Kernel
    public let name: String
    public let ifindex: UInt32
    public let queues: Int
    /// The published program the receive path runs (native, or generic when that is the
    /// one attached: the two are never active together); read per packet.
    public let xdpSlot: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    /// The skb-mode program alone (rcu), for generic XDP's receive path (do_xdp_generic).
    public let genericSlot: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    /// do_xdp_generic's entry word (KernelFunction.swift), resolved once.
    public let genericEntry: UnsafePointer<cbpf_text>
    private let lock = KLock()  // rtnl_lock
    /// dev->xdp_state[mode]: the program of each mode and the link that owns it, if any.
    private var attachedByMode: [BPFProg?] = [nil, nil, nil]
    private var linkByMode: [XDPLink?] = [nil, nil, nil]
    /// Whether a native attach makes the program a target of the kernel's XDP
    /// bpf_dispatcher (dev_xdp_install → bpf_prog_change_xdp). Off for the bench's devices,
    /// whose bpf_dispatcher designs set the targets themselves; on in scenarios.
    public let feedsDispatcher: Bool

    public init(kernel: Kernel, name: String, ifindex: UInt32 = 1, queues: Int = 1, feedsDispatcher: Bool = false) {
        self.kernel = kernel
        self.feedsDispatcher = feedsDispatcher
        self.name = name
        self.ifindex = ifindex
        self.queues = max(1, queues)
        xdpSlot = .allocate(capacity: 1)
        xdpSlot.initialize(to: nil)
        genericSlot = .allocate(capacity: 1)
        genericSlot.initialize(to: nil)
        genericEntry = kernel.kernelFunctions["do_xdp_generic"]!.entry
        kernel.registerHolder(self)
    }

    deinit {
        detachAll()
        xdpSlot.deallocate()
        genericSlot.deallocate()
    }

    /// The program the receive path runs (native, else generic; no reference taken).
    public var program: BPFProg? { lock.withLock { attachedByMode[XDPMode.drv.rawValue] ?? attachedByMode[XDPMode.skb.rawValue] } }

    /// The program attached in `mode` (no reference taken).
    public func program(mode: XDPMode) -> BPFProg? { lock.withLock { attachedByMode[mode.rawValue] } }

    /// Every attached program and its mode (for the auditor; no reference taken).
    var attachments: [(mode: XDPMode, prog: BPFProg)] {
        lock.withLock { XDPMode.allCases.compactMap { m in attachedByMode[m.rawValue].map { (m, $0) } } }
    }

    /// Whether a link owns the attachment in `mode`.
    public func hasLink(mode: XDPMode) -> Bool { lock.withLock { linkByMode[mode.rawValue] != nil } }

    /// The program a queue would run now (rcu_dereference(dev->xdp_prog)); the caller is
    /// an RCU reader.
    @inlinable @inline(__always)
    public var currentProg: UnsafePointer<cbpf_prog>? {
        cbpf_rcu_dereference(xdpSlot).map { UnsafePointer($0.assumingMemoryBound(to: cbpf_prog.self)) }
    }

    /// The flag rules every XDP attach shares (dev_xdp_attach's first checks).
    static func checkFlags(_ flags: UInt32, allowed: XDPFlags) throws {
        if flags & ~allowed.rawValue != 0 {
            throw fail(.EINVAL, "unknown XDP flags 0x\(String(flags & ~allowed.rawValue, radix: 16))")
        }
        if XDPFlags(rawValue: flags).intersection(.modes).rawValue.nonzeroBitCount > 1 {
            throw fail(.EINVAL, "only one of XDP_FLAGS_SKB_MODE, DRV_MODE and HW_MODE may be given")
        }
    }

    /// dev_xdp_attach: the mode-slot rules shared by legacy attach and links, under the
    /// lock. `link` is the link asking (nil: legacy).
    private func checkModeLocked(_ mode: XDPMode, prog: BPFProg?, link: XDPLink?) throws {
        if mode == .hw, prog != nil {
            // bpf_prog_dev_bound_match: only a program loaded for offload to this device
            // (prog_ifindex) may run in HW mode; the lab loads none.
            throw fail(.EINVAL, "\(name): a program must be loaded for offload to this device to attach in HW mode")
        }
        if linkByMode[mode.rawValue] != nil {
            throw fail(.EBUSY, link != nil ? "\(name) already has an XDP link in \(mode.name) mode"
                                           : "\(name) has an XDP link attached in \(mode.name) mode; update or detach the link instead")
        }
        if prog != nil, mode != .hw {
            let other: XDPMode = mode == .skb ? .drv : .skb
            if attachedByMode[other.rawValue] != nil {
                throw fail(.EEXIST, "\(name): native and generic XDP can't be active at the same time (\(other.name) mode runs '\(attachedByMode[other.rawValue]!.name)')")
            }
        }
    }

    /// dev_xdp_attach: attach `prog` (or detach with nil) under the kernel's flag rules.
    /// Takes over the caller's reference on `prog` on success.
    func attach(_ prog: BPFProg?, flags: UInt32, expected: BPFProg?, expectedGiven: Bool) throws {
        try NetDevice.checkFlags(flags, allowed: .all)
        let f = XDPFlags(rawValue: flags)
        // do_setlink: the expected fd is read only with XDP_FLAGS_REPLACE, and REPLACE
        // needs one (checked against the live kernel: without REPLACE it is ignored).
        if f.contains(.replace) && !expectedGiven {
            throw fail(.EINVAL, "XDP_FLAGS_REPLACE needs the expected old program (IFLA_XDP_EXPECTED_FD)")
        }
        if let prog, prog.type != .xdp {
            throw fail(.EINVAL, "'\(prog.name)' is a \(prog.type.name) program, not xdp")
        }
        let mode = XDPMode(flags: flags)
        let old: BPFProg? = try lock.withLock {
            try checkModeLocked(mode, prog: prog, link: nil)
            let cur = attachedByMode[mode.rawValue]
            if f.contains(.replace) && cur !== expected {
                throw fail(.EEXIST, "\(name) runs '\(cur?.name ?? "no program")' in \(mode.name) mode, not the expected '\(expected?.name ?? "no program")'")
            }
            if f.contains(.updateIfNoExist), prog != nil, let cur {
                throw fail(.EBUSY, "\(name) already runs '\(cur.name)' in \(mode.name) mode (XDP_FLAGS_UPDATE_IF_NOEXIST)")
            }
            return install(prog, mode: mode)
        }
        old?.put()  // the device's reference on the old program, after the exchange
    }

    /// dev_xdp_install: publish in `mode`'s slot; returns the previous program for the
    /// caller to put. The receive path's pointer follows the native or generic slot.
    func install(_ prog: BPFProg?, mode: XDPMode) -> BPFProg? {
        let old = attachedByMode[mode.rawValue]
        if mode == .drv && feedsDispatcher && old !== prog {
            kernel.xdpDispatcher.change(from: old, to: prog)  // bpf_prog_change_xdp
        }
        attachedByMode[mode.rawValue] = prog
        if mode != .hw {
            let run = attachedByMode[XDPMode.drv.rawValue] ?? attachedByMode[XDPMode.skb.rawValue]
            _ = cbpf_xchg_ptr(xdpSlot, run.map { UnsafeMutableRawPointer($0.raw) })
        }
        if mode == .skb { _ = cbpf_xchg_ptr(genericSlot, prog.map { UnsafeMutableRawPointer($0.raw) }) }
        return old
    }

    /// Exchanges under the device lock for links (Link.swift).
    func withLock<T>(_ body: () throws -> T) rethrows -> T { try lock.withLock(body) }

    /// bpf_xdp_link_attach's device half: the link takes `mode`'s slot. EBUSY if a program
    /// (legacy) or another link is attached there. Takes over a reference on `prog`.
    func attachLink(_ l: XDPLink, _ prog: BPFProg, mode: XDPMode) throws {
        try lock.withLock {
            try checkModeLocked(mode, prog: prog, link: l)
            if let a = attachedByMode[mode.rawValue] {
                throw fail(.EBUSY, "\(name) runs '\(a.name)' in \(mode.name) mode attached without a link; detach it first")
            }
            linkByMode[mode.rawValue] = l
            _ = install(prog, mode: mode)
        }
    }

    /// The link's release: its mode runs nothing. Returns the program to put.
    func releaseLink(_ l: XDPLink) -> BPFProg? {
        lock.withLock {
            guard let i = linkByMode.firstIndex(where: { $0 === l }) else { return nil }
            linkByMode[i] = nil
            return install(nil, mode: XDPMode(rawValue: i)!)
        }
    }

    /// Detaches whatever is attached (device teardown). A link stays, detached: later
    /// updates through it answer ENOLINK.
    public func detachAll() {
        let (olds, ls): ([BPFProg], [XDPLink]) = lock.withLock {
            let ls = linkByMode.compactMap { $0 }
            linkByMode = [nil, nil, nil]
            var olds: [BPFProg] = []
            for m in XDPMode.allCases { if let p = install(nil, mode: m) { olds.append(p) } }
            return (olds, ls)
        }
        for l in ls { l.deviceGone() }
        for p in olds { p.put() }
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
    /// `expectedFD` (≥ 0) names the program that must be attached now; it is read only
    /// with XDP_FLAGS_REPLACE, as the kernel reads IFLA_XDP_EXPECTED_FD.
    public func xdpAttach(_ dev: NetDevice, fd: Int32, flags: UInt32 = 0, expectedFD: Int32 = -1) throws {
        let prog = fd >= 0 ? try fds.getProg(fd) : nil  // the device's reference
        var expected: BPFProg?
        let replace = flags & XDPFlags.replace.rawValue != 0
        do {
            if replace && expectedFD >= 0 { expected = try fds.getProg(expectedFD) }
            defer { expected?.put() }  // getProg
            try dev.attach(prog, flags: flags, expected: expected, expectedGiven: replace && expectedFD >= 0)
        } catch {
            prog?.put()
            throw error
        }
    }
}
