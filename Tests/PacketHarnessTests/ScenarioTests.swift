// Scenario files: every shipped scenario passes through `bpflab run` and leaks nothing; a
// failed expectation is exit 1 and names the step; an invalid file is exit 2 with line,
// column and, when close to a known word, a suggestion — before any step runs.
import XCTest
import ArgumentParser
import BPFKernel
@testable import PacketHarness
@testable import bpflab
import LiveKernel

final class ScenarioTests: XCTestCase {
    func testEveryShippedScenarioPassesAndLeaksNothing() throws {
        let all = ShippedScenarios.all
        XCTAssertGreaterThanOrEqual(all.count, 15, "the shipped curriculum is found")
        for s in all {
            var options = ScenarioRunOptions()
            options.auditEveryStep = true  // and the auditor is clean after every step of every one
            let outcome = try Run.load(s.name).0.run(options)
            XCTAssertTrue(outcome.passed, "\(s.name): \(outcome.failures)")
            XCTAssertEqual(outcome.liveAfterTeardown, 0, "\(s.name) leaked")
            XCTAssertEqual(outcome.violations, [], "\(s.name)")
            XCTAssertFalse(outcome.lines.isEmpty)
        }
    }

    func testEveryShippedScenarioHoldsWithInterpretedProgramsCompiledToBytecode() throws {
        // The step interpreter and the bytecode interpreter are the same engine: every
        // program a shipped scenario runs with engine: interp, compiled to instructions,
        // gives the same results.
        var compiled = 0
        for s in ShippedScenarios.all {
            let runner = try Run.load(s.name).0
            if !runner.file.programs.contains(where: { $0.spec.engine == .interp }) { continue }
            var options = ScenarioRunOptions()
            options.auditEveryStep = true
            options.bytecodeForInterp = true
            let outcome = runner.run(options)
            XCTAssertTrue(outcome.passed, "\(s.name) on bytecode: \(outcome.failures)")
            XCTAssertEqual(outcome.liveAfterTeardown, 0, "\(s.name) leaked")
            compiled += 1
        }
        XCTAssertGreaterThanOrEqual(compiled, 3, "scenarios with interpreted programs are found")
    }

    func testEveryShippedScenarioAgreesWithThisMachinesKernel() throws {
        // The live kernel as the oracle: every step either agrees (errno, test-run value,
        // map values) or says why it cannot be compared (lab only, refused by this kernel,
        // not observable). Skipped with a line where bpf(2) does not work.
        if let why = LiveBPF.unavailableReason() {
            print("ScenarioTests: --on both skipped — \(why)")
            return
        }
        var compared = 0
        for s in ShippedScenarios.all {
            let result = ScenarioComparison.compare(try Run.load(s.name).0)
            let rows = result.rows
            XCTAssertEqual(result.keptByKernel, [], "\(s.name): the kernel keeps nothing of the run once it is closed")
            for r in rows where r.disagreement != nil {
                XCTFail("\(s.name) step \(r.step) (line \(r.line)) \(r.what): lab \(r.lab), kernel \(r.kernel): \(r.disagreement!)")
            }
            compared += rows.filter { !$0.kernel.hasPrefix("lab only") && !$0.kernel.hasPrefix("refused") && !$0.kernel.hasPrefix("not observable") && !$0.kernel.contains("not comparable") }.count
        }
        XCTAssertGreaterThanOrEqual(compared, 60, "enough steps are compared on the kernel")
        print("ScenarioTests: \(compared) steps of the shipped scenarios compared with the live kernel, all agree")
    }

