// LiveNetns.swift — a private network namespace with a veth pair, on the live kernel, for
// XDP attach and links: made with iproute2's `ip`, named with the lab's prefix and the
// process id, deleted on close. `bpflab kernel cleanup` removes what a crashed run left.
//
// Mirrors: what a user does by hand (`ip netns add`, `ip link add … type veth peer …`);
// the attach itself goes through rtnetlink (CLiveBPF/netdev.c) and bpf(2) links.
import Foundation
import CLiveBPF

public final class LiveNetns: @unchecked Sendable {
    /// The prefix of everything the lab creates on the live kernel.
    public static let prefix = "bpflab-"
    public let name: String
    private var deleted = false

    /// Creates `bpflab-<pid>-<n>` with veth0 ↔ veth1, both up.
    public init(tag: String = "0") throws {
        name = "\(LiveNetns.prefix)\(getpid())-\(tag)"
        try LiveNetns.ip(["netns", "add", name])
        LiveCleanup.register(netns: name)
        do {
            try LiveNetns.ip(["-n", name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"])
            try LiveNetns.ip(["-n", name, "link", "set", "veth0", "up"])
            try LiveNetns.ip(["-n", name, "link", "set", "veth1", "up"])
        } catch {
            try? LiveNetns.ip(["netns", "del", name])
            LiveCleanup.unregister(netns: name)
            throw error
        }
    }

    deinit { close() }

    public func close() {
        guard !deleted else { return }
        deleted = true
        try? LiveNetns.ip(["netns", "del", name])
        LiveCleanup.unregister(netns: name)
    }

    /// Adds `n` more veth pairs (veth<2k> ↔ veth<2k+1>, from veth2 on), all up; returns
    /// the names of the new devices.
    public func addPairs(_ n: Int) throws -> [String] {
        var names: [String] = []
        for k in 1...max(1, n) {
            let a = "veth\(2 * k)", b = "veth\(2 * k + 1)"
            try LiveNetns.ip(["-n", name, "link", "add", a, "type", "veth", "peer", "name", b])
            try LiveNetns.ip(["-n", name, "link", "set", a, "up"])
            try LiveNetns.ip(["-n", name, "link", "set", b, "up"])
            names += [a, b]
        }
        return names
    }

    /// The ifindex of `device` in the namespace.
    public func ifindex(_ device: String) throws -> Int32 {
        try inside { _ in
            let idx = clb_ifindex(device)
            guard idx > 0 else { throw LiveError(errno: -idx, message: "no \(device) in \(name)") }
            return idx
        }
    }

    /// Runs `body` inside the namespace (this thread only), with veth0's ifindex.
    public func inside<T>(_ body: (Int32) throws -> T) throws -> T {
        let saved = clb_netns_enter("/var/run/netns/\(name)")
        guard saved >= 0 else { throw LiveError(errno: -saved, message: "cannot enter network namespace \(name)") }
        defer { _ = clb_netns_leave(saved) }
        let idx = clb_ifindex("veth0")
        guard idx > 0 else { throw LiveError(errno: -idx, message: "no veth0 in \(name)") }
        return try body(idx)
    }

    /// The namespaces a crashed run of the lab left (the prefix only).
    public static func leftovers() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/var/run/netns")) ?? []
        return names.filter { $0.hasPrefix(prefix) }.sorted()
    }

    /// Deletes one leftover namespace (only names with the lab's prefix).
    public static func remove(_ name: String) throws {
        guard name.hasPrefix(prefix) else { throw LiveError(errno: 1, message: "'\(name)' is not the lab's") }
        try ip(["netns", "del", name])
    }

    static func ip(_ args: [String]) throws { try run("ip", args) }

    static func run(_ tool: String, _ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [tool] + args
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        // Read to the end before waiting: a child that fills the pipe would wait for us forever.
        let msg = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw LiveError(errno: 1, message: "\(tool) \(args.joined(separator: " ")): \(msg.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}

/// A private bpffs instance, mounted for one run at /tmp/bpflab-<pid>-bpffs (a mount of
/// its own: the system's /sys/fs/bpf is not touched), unmounted and removed on close.
public final class LiveBPFFS: @unchecked Sendable {
    public let path: String
    private var mounted = false

    public init() throws {
        path = "/tmp/\(LiveNetns.prefix)\(getpid())-bpffs"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        do {
            try LiveNetns.run("mount", ["-t", "bpf", "bpf", path])
            mounted = true
            LiveCleanup.register(mount: path)
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw error
        }
    }

    deinit { close() }

    public func close() {
        guard mounted else { return }
        mounted = false
        try? LiveNetns.run("umount", [path])
        try? FileManager.default.removeItem(atPath: path)
        LiveCleanup.unregister(mount: path)
    }

    /// bpffs mounts a crashed run left.
    public static func leftovers() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? []
        return names.filter { $0.hasPrefix(LiveNetns.prefix) && $0.hasSuffix("-bpffs") }.map { "/tmp/" + $0 }.sorted()
    }

    public static func remove(_ path: String) throws {
        guard path.hasPrefix("/tmp/\(LiveNetns.prefix)"), path.hasSuffix("-bpffs") else { throw LiveError(errno: 1, message: "'\(path)' is not the lab's") }
        try? LiveNetns.run("umount", [path])
        try FileManager.default.removeItem(atPath: path)
    }
}

extension LiveNetns {
    /// Legacy XDP attach (rtnetlink) on `device` of this namespace: fd -1 detaches. The
    /// netlink socket is opened inside the namespace, so no other device can be reached.
    public func xdpAttach(_ live: LiveBPF, device: String = "veth0", fd: Int32, flags: UInt32, expectedFD: Int32 = -1) throws {
        try inside { _ in
            let idx = clb_ifindex(device)
            guard idx > 0 else { throw LiveError(errno: -idx, message: "no \(device) in \(name)") }
            let r = clb_xdp_attach(idx, fd, flags, expectedFD)
            if r < 0 { throw LiveError(errno: -r, message: "XDP attach on \(device)") }
        }
    }

    /// BPF_LINK_CREATE for XDP (attach type BPF_XDP, 37) on `device` of this namespace. The
    /// kernel resolves the ifindex in the caller's namespace, so the call is made inside it:
    /// a link can never land on a device of the machine's own namespace.
    public func xdpLinkCreate(_ live: LiveBPF, device: String = "veth0", progFD: Int32, flags: UInt32) throws -> Int32 {
        try inside { _ in
            let idx = clb_ifindex(device)
            guard idx > 0 else { throw LiveError(errno: -idx, message: "no \(device) in \(name)") }
            let r = clb_link_create(progFD, idx, 37, flags)
            if r < 0 { throw LiveError(errno: -r, message: "XDP link on \(device)") }
            return live.trackLink(r)
        }
    }
}

extension LiveBPF {
    /// BPF_LINK_UPDATE (BPF_F_REPLACE with an expected old program when given).
    public func linkUpdate(_ link: Int32, newProgFD: Int32, expectedOldFD: Int32 = -1) throws {
        let r = clb_link_update(link, newProgFD, expectedOldFD, expectedOldFD >= 0 ? 4 : 0)  // BPF_F_REPLACE
        if r < 0 { throw LiveError(errno: -r, message: "link update") }
    }
}

extension LiveNetns {
    /// The programs attached to `device` of this namespace, by mode (rtnetlink RTM_GETLINK).
    public func xdpQuery(device: String) throws -> (skb: UInt32, drv: UInt32, hw: UInt32) {
        try inside { _ in
            let idx = clb_ifindex(device)
            guard idx > 0 else { throw LiveError(errno: -idx, message: "no \(device) in \(name)") }
            var s: UInt32 = 0, d: UInt32 = 0, h: UInt32 = 0
            let r = clb_xdp_query(idx, &s, &d, &h)
            if r < 0 { throw LiveError(errno: -r, message: "XDP query on \(device)") }
            return (s, d, h)
        }
    }

    /// The ifindex of each of this namespace's devices named in `devices`.
    public func ifindexes(_ devices: [String]) -> [UInt32: String] {
        var out: [UInt32: String] = [:]
        for d in devices { if let i = try? ifindex(d), i > 0 { out[UInt32(i)] = d } }
        return out
    }
}

extension LiveBPF {
    /// A link's program ID and, for an XDP link, its device's ifindex (0 once detached).
    public func linkInfo(_ fd: Int32) throws -> (id: UInt32, progID: UInt32, ifindex: UInt32) {
        var id: UInt32 = 0, type: UInt32 = 0, prog: UInt32 = 0, idx: UInt32 = 0
        let r = clb_link_info_full(fd, &id, &type, &prog, &idx)
        if r < 0 { throw LiveError(errno: -r, message: "link info") }
        return (id, prog, idx)
    }

    /// The IDs of `kind` (prog, map, link) in `range` that are still published: a walk of
    /// BPF_*_GET_NEXT_ID, which takes no reference. (BPF_*_GET_FD_BY_ID would: on a prog
    /// array without user references, the fd's close clears the array again, and on this
    /// kernel a second clear while the first's work item is pending leaks a reference —
    /// see README, "The live kernel".)
    public func publishedIDs(_ kind: String, in range: ClosedRange<UInt32>) -> Set<UInt32> {
        var out: Set<UInt32> = []
        var id = range.lowerBound &- 1, next: UInt32 = 0
        while true {
            let r: Int32
            switch kind {
            case "prog": r = clb_prog_get_next_id(id, &next)
            case "map": r = clb_map_get_next_id(id, &next)
            default: r = clb_link_get_next_id(id, &next)
            }
            guard r == 0, next <= range.upperBound, next > id else { break }
            out.insert(next)
            id = next
        }
        return out
    }
}
