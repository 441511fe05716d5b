// The CLI's outputs and options (issue 16, findings 6–8): bad rates and paths refused
// before anything is measured, files written whole or not at all, a closed stdout an
// error rather than a SIGPIPE death, an interrupted bench keeps what it measured.
import XCTest
import ArgumentParser
import BPFKernel
@testable import PacketHarness
@testable import bpflab

final class CLIReliabilityTests: XCTestCase {
    func testChurnRatesOutsideOneToTenMillionAreRefused() {
        for bad in ["chain:1e-11", "chain:0.0001", "chain:0.5", "chain:nan", "chain:inf", "chain:2e7", "link:"] {
            XCTAssertThrowsError(try ChurnSpec(parsing: bad), bad)
        }
        XCTAssertEqual(try ChurnSpec(parsing: "chain:1").rate, 1)
        XCTAssertEqual(try ChurnSpec(parsing: "static_key:1e7").rate, 1e7)
    }

    /// One spelling per concept: churn kinds are spelled like design names (prog-array,
    /// static-key); the older '_' spelling is still read, from the command line and files.
    func testChurnKindsAreSpelledWithHyphensAndOldFilesStillRead() throws {
        XCTAssertEqual(try ChurnSpec(parsing: "prog-array:10").kind, .progArray)
        XCTAssertEqual(try ChurnSpec(parsing: "prog_array:10").kind, .progArray)
        XCTAssertEqual(ChurnSpec.Kind.staticKey.rawValue, "static-key")
        let old = try JSONDecoder().decode(ChurnSpec.self, from: Data(#"{"kind":"static_key","rate":5}"#.utf8))
        XCTAssertEqual(old.kind, .staticKey)
        XCTAssertThrowsError(try JSONDecoder().decode(ChurnSpec.self, from: Data(#"{"kind":"warp","rate":5}"#.utf8)))
        XCTAssertTrue(String(decoding: try JSONEncoder().encode(ChurnSpec(kind: .progArray, rate: 1)), as: UTF8.self).contains("prog-array"))
    }

    func testBadOutputPathsAreRefusedBeforeMeasuringWithExit64() throws {
        for args in [["--out", ""], ["--plot", "/nonexistent-dir/x.svg"], ["--plot", NSTemporaryDirectory()], ["--out", "/proc/version"]] {
            let t0 = Date()
            // Refused while the options are validated (so with the bench's usage), before any run.
            XCTAssertThrowsError(try { () throws -> Void in
                var cmd = try BPFLab.parseAsRoot(["bench", "--designs", "chain-pass", "--trials", "2", "--target-ci", "0"] + args)
                try cmd.run()
            }(), "\(args)") { XCTAssertEqual(BPFLab.exitCode(for: $0).rawValue, 64, "\(args)") }
            XCTAssertLessThan(Date().timeIntervalSince(t0), 5, "refused before the run, not after it (\(args))")
        }
    }

    func testAFailedWriteLeavesNoTruncatedFile() throws {
        XCTAssertThrowsError(try OutputFiles.write("x", to: "/nonexistent-dir/f.json"))
        let dir = NSTemporaryDirectory() + "bpflab-full-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "old".write(toFile: dir + "/bench.json", atomically: true, encoding: .utf8)
        // A full disk, simulated: RLIMIT_FSIZE makes writes past 1 KiB fail (EFBIG; its
        // SIGXFSZ ignored), as ENOSPC would.
        var old = rlimit()
        getrlimit(Int32(RLIMIT_FSIZE.rawValue), &old)
        let oldSignal = signal(SIGXFSZ, SIG_IGN)
        var small = old
        small.rlim_cur = 1024
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &small)
        XCTAssertThrowsError(try OutputFiles.write(String(repeating: "x", count: 1 << 16), to: dir + "/bench.json")) { e in
            XCTAssertTrue("\(e)".contains("nothing was written"), "\(e)")
        }
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &old)
        signal(SIGXFSZ, oldSignal)
        XCTAssertEqual(try String(contentsOfFile: dir + "/bench.json", encoding: .utf8), "old", "the old file is untouched")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["bench.json"], "no temporary file left")
        try OutputFiles.write("{\"new\":1}\n", to: dir + "/bench.json")
        XCTAssertEqual(try String(contentsOfFile: dir + "/bench.json", encoding: .utf8), "{\"new\":1}\n")
    }

    /// A closed stdout pipe: the command reports it (exit 1) instead of dying of SIGPIPE.
    func testAClosedStdoutIsAnErrorNotASignal() throws {
        let bin = URL(fileURLWithPath: ScenarioTests.repoRoot).appendingPathComponent(".build/debug/bpflab")
        guard FileManager.default.isExecutableFile(atPath: bin.path) else {
            print("skipped: \(bin.path) is not built (swift build builds it)")
            return
        }
        let p = Process()
        p.executableURL = bin
        p.arguments = ["run", "rfc-selftest"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try out.fileHandleForReading.close()  // nobody reads: the first write gets EPIPE
        try p.run()
        let msg = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)  // before the wait: a full pipe would block it
        p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .exit, "not killed by a signal")
        XCTAssertEqual(p.terminationStatus, 1)
        XCTAssertTrue(msg.contains("standard output"), msg)
    }

    /// SIGINT during a bench: no new window starts; what was measured is reported, partial.
    func testAnInterruptedBenchKeepsWhatItMeasured() throws {
        var c = BenchConfig()
        c.designs = [.baseline, .chainPass, .tailJIT]
        c.trials = 10
        c.targetCI = 0
        c.duration = 0.01
        var asked = 0
        let report = try Bench(c).run(shouldStop: { asked += 1; return asked > 6 })
        XCTAssertTrue(report.partial)
        XCTAssertFalse(report.results.isEmpty)
        XCTAssertLessThan(report.results.count, 10 * 5, "it stopped early")
        XCTAssertTrue(report.table().contains("PARTIAL"))
        XCTAssertTrue(report.json().contains("\"partial\":true"))
    }
}