    func testBothBackendsShowTheSameObjectsSlotsAttachmentsAndLinksAfterEachStep() throws {
        // The state after every step (objects alive, ID order, prog-array slots, XDP
        // attachments, links) is taken on both backends and compared; here it is also read.
        if let why = LiveBPF.unavailableReason() {
            print("ScenarioTests: state comparison skipped — \(why)")
            return
        }
        let yaml = """
        name: state
        maps:
          jmp: {type: prog_array, max_entries: 2}
        programs:
          p: {builtin: pass}
          q: {builtin: drop}
        sequence:
          - map_update: {map: jmp, key: 1, program: p}
          - close: p
          - attach: q
          - detach: {}
          - link: {name: l, program: q}
          - link_detach: l
          - map_delete: {map: jmp, key: 1}
          - link: {name: l2, program: q, mode: skb}
          - link: {name: l3, program: q}
            expect: {errno: EEXIST}                # native and generic XDP at once
        """
        let result = ScenarioComparison.compare(try ScenarioRunner(yaml: yaml))
        XCTAssertEqual(result.disagreements.map(\.what), [])
        let lab = result.outcome.states.mapValues { $0.rendered() }
        XCTAssertEqual(lab[1]?["slots jmp"], "1 p")
        XCTAssertEqual(lab[2]?["alive p"], "yes", "closed, but the prog array holds it")
        XCTAssertEqual(lab[3]?["xdp veth0"], "drv q")
        XCTAssertNil(lab[4]?["xdp veth0"])
        XCTAssertEqual(lab[5]?["xdp veth0"], "drv q")
        XCTAssertEqual(lab[5]?["link l"], "prog q on veth0")
        XCTAssertEqual(lab[6]?["link l"], "prog q, detached")
        XCTAssertNil(lab[6]?["xdp veth0"])
        XCTAssertEqual(lab[7]?["alive p"], "no", "out of the array and closed: its ID is gone")
        XCTAssertEqual(lab[7]?["ids prog"], nil, "one program left: no order to show")
        XCTAssertEqual(lab[8]?["xdp veth0"], "skb q")
        XCTAssertEqual(lab[9]?["ids link"], "l < l2")
        XCTAssertEqual(result.keptByKernel, [])
    }

    func testAStateDifferenceIsADisagreementNamingTheLine() {
        var lab = ObservedState(), kernel = ObservedState()
        lab.objects = [.init(label: "p", name: "p", kind: "prog", id: 7, alive: true), .init(label: "p#2", name: "p", kind: "prog", id: 9, alive: true)]
        kernel.objects = [.init(label: "p", name: "p", kind: "prog", id: 30, alive: false), .init(label: "p#2", name: "p", kind: "prog", id: 31, alive: true)]
        let d = ObservedState.differences(lab: lab.rendered(), kernel: kernel.rendered())
        XCTAssertEqual(d, ["alive p: lab yes, kernel no", "ids prog: lab p < p#2, kernel —"])
        XCTAssertEqual(ObservedState.differences(lab: lab.rendered(excluding: ["p"]), kernel: kernel.rendered(excluding: ["p"])), [],
                       "a name one backend does not have is left out")
        lab.objects[1].id = 7
        XCTAssertEqual(lab.rendered()["ids prog"], "p < p#2 (IDs repeat)")
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
        XCTAssertEqual(out.failures, ["step 2 (line 6): expected PASS=10, got 0"])
        let path = NSTemporaryDirectory() + "bpflab-wrong.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        var cmd = try BPFLab.parseAsRoot(["run", path, "--quiet"])
        XCTAssertThrowsError(try cmd.run()) { XCTAssertEqual(BPFLab.exitCode(for: $0).rawValue, 1) }
    }

