// KernelCLITests — a kernel-backed `bpflab` run killed with SIGTERM leaves nothing behind on
// the live kernel: its network namespace and bpffs mount are removed before it exits with
// 128 + 15. Skipped with a line where bpf(2) does not work or the binary is not built.
import XCTest
import Foundation
import LiveKernel

final class KernelCLITests: XCTestCase {
    func testSIGTERMDuringAKernelBenchRemovesItsNamespace() throws {
        if let why = LiveBPF.unavailableReason() {
            print("KernelCLITests: skipped — \(why)")
            return
        }
        // The bpflab executable sits beside the test bundle in the build directory.
        var dir = URL(fileURLWithPath: CommandLine.arguments.first ?? "").deletingLastPathComponent()
        if dir.lastPathComponent.hasSuffix(".xctest") { dir = dir.deletingLastPathComponent() }
        let exe = [dir, dir.deletingLastPathComponent()].map { $0.appendingPathComponent("bpflab") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
        guard let exe else {
            print("KernelCLITests: skipped — no bpflab binary beside \(dir.path)")
            return
        }
        let p = Process()
        p.executableURL = exe
        p.arguments = ["bench", "--on", "kernel", "--trials", "40", "--quiet"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let mine = "\(LiveNetns.prefix)\(p.processIdentifier)-"
        // Wait until its dispatcher namespace exists (the bench makes it before measuring).
        var seen = false
        for _ in 0..<200 where !seen {
            seen = LiveNetns.leftovers().contains { $0.hasPrefix(mine) }
            if !seen { usleep(50_000) }
        }
        XCTAssertTrue(seen, "the bench made its namespace")
        usleep(300_000)  // it is attaching programs in there now
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .exit, "it exited (after cleaning up), not killed by the signal")
        XCTAssertEqual(p.terminationStatus, 128 + SIGTERM, "exit status 128 + SIGTERM")
        XCTAssertEqual(LiveNetns.leftovers().filter { $0.hasPrefix(mine) }, [], "its namespace is gone")
        XCTAssertEqual(LiveBPFFS.leftovers().filter { $0.contains("\(p.processIdentifier)-") }, [], "no bpffs mount of it is left")
    }
}
