// Scenario files: every shipped scenario passes through `bpflab run`, a failed expectation
// is exit 1 and names the step, an invalid file is exit 2 with line and column.
import XCTest
import ArgumentParser
@testable import PacketHarness
@testable import bpflab

final class ScenarioTests: XCTestCase {
    func testEveryShippedScenarioPasses() throws {
        let all = ShippedScenarios.all
        XCTAssertGreaterThanOrEqual(all.count, 6, "the shipped scenarios are found")
        for s in all {
            let outcome = try Run.execute(s.name, quiet: true)
            XCTAssertTrue(outcome.passed, "\(s.name): \(outcome.failures)")
            XCTAssertFalse(outcome.lines.isEmpty)
        }
    }

    func testAFailedExpectationNamesTheStepAndExitsOne() throws {
        let yaml = """
        name: wrong
        programs:
          d: {builtin: drop}
        sequence:
          - attach: d
          - packets: 10
            expect: {verdicts: {PASS: 10}}
        """
        let out = try ScenarioRunner(yaml: yaml).run()
        XCTAssertEqual(out.failures, ["step 2: expected PASS=10, got 0"])
        let path = NSTemporaryDirectory() + "bpflab-wrong.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        var cmd = try BPFLab.parseAsRoot(["run", path, "--quiet"])
        XCTAssertThrowsError(try cmd.run()) { XCTAssertEqual(BPFLab.exitCode(for: $0).rawValue, 1) }
    }

    func testInvalidFilesAreErrorsWithLineAndColumn() throws {
        let cases: [(String, Int)] = [
            ("name: x\nsequence: [\n", 3),                                  // YAML syntax
            ("name: x\nprograms:\n  p: {builtin: frob}\nsequence: []\n", 3), // unknown builtin
            ("name: x\nsequence:\n  - attach: nope\n", 3),                  // undeclared program
            ("name: x\nsequence:\n  - explode: 1\n", 3),                    // unknown operation
            ("name: x\nsequence:\n  - packets: many\n", 3),                 // not a number
            ("name: x\nfrobs: 1\nsequence: []\n", 2),                       // unknown key
        ]
        for (yaml, line) in cases {
            do {
                _ = try ScenarioRunner(yaml: yaml).run()
                XCTFail("accepted: \(yaml)")
            } catch let e as ScenarioError {
                XCTAssertEqual(e.line, line, "\(yaml) → \(e)")
                XCTAssertGreaterThan(e.column, 0)
                XCTAssertFalse(e.message.isEmpty)
            }
        }
        let path = NSTemporaryDirectory() + "bpflab-bad.yaml"
        try cases[2].0.write(toFile: path, atomically: true, encoding: .utf8)
        var cmd = try BPFLab.parseAsRoot(["run", path])
        XCTAssertThrowsError(try cmd.run()) { XCTAssertEqual(BPFLab.exitCode(for: $0).rawValue, 2) }
        var missing = try BPFLab.parseAsRoot(["run", "no-such-scenario"])
        XCTAssertThrowsError(try missing.run()) { XCTAssertEqual(BPFLab.exitCode(for: $0).rawValue, 2) }
    }
}