    /// (yaml, line, a fragment the message must contain)
    static let invalidFiles: [(String, Int, String)] = [
        ("name: x\nsequence: [\n", 3, "YAML"),
        ("name: x\nprograms:\n  p: {builtin: frob}\nsequence: []\n", 3, "unknown builtin"),
        ("name: x\nsequence:\n  - attach: nope\n", 3, "no program named 'nope'"),
        ("name: x\nsequence:\n  - explode: 1\n", 3, "unknown operation"),
        ("name: x\nsequence:\n  - packets: many\n", 3, "is a number"),
        ("name: x\nfrobs: 1\nsequence: []\n", 2, "unknown key 'frobs'"),
        // numbers the kernel's types cannot hold
        ("name: x\nprograms:\n  p: {returns: -2}\nsequence: []\n", 3, "between -1 and 4294967295"),
        ("name: x\nmaps:\n  m: {type: array, max_entries: -5}\nsequence: []\n", 3, "max_entries"),
        ("name: x\nmaps:\n  m: {type: prog_array}\nprograms:\n  p: {steps: [{tail_call: {array: m, index: -1}}, {return: 1}]}\nsequence: []\n", 5, "index"),
        ("name: x\nmaps:\n  m: {type: array}\nsequence:\n  - map_update: {map: m, key: -1, value: 1}\n", 5, "key"),
        ("name: x\nsequence:\n  - packets: 100000000000\n", 3, "between 0 and 100000000"),
        ("name: x\nsequence:\n  - packets: -3\n", 3, "between 0"),
        ("name: x\ndevice: {queues: 0}\nsequence: []\n", 2, "queues"),
        ("name: x\nmaps:\n  a: {type: array, max_entries: 16777216, value_size: 16}\n  b: {type: array, max_entries: 16777216, value_size: 16}\nsequence: []\n", 4, "MiB of maps"),
        ("name: x\nprograms:\n  p: {returns: 1}\nsequence:\n  - test_run: {program: p, repeat: 100000000}\n", 5, "repeat"),
        // unknown keys everywhere the old parser ignored them, with suggestions
        ("name: x\nprograms:\n  p: {builtin: pass}\nsequence:\n  - attach: {program: p, mdoe: skb}\n", 5, "did you mean 'mode'"),
        ("name: x\nprograms:\n  p: {builtin: pass}\nsequence:\n  - test_run: {program: p, repat: 2}\n", 5, "did you mean 'repeat'"),
        ("name: x\nsequence:\n  - packets: {count: 1, devce: veth0}\n", 3, "did you mean 'device'"),
        ("name: x\nprograms:\n  p: {builtin: pass}\nsequence:\n  - link: {name: l, program: p, cokie: 1}\n", 5, "did you mean 'cookie'"),
        ("name: x\nprograms:\n  p: {buitin: pass}\nsequence: []\n", 3, "did you mean 'builtin'"),
        ("name: x\nprograms:\n  p: {steps: [{cuont: a}, {return: 1}]}\nsequence: []\n", 3, "did you mean 'count'"),
        ("name: x\nprograms:\n  p: {builtin: pass}\nsequence:\n  - attach: p\n    expect: {verdcts: {PASS: 1}}\n", 6, "did you mean 'verdicts'"),
        ("name: x\nsequnce: []\n", 2, "did you mean 'sequence'"),
        // the third step misspelled: refused before the first runs
        ("name: x\nprograms:\n  p: {builtin: pass}\nsequence:\n  - attach: p\n  - packets: 1\n  - pakets: 1\n", 7, "did you mean 'packets'"),
        // structure
        ("name: x\nsequence: []\nsequence: []\n", 3, "appears twice"),
        ("name: x\nprograms:\n  p: {builtin: pass}\n  p: {builtin: drop}\nsequence: []\n", 4, "declared twice"),
        ("name: x\nsequence:\n  - detach\n    expect: {errno: EINVAL}\n", 4, "detach: {}"),
        ("name: x\nsequence: " + String(repeating: "[", count: 3000) + String(repeating: "]", count: 3000) + "\n", 2, "nesting deeper"),
        ("a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n", 6, "expands to more than"),
        ("name: x\nprograms:\n  p: {builtin: pass}\nsequence:\n  - close: p\n  - attach: p\n", 6, "load it again"),
        ("name: x\nsequence:\n  - stats: {as: s}\n  - close: s\n  - close: s\n", 5, "no object named 's'"),
        ("name: x\nmaps:\n  m: {type: array}\nsequence:\n  - attach: m\n", 5, "is a map, not a program"),
    ]

