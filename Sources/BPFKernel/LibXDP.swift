// LibXDP.swift — libxdp's multi-program XDP: a dispatcher with ten extension slots.
//
// Mirrors: xdp-tools lib/libxdp/libxdp.c (xdp_multiprog__generate: sort components by
// run_prio then name, load the dispatcher with its config, attach each component as an
// extension (freplace) of placeholder prog<N>, pin the links under the bpffs directory
// of the dispatcher; xdp_multiprog__attach: swap the new dispatcher in with the expected
// old one, retrying when somebody else got there first; MAX_DISPATCHER_ACTIONS = 10,
// XDP_DEFAULT_RUN_PRIO = 50, XDP_DEFAULT_CHAIN_CALL_ACTIONS = 1 << XDP_PASS) and
// lib/libxdp/xdp-dispatcher.c (the dispatcher program, in Sources/BPFPrograms/dispatch.c).
//
// The mechanism, its rules and why: BPFKernel.docc/libxdp-s-dispatcher.md (the DocC article "libxdp's dispatcher").
import CBPFShims
import BPFPrograms

/// One program of a multi-program attachment.
public struct XDPProgramSpec: Sendable {
    public var name: String
    /// How to load it (its body or steps); loaded as an extension of a dispatcher slot.
    public var attr: ProgLoadAttr
    /// Lower runs first; ties are broken by name.
    public var runPrio: UInt32
    /// Bit n set: on return value n, go on to the next program.
    public var chainCallActions: UInt32

    public static let defaultRunPrio: UInt32 = 50
    public static let defaultChainCallActions: UInt32 = 1 << UInt32(CBPF_XDP_PASS)

    public init(name: String, attr: ProgLoadAttr, runPrio: UInt32 = defaultRunPrio,
                chainCallActions: UInt32 = defaultChainCallActions) {
        self.name = name
        self.attr = attr
        self.runPrio = runPrio
        self.chainCallActions = chainCallActions
    }

    /// A native body.
    public init(name: String, body: ProgBody, data: [UInt8] = [], runPrio: UInt32 = defaultRunPrio,
                chainCallActions: UInt32 = defaultChainCallActions) {
        self.init(name: name, attr: ProgLoadAttr(body: body, data: data, name: name), runPrio: runPrio,
                  chainCallActions: chainCallActions)
    }
}

/// XDP_DISPATCHER_MAX_PROGS.
public let xdpDispatcherMaxProgs = Int(BPFP_XDP_DISPATCHER_SLOTS)
/// How often a swap that lost a race is retried.
public let xdpDispatcherMaxRetries = 10

public final class LibXDP: @unchecked Sendable {
    public let bpf: BPF
    /// Test hook: runs after the new dispatcher is built, before it is swapped in (lets a
    /// test change the device in between, as a concurrent libxdp user would).
    public var beforeSwap: ((Int) -> Void)?
    /// Swaps that lost a race and were retried, over this object's life.
    public private(set) var retries = 0

    /// Generate the dispatcher as x86-64 (MachineLibXDP.swift: direct calls of placeholders
    /// that freplace patches into jumps) instead of loading the native one.
    public let machineCode: Bool

    public init(bpf: BPF, machineCode: Bool = false) {
        self.bpf = bpf
        self.machineCode = machineCode
    }

    /// The programs running on `dev` through a dispatcher, in run order; nil if `dev` runs
    /// no dispatcher.
    public func programs(on dev: NetDevice) -> [XDPProgramSpec]? {
        guard let p = dev.program else { return nil }
        return bpf.kernel.libxdpDispatcher(id: p.id)
    }

    /// xdp_program__attach_multi: adds `specs` to what runs on `dev`.
    /// E2BIG past ten programs, EEXIST for a name already there, EBUSY if `dev` runs a
    /// program that is not a dispatcher or the swap kept losing races.
    public func attach(_ specs: [XDPProgramSpec], to dev: NetDevice) throws {
        try change(dev) { current in
            let all = current + specs
            if all.count > xdpDispatcherMaxProgs {
                throw fail(.E2BIG, "\(all.count) programs; a dispatcher has \(xdpDispatcherMaxProgs) slots")
            }
            if Set(all.map(\.name)).count != all.count {
                throw fail(.EEXIST, "a program of that name already runs on \(dev.name)")
            }
            return all
        }
    }

