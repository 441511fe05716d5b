// `bench --scenario`: a user's own configuration measured as a design, with the bench's
// method; a scenario that cannot be measured is refused with why, leaving nothing behind.
import XCTest
import BPFKernel
@testable import PacketHarness
@testable import bpflab

final class ScenarioBenchTests: XCTestCase {
    private func design(_ yaml: String, _ name: String) throws -> DesignID {
        let d = try ScenarioRunner(yaml: yaml, source: name).benchDesign()
        try DesignRegistry.addUserDesign(d)
        return d.id
    }

    private let pipeline = """
        maps:
          stages: {type: prog_array, max_entries: 4}
        programs:
          drop_stage: {builtin: drop}
          root: {steps: [{count: seen}, {tail_call: {array: stages, index: 1}}, {return: 2}]}
        slots:
          stages: {1: drop_stage}
        sequence:
          - attach: root
          - packets: 8
            expect: {verdicts: {DROP: 8}, counters: {seen: 8}}
        """

    func testAScenarioIsMeasuredAgainstTheBaselineAndTornDown() throws {
        let id = try design("name: pipeline-a\n" + pipeline, "a.yaml")
        var c = BenchConfig()
        c.designs = [.baseline, id]
        c.trials = 2
        c.targetCI = 0
        let bench = try Bench(c)
        let report = try bench.run()
        let s = try XCTUnwrap(report.summaries.first { $0.design == id })
        XCTAssertEqual(s.title, "Scenario: pipeline-a")
        XCTAssertNotNil(s.overheadNs)
        XCTAssertTrue(report.results.filter { $0.design == id }.allSatisfy { $0.counters.verdicts[1] == $0.counters.received },
                      "every packet of the scenario's program dropped")
        bench.kernel.quiesce()
        XCTAssertEqual(bench.kernel.liveObjects, 0, "the scenario's objects were closed after the run")
    }

    func testAScenarioWhoseExpectationFailsOrThatAttachesNothingIsRefused() throws {
        let wrong = try design("name: pipeline-b\n" + pipeline.replacingOccurrences(of: "DROP: 8", with: "PASS: 8"), "b.yaml")
        let idle = try design("name: idle\nprograms:\n  p: {builtin: drop}\nsequence:\n  - test_run: p\n    expect: {retval: 1}\n", "c.yaml")
        for (id, why) in [(wrong, "cannot be measured"), (idle, "leaves no XDP program attached")] {
            var c = BenchConfig()
            c.designs = [.baseline, id]
            c.trials = 2
            let bench = try Bench(c)
            XCTAssertThrowsError(try bench.run()) { XCTAssertTrue("\($0)".contains(why), "\($0)") }
            bench.kernel.quiesce()
            XCTAssertEqual(bench.kernel.liveObjects, 0, "\(id): nothing left behind")
        }
    }

    func testABadScenarioFileIsAnOptionErrorThatSaysWhere() throws {
        let path = NSTemporaryDirectory() + "bpflab-bad-\(getpid()).yaml"
        try "name: bad\nprograms:\n  p: {bultin: drop}\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertThrowsError(try BPFLab.parseAsRoot(["bench", "--scenario", path])) { e in
            let text = BPFLab.fullMessage(for: e)
            XCTAssertTrue(text.contains("--scenario") && text.contains("line 3, column 7") && text.contains("did you mean 'builtin'"), text)
            XCTAssertTrue(text.contains("Usage: bpflab bench"), text)
        }
    }
}
