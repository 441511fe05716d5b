// RandomDifferentialTests — random operation sequences (load, close, map create / update /
// delete / lookup, test runs, attach and detach with flags, links, pins, get-fd-by-id) run
// on the lab and on this machine's kernel, compared after every step. 10^4 operations per
// CI run (BPFLAB_DIFF_OPS), seeded (BPFLAB_DIFF_SEED; the seed is printed). A disagreement
// is shrunk to a minimal sequence and printed as a scenario file, to keep as a regression
// test. Skipped with a line where bpf(2) does not work.
import XCTest
import Foundation
import LiveKernel
import PacketHarness
@testable import BPFKernel

final class RandomDifferentialTests: XCTestCase {
    func disagreements(_ ops: [RandomOp], seed: UInt64) throws -> [StepComparison] {
        let runner = try ScenarioRunner(yaml: RandomOpRunner.scenarioFile(ops, seed: seed))
        return ScenarioComparison.compare(runner).disagreements
    }

    func testRandomOperationsAgreeWithTheLiveKernelAfterEveryStep() throws {
        if let why = LiveBPF.unavailableReason() {
            print("RandomDifferentialTests: skipped — \(why)")
            return
        }
        let env = ProcessInfo.processInfo.environment
        let seed = UInt64(env["BPFLAB_DIFF_SEED"] ?? "") ?? 20_261_201
        let total = Int(env["BPFLAB_DIFF_OPS"] ?? "") ?? 10_000
        print("RandomDifferentialTests: seed \(seed), \(total) operations")
        var rng = SplitMix64(seed: seed)
        var done = 0, compared = 0, sequences = 0, kept = 0, waited = 0.0
        while done < total {
            let ops = (0..<40).map { _ in RandomOperationTests.randomOp(&rng) }
            let text = RandomOpRunner.scenarioFile(ops, seed: seed)
            let runner: ScenarioRunner
            do { runner = try ScenarioRunner(yaml: text) } catch {
                XCTFail("sequence \(sequences) of seed \(seed) was written as a file the checker refuses: \(error)\n\(text)")
                return
            }
            let result = ScenarioComparison.compare(runner)
            let rows = result.rows
            waited += result.waitedForState
            if !result.keptByKernel.isEmpty {
                kept += result.keptByKernel.count
                print("RandomDifferentialTests: sequence \(sequences): the kernel kept \(result.keptByKernel) after the run closed everything:\n" +
                      RandomOpRunner.scenarioFile(ops, seed: seed))
            }
            let first = rows.filter { $0.disagreement != nil }
            if !first.isEmpty {
                print("RandomDifferentialTests: sequence \(sequences) disagrees: " +
                      first.map { "step \($0.step) \($0.what): \($0.disagreement!)" }.joined(separator: "; "))
                // Shrink: drop chunks of operations while a disagreement remains.
                var cur = ops
                var chunk = max(1, cur.count / 2)
                while chunk >= 1 {
                    var i = 0, removed = false
                    while i < cur.count {
                        let candidate = Array(cur[..<i]) + Array(cur[min(cur.count, i + chunk)...])
                        if !(try disagreements(candidate, seed: seed)).isEmpty { cur = candidate; removed = true } else { i += chunk }
                    }
                    if !removed { chunk /= 2 }
                }
                let bad = try disagreements(cur, seed: seed)
                XCTFail("the lab and the kernel disagree (seed \(seed), sequence \(sequences)): " +
                        bad.map { "step \($0.step) \($0.what): \($0.disagreement!)" }.joined(separator: "; ") +
                        "\nminimal scenario:\n" + RandomOpRunner.scenarioFile(cur, seed: seed))
                return
            }
            compared += rows.filter { $0.kernel == "ok" || $0.kernel.hasPrefix("retval") || $0.kernel.hasPrefix("value") || Errno(name: $0.kernel) != nil }.count
            done += ops.count
            sequences += 1
        }
        print("RandomDifferentialTests: \(sequences) sequences, \(done) operations, \(compared) steps compared with the kernel, no disagreement; objects the kernel kept after a run: \(kept); \(String(format: "%.1f", waited)) s waited for the kernel's background frees")
        XCTAssertGreaterThan(compared, done / 10, "enough of the operations reach the kernel to compare")
    }
}