    /// xdp_program__detach_multi: removes the named programs; the last one out removes
    /// the dispatcher. ENOENT for a name that does not run on `dev`.
    public func detach(_ names: [String], from dev: NetDevice) throws {
        try change(dev) { current in
            for n in names where !current.contains(where: { $0.name == n }) {
                throw fail(.ENOENT, "'\(n)' does not run on \(dev.name)")
            }
            return current.filter { !names.contains($0.name) }
        }
    }

    private func change(_ dev: NetDevice, _ edit: ([XDPProgramSpec]) throws -> [XDPProgramSpec]) throws {
        for attempt in 0..<xdpDispatcherMaxRetries {
            let old = dev.program
            let current: [XDPProgramSpec]
            if let old {
                guard let c = bpf.kernel.libxdpDispatcher(id: old.id) else {
                    throw fail(.EBUSY, "\(dev.name) runs '\(old.name)', which is not a libxdp dispatcher")
                }
                current = c
            } else {
                current = []
            }
            let wanted = try edit(current).sorted { ($0.runPrio, $0.name) < ($1.runPrio, $1.name) }
            let oldFD = try old.map { try bpf.progGetFdById($0.id) }
            defer { if let oldFD { try? bpf.objClose(oldFD) } }
            let built = try wanted.isEmpty ? nil : build(wanted, dev: dev)
            beforeSwap?(attempt)
            do {
                if oldFD == nil {
                    try bpf.xdpAttach(dev, fd: built!.fd, flags: XDPFlags.updateIfNoExist.rawValue)
                } else {
                    try bpf.xdpAttach(dev, fd: built?.fd ?? -1, flags: XDPFlags.replace.rawValue, expectedFD: oldFD!)
                }
            } catch let e as BPFError where e.errno == .EEXIST || e.errno == .EBUSY {
                if let built { discard(built, dev: dev) }
                retries += 1
                continue  // somebody changed the device since we looked: start again
            }
            if let built {
                bpf.kernel.setLibXDPDispatcher(id: built.prog.id, wanted)
                try? bpf.objClose(built.fd)  // the device holds the dispatcher now
            }
            if let old { retire(old, dev: dev) }
            return
        }
        throw fail(.EBUSY, "\(dev.name) kept changing; gave up after \(xdpDispatcherMaxRetries) attempts")
    }

    private struct Built {
        let fd: Int32
        let prog: BPFProg
        let pins: [String]
    }

    private func pinDir(_ dev: NetDevice, _ dispatcherID: UInt32) -> String {
        "\(bpffsRoot)xdp/dispatch-\(dev.ifindex)-\(dispatcherID)/"
    }

    /// libxdp's bpffs directories: xdp/ (kept) and the dispatcher's own.
    private func makePinDir(_ dir: String) throws {
        for d in ["\(bpffsRoot)xdp", String(dir.dropLast())] {
            do { try bpf.bpffsMkdir(d) } catch let e as BPFError where e.errno == .EEXIST {}
        }
    }