    func testInvalidFilesAreErrorsWithLineColumnAndReason() throws {
        for (yaml, line, fragment) in ScenarioTests.invalidFiles {
            do {
                _ = try ScenarioRunner(yaml: yaml)
                XCTFail("accepted: \(yaml.prefix(120))")
            } catch let e as ScenarioError {
                XCTAssertEqual(e.line, line, "\(yaml.prefix(120)) → \(e)")
                XCTAssertGreaterThan(e.column, 0)
                XCTAssertTrue(e.message.contains(fragment), "\(e) should say '\(fragment)'")
                XCTAssertLessThan(e.message.count, 600, "messages never dump nodes")
            }
        }
        let path = NSTemporaryDirectory() + "bpflab-bad.yaml"
        try ScenarioTests.invalidFiles[2].0.write(toFile: path, atomically: true, encoding: .utf8)
        var cmd = try BPFLab.parseAsRoot(["run", path])
        XCTAssertThrowsError(try cmd.run()) { XCTAssertEqual(BPFLab.exitCode(for: $0).rawValue, 2) }
        var check = try BPFLab.parseAsRoot(["run", "--check", path])
        XCTAssertThrowsError(try check.run()) { XCTAssertEqual(BPFLab.exitCode(for: $0).rawValue, 2) }
        var missing = try BPFLab.parseAsRoot(["run", "no-such-scenario"])
        XCTAssertThrowsError(try missing.run()) { XCTAssertEqual(BPFLab.exitCode(for: $0).rawValue, 2) }
    }

    func testCannotReadSaysWhy() throws {
        let dir = NSTemporaryDirectory()
        let bin = dir + "bpflab-binary.yaml", latin = dir + "bpflab-latin1.yaml"
        try Data([0x6e, 0x61, 0x00, 0x01]).write(to: URL(fileURLWithPath: bin))
        try Data([0x6e, 0x61, 0x6d, 0x65, 0x3a, 0x20, 0xe9, 0x0a]).write(to: URL(fileURLWithPath: latin))
        for (path, why) in [(dir, "directory"), (bin, "binary"), (latin, "not UTF-8"), ("rfc-selftst", "did you mean 'rfc-selftest'")] {
            XCTAssertThrowsError(try Run.load(path)) { e in
                XCTAssertTrue("\(e)".contains(why), "\(path): \(e)")
            }
        }
    }

    func testCheckValidatesWithoutRunningAndJSONHasOneObjectPerStep() throws {
        var check = try BPFLab.parseAsRoot(["run", "--check", "rfc-selftest"])
        XCTAssertNoThrow(try check.run())
        let runner = try Run.load("rfc-selftest").0
        let out = runner.run()
        XCTAssertEqual(out.records.count, runner.file.steps.count)
        let data = try JSONEncoder().encode(out.records[0])
        let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        for k in ["step", "line", "operation", "arguments", "result", "observed", "passed"] {
            XCTAssertNotNil(obj?[k], "JSON step records carry \(k)")
        }
        XCTAssertTrue(out.lines.contains { $0.contains("chain_add pass[wildcard] → drop → ok") }, "\(out.lines)")
    }

    /// One source of truth: every word the parser accepts is in the README.
    func testEveryWordOfTheVocabularyIsDocumentedInTheREADME() throws {
        let readme = try String(contentsOfFile: ScenarioTests.repoRoot + "/README.md", encoding: .utf8)
        for w in ScenarioVocabulary.operationNames + ScenarioVocabulary.stepNames + ScenarioVocabulary.expectationNames {
            XCTAssertTrue(readme.contains("`\(w)"), "README does not document `\(w)`")
        }
    }

    static var repoRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }
}
