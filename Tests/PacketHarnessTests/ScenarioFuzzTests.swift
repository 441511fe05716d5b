// A scenario fuzzer in CI: random and mutated scenario files through the decoder and the
// runner. Every file ends in exit 0, 1 or 2 — never a crash — and every refusal is a
// sentence with a line and a column. Seeded; the seed is printed (BPFLAB_FUZZ_SEED to
// replay, BPFLAB_FUZZ_FILES to change the count).
import XCTest
import BPFKernel
@testable import PacketHarness

typealias SeededRandom = SplitMix64

final class ScenarioFuzzTests: XCTestCase {
    static let edgeNumbers = ["-1", "0", "1", "2", "7", "33", "64", "-5", "4294967295", "4294967296", "99999999999999999999", "0x10", "1e3", "x", "", "~", "[]", "{}"]

    static func words() -> [String] {
        ScenarioVocabulary.operationNames + ScenarioVocabulary.stepNames + ScenarioVocabulary.expectationNames
            + ScenarioVocabulary.topLevel + ScenarioVocabulary.mapKeys + ScenarioVocabulary.programKeys
            + ["p", "q", "jmp", "veth0", "XDP_PASS", "wildcard", "EINVAL", "pass", "drop", "prog_array", "array"]
    }

    static func mutate(_ text: String, _ rng: inout SeededRandom) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let words = ScenarioFuzzTests.words()
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            guard !lines.isEmpty else { break }
            let i = Int.random(in: 0..<lines.count, using: &rng)
            switch Int.random(in: 0..<8, using: &rng) {
            case 0: lines.remove(at: i)
            case 1: lines.insert(lines[i], at: i)
            case 2:  // a number becomes an edge value
                if let r = lines[i].range(of: "-?[0-9]+", options: .regularExpression) {
                    lines[i].replaceSubrange(r, with: edgeNumbers.randomElement(using: &rng)!)
                }
            case 3:  // a word becomes another word of the language
                if let r = lines[i].range(of: "[a-z_]+", options: .regularExpression) {
                    lines[i].replaceSubrange(r, with: words.randomElement(using: &rng)!)
                }
            case 4:  // a typo
                var cs = Array(lines[i])
                if cs.count > 1 { cs.swapAt(Int.random(in: 0..<cs.count, using: &rng), Int.random(in: 0..<cs.count, using: &rng)) }
                lines[i] = String(cs)
            case 5: lines[i] = "  " + lines[i]
            case 6: lines[i] = String(lines[i].prefix(Int.random(in: 0...max(0, lines[i].count), using: &rng)))
            default: lines.insert("  - " + words.randomElement(using: &rng)! + ": " + edgeNumbers.randomElement(using: &rng)!, at: i)
            }
        }
        return lines.joined(separator: "\n")
    }

    /// A random file from the grammar: mostly valid words, random arguments.
    static func random(_ rng: inout SeededRandom) -> String {
        let progs = ["p", "q", "r"]
        var s = "name: fuzz\nmaps:\n  jmp: {type: prog_array, max_entries: \(Int.random(in: 1...4, using: &rng))}\n  arr: {type: array, max_entries: 2}\nprograms:\n"
        s += "  p: {builtin: \(ScenarioVocabulary.builtins.randomElement(using: &rng)!), flags: [chain_calls]}\n"
        s += "  q: {returns: \(edgeNumbers.prefix(9).randomElement(using: &rng)!)}\n"
        s += "  r: {steps: [{count: c}, {tail_call: {array: jmp, index: \(Int.random(in: 0...3, using: &rng))}}, {return: 2}], engine: \(["jit", "interp", "direct", "machine", "machine-direct"].randomElement(using: &rng)!)}\n"
        s += "sequence:\n"
        for _ in 0..<Int.random(in: 1...12, using: &rng) {
            let p = progs.randomElement(using: &rng)!, p2 = progs.randomElement(using: &rng)!
            let n = edgeNumbers.prefix(9).randomElement(using: &rng)!
            let ops = [
                "attach: \(p)", "detach: {}", "packets: \(Int.random(in: 0...200, using: &rng))", "test_run: \(p)",
                "chain_add: {prev: \(p), retcode: \(["wildcard", "XDP_PASS", n].randomElement(using: &rng)!), next: \(p2)}",
                "chain_del: {prev: \(p), retcode: \(n)}", "chain_get: {prev: \(p), retcode: wildcard}",
                "map_update: {map: jmp, key: \(n), program: \(p)}", "map_delete: {map: jmp, key: \(n)}", "map_lookup: {map: arr, key: \(n)}",
                "close: \(p)", "pin: {object: \(p), path: /sys/fs/bpf/x}", "unpin: /sys/fs/bpf/x", "mkdir: /sys/fs/bpf/d",
                "link: {name: l\(Int.random(in: 0...2, using: &rng)), program: \(p)}", "stats: on", "rcu_barrier",
                "get_fd_by_id: {kind: prog, id: \(n), as: g\(Int.random(in: 0...99, using: &rng))}", "next_id: {kind: map, after: \(n)}",
            ]
            s += "  - " + ops.randomElement(using: &rng)! + "\n"
            if Bool.random(using: &rng) {
                s += "    expect: {" + ["errno: EINVAL", "live_objects: \(n)", "retval: \(n)", "verdicts: {PASS: \(n)}", "counters: {c: \(n)}", "pending_free: 0"].randomElement(using: &rng)! + "}\n"
            }
        }
        return s
    }

    func testRandomAndMutatedScenarioFilesEndInZeroOneOrTwo() throws {
        let env = ProcessInfo.processInfo.environment
        let seed = env["BPFLAB_FUZZ_SEED"].flatMap { UInt64($0) } ?? UInt64(Date().timeIntervalSince1970)
        let files = env["BPFLAB_FUZZ_FILES"].flatMap { Int($0) } ?? 3000
        print("scenario fuzz: seed \(seed) (BPFLAB_FUZZ_SEED=\(seed) replays), \(files) files")
        var rng = SeededRandom(seed: seed)
        let shipped = ShippedScenarios.all.compactMap { try? String(contentsOfFile: $0.path, encoding: .utf8) }
        var exits = [0, 0, 0]
        for i in 0..<files {
            let text: String
            switch i % 3 {
            case 0: text = ScenarioFuzzTests.random(&rng)
            case 1: text = ScenarioFuzzTests.mutate(shipped.randomElement(using: &rng)!, &rng)
            default: text = ScenarioFuzzTests.mutate(ScenarioFuzzTests.random(&rng), &rng)
            }
            do {
                let out = try ScenarioRunner(yaml: text, source: "fuzz").run()
                exits[out.passed ? 0 : 1] += 1
                XCTAssertEqual(out.liveAfterTeardown, 0, "file \(i) (seed \(seed)) leaked:\n\(text)")
                XCTAssertEqual(out.violations, [], "file \(i) (seed \(seed)):\n\(text)")
            } catch let e as ScenarioError {
                exits[2] += 1
                XCTAssertGreaterThan(e.line, 0)
                XCTAssertGreaterThan(e.column, 0)
                XCTAssertFalse(e.message.isEmpty)
                XCTAssertLessThan(e.message.count, 1000)
            } catch {
                XCTFail("file \(i) (seed \(seed)): not a scenario error: \(error)\n\(text)")
            }
        }
        print("scenario fuzz: exit 0: \(exits[0]), exit 1: \(exits[1]), exit 2: \(exits[2])")
        XCTAssertGreaterThan(exits[0] + exits[1], files / 10, "enough files run to exercise the runner")
        XCTAssertGreaterThan(exits[2], files / 10, "enough files are refused to exercise the decoder")
    }
}