    /// xdp_multiprog__generate: the dispatcher and its components, links pinned.
    private func build(_ specs: [XDPProgramSpec], dev: NetDevice) throws -> Built {
        var cfg = bpfp_xdp_dispatcher_config()
        cfg.num_progs_enabled = UInt32(specs.count)
        withUnsafeMutableBytes(of: &cfg.chain_call_actions) { b in
            let a = b.bindMemory(to: UInt32.self)
            for i in 0..<a.count {
                a[i] = (i < specs.count ? specs[i].chainCallActions : 0) | (1 << UInt32(BPFP_XDP_DISPATCHER_RETVAL))
            }
        }
        withUnsafeMutableBytes(of: &cfg.run_prios) { b in
            let a = b.bindMemory(to: UInt32.self)
            for i in 0..<min(a.count, specs.count) { a[i] = specs[i].runPrio }
        }
        var attr = ProgLoadAttr(body: .xdpDispatcher, data: withUnsafeBytes(of: &cfg) { Array($0) }, name: "xdp_dispatcher")
        attr.functions = (0..<xdpDispatcherMaxProgs).map { ProgFunction(name: "prog\($0)", body: .xdpDispatcherStub) }
        attr.functionTableOffset = MemoryLayout<bpfp_xdp_dispatcher_config>.offset(of: \.slots)!
        attr.machineCode = machineCode
        let fd = try bpf.progLoad(attr)
        let prog = try bpf.prog(fd)
        prog.put()  // keep the object, not a reference: the fd holds one
        var pins: [String] = []
        let dir = pinDir(dev, prog.id)
        do {
            try makePinDir(dir)
            for (i, s) in specs.enumerated() {
                var ext = s.attr
                ext.progType = ProgType.ext.rawValue
                ext.expectedAttachType = AttachType.unspecified.rawValue
                ext.attachProgFD = fd
                ext.attachFunc = "prog\(i)"
                let efd = try bpf.progLoad(ext)
                defer { try? bpf.objClose(efd) }  // the link holds the extension
                let lfd = try bpf.linkCreate(LinkCreateAttr(progFD: efd, attachType: .unspecified))
                defer { try? bpf.objClose(lfd) }  // the pin holds the link
                let path = dir + "prog\(i)-link"
                try bpf.objPin(lfd, path: path)
                pins.append(path)
            }
        } catch {
            for p in pins { try? bpf.unpin(path: p) }
            try? bpf.bpffsRmdir(dir)
            try? bpf.objClose(fd)
            throw error
        }
        return Built(fd: fd, prog: prog, pins: pins)
    }

    /// A built dispatcher that lost the race: unpin its links, close it.
    private func discard(_ b: Built, dev: NetDevice) {
        for p in b.pins { try? bpf.unpin(path: p) }
        try? bpf.bpffsRmdir(pinDir(dev, b.prog.id))
        try? bpf.objClose(b.fd)
    }

    /// The replaced dispatcher: its links' pins go (detaching its components) — after a
    /// grace period. Packets that entered the old dispatcher before the swap may still be
    /// running it; detaching a component pokes its slot back to the placeholder, and such
    /// a packet would then get 31 from that slot and go on: a mix of two configurations.
    /// (libxdp unpins at once — user space cannot wait for a grace period — so the kernel
    /// has this window; the lab's libxdp closes it by waiting. The test that found it is
    /// ConcurrencyAttachTests.)
    private func retire(_ old: BPFProg, dev: NetDevice) {
        bpf.kernel.rcu.synchronize()
        let dir = pinDir(dev, old.id)
        for p in bpf.pinnedPaths where p.hasPrefix(dir) { try? bpf.unpin(path: p) }
        try? bpf.bpffsRmdir(dir)
        bpf.kernel.forgetLibXDPDispatcher(id: old.id)
    }
}

extension Kernel {
    /// What libxdp reads back from a running dispatcher (its config and pinned components),
    /// by the dispatcher program's ID — libxdp recognises its dispatcher by the program it
    /// loaded. Kept per kernel; an entry goes when its program's ID is unpublished, so a
    /// later program (even one reusing the ID) is never taken for a dispatcher.
    func libxdpDispatcher(id: UInt32) -> [XDPProgramSpec]? {
        guard id != 0 else { return nil }
        return libxdpLock.withLock { libxdpDispatchers[id] }
    }

    func setLibXDPDispatcher(id: UInt32, _ specs: [XDPProgramSpec]) {
        guard id != 0 else { return }
        libxdpLock.withLock { libxdpDispatchers[id] = specs }
    }

    func forgetLibXDPDispatcher(id: UInt32) {
        libxdpLock.withLock { _ = libxdpDispatchers.removeValue(forKey: id) }
    }

    /// Dispatchers libxdp knows of (for tests).
    public var libxdpDispatcherCount: Int { libxdpLock.withLock { libxdpDispatchers.count } }
}
