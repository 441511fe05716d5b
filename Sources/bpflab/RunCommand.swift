// `bpflab run FILE.yaml|NAME` and `bpflab scenarios`: scenario files (Harness/Scenario.swift).
import ArgumentParser
import Foundation
import PacketHarness

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a scenario file (or a shipped scenario by name) and check its expectations.",
        discussion: "Exit 0 when every expectation holds, 1 when one fails (each is named), 2 when the file is invalid (with line and column)."
    )

    @Argument(help: "A .yaml file, or the name of a shipped scenario (see `bpflab scenarios`).")
    var scenario: String

    @Flag(help: "Print only failures and the summary.")
    var quiet = false

    func run() throws {
        do {
            let outcome = try Run.execute(scenario, quiet: quiet)
            if !outcome.passed { throw ExitCode(1) }
        } catch let e as ScenarioFileError {
            FileHandle.standardError.write(Data("error: \(e.text)\n".utf8))
            throw ExitCode(2)
        }
    }

    /// Runs a scenario by path or shipped name; prints what happened. Invalid files throw
    /// ValidationError-like errors carrying exit code 2.
    static func execute(_ scenario: String, quiet: Bool = false) throws -> ScenarioOutcome {
        var path = scenario
        if !FileManager.default.fileExists(atPath: path) {
            guard let s = ShippedScenarios.all.first(where: { $0.name == scenario }) else {
                throw ScenarioFileError(text: "'\(scenario)' is neither a file nor a shipped scenario (see `bpflab scenarios`)")
            }
            path = s.path
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ScenarioFileError(text: "cannot read '\(path)'")
        }
        let outcome: ScenarioOutcome
        do {
            outcome = try ScenarioRunner(yaml: text, source: path).run()
        } catch let e as ScenarioError {
            throw ScenarioFileError(text: "\(path): \(e)")
        }
        if !quiet { for l in outcome.lines { print(l) } }
        for f in outcome.failures { print("FAILED \(f)") }
        print("\(outcome.name): \(outcome.passed ? "all expectations hold" : "\(outcome.failures.count) expectation(s) failed")")
        return outcome
    }
}

/// An invalid scenario file: exit code 2.
struct ScenarioFileError: Error, CustomStringConvertible {
    let text: String
    var description: String { text }
}

struct Scenarios: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the example scenarios shipped with the harness.")

    func run() throws {
        for s in ShippedScenarios.all {
            let desc = (try? String(contentsOfFile: s.path, encoding: .utf8))
                .flatMap { $0.split(separator: "\n").first { $0.hasPrefix("description:") } }
                .map { String($0.dropFirst("description:".count)).trimmingCharacters(in: .whitespaces) } ?? ""
            print("\(s.name.padding(toLength: 22, withPad: " ", startingAt: 0)) \(desc)")
        }
    }
}
