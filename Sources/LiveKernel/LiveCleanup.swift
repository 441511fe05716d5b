// LiveCleanup.swift — what a kernel-backed run has made on the live kernel that outlives
// its fds (network namespaces, bpffs mounts), removed on SIGINT and SIGTERM too.
//
// Mirrors: no kernel file; the discipline of a tool that touches a real kernel: every
// namespace and mount registered while it exists, and a signal thread (sigwait on SIGINT
// and SIGTERM, blocked in every other thread) that removes them before the process exits
// with 128 + the signal. fds close with the process by themselves.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public enum LiveCleanup {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var netns: Set<String> = []
    nonisolated(unsafe) private static var mounts: Set<String> = []

    static func register(netns name: String) { lock.withLock { _ = netns.insert(name) } }
    static func unregister(netns name: String) { lock.withLock { _ = netns.remove(name) } }
    static func register(mount path: String) { lock.withLock { _ = mounts.insert(path) } }
    static func unregister(mount path: String) { lock.withLock { _ = mounts.remove(path) } }

    /// What is registered now (for tests).
    public static var registered: (netns: [String], mounts: [String]) {
        lock.withLock { (netns.sorted(), mounts.sorted()) }
    }

    /// Removes every registered namespace and mount.
    public static func removeAll() {
        let (n, m) = lock.withLock { () -> (Set<String>, Set<String>) in
            defer { netns.removeAll(); mounts.removeAll() }
            return (netns, mounts)
        }
        for name in n { try? LiveNetns.run("ip", ["netns", "del", name]) }
        for path in m {
            try? LiveNetns.run("umount", [path])
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    nonisolated(unsafe) private static var installed = false

    /// On SIGINT or SIGTERM — whichever thread receives it — everything registered is
    /// removed and the process exits with 128 + the signal. The handler only writes the
    /// signal's number to a pipe (async-signal-safe); a thread of its own reads it and
    /// does the removing.
    public static func installSignalHandling() {
        guard !installed else { return }
        installed = true
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return }
        signalPipe = fds[1]
        let readFD = fds[0]
        let t = Thread {
            var b: UInt8 = 0
            while read(readFD, &b, 1) != 1 {}
            LiveCleanup.removeAll()
            _exit(128 + Int32(b))
        }
        t.start()
        for sig in [SIGINT, SIGTERM] {
            var sa = sigaction()
            sa.__sigaction_handler.sa_handler = { sig in
                var b = UInt8(truncatingIfNeeded: sig)
                _ = write(LiveCleanup.signalPipe, &b, 1)
            }
            sigemptyset(&sa.sa_mask)
            sigaction(sig, &sa, nil)
        }
    }
    nonisolated(unsafe) static var signalPipe: Int32 = -1
}
