// `bpflab run FILE.yaml|NAME` and `bpflab scenarios`: scenario files (Harness/Scenario/).
import ArgumentParser
import Foundation
import PacketHarness
import BPFInstructions
import LiveKernel

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a scenario file (or a shipped scenario by name) and check its expectations.",
        discussion: "The whole file is checked before anything runs. Exit 0 when every expectation holds, 1 when one fails (each is named with its step and line) or something leaked, 2 when the file is invalid (with line and column), 3 with --on both when the lab and this machine's kernel disagree at a step (both sides printed), 130 when interrupted."
    )

    enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
        case text, json
    }

    @Argument(help: "A .yaml file, or the name of a shipped scenario (see `bpflab scenarios`).")
    var scenario: String

    @Flag(help: "Print only failures and the summary.")
    var quiet = false

    @Flag(help: "Check the file (every key, name and number) without running it.")
    var check = false

    @Option(help: "Output: text (a line per step) or json (one object per step, then a summary object).")
    var format: OutputFormat = .text

    @Flag(help: "Run every 'engine: interp' program (steps, builtins) as compiled instructions on the bytecode interpreter.")
    var bytecode = false

    @Flag(help: "Run the auditor after every step (every reference accounted for; a finding fails the step).")
    var audit = false

    enum Backend: String, ExpressibleByArgument, CaseIterable { case lab, both }

    @Option(help: "lab (the simulated kernel), or both: the lab, then every step on this machine's kernel too, compared step by step (lab only / refused by this kernel / not observable are said, never failures).")
    var on: Backend = .lab

    func run() throws {
        StandardOutput.ignoreSIGPIPE()
        do {
            let (runner, path) = try Run.load(scenario)
            if check {
                try StandardOutput.write(format == .json
                    ? "{\"scenario\":\(jsonString(runner.name)),\"valid\":true,\"steps\":\(runner.file.steps.count)}\n"
                    : "\(path): valid (\(runner.file.steps.count) steps)\n")
                return
            }
            Interrupt.install()
            var options = ScenarioRunOptions()
            options.shouldStop = { Interrupt.wasRequested }
            options.auditEveryStep = audit
            options.bytecodeForInterp = bytecode
            options.progress = { FileHandle.standardError.write(Data("\($0)\n".utf8)) }
            if on == .both {
                LiveCleanup.installSignalHandling()  // the netns and mounts go even on SIGTERM
                if let why = LiveBPF.unavailableReason() { throw ScenarioFileError(text: "--on both: the live kernel is not usable here: \(why)") }
                options.progress = nil
                var text = "live kernel: " + LiveProbe.run().map(\.line).joined(separator: "; ") + "\n"
                let result = ScenarioComparison.compare(runner, options: options)
                let (outcome, rows) = (result.outcome, result.rows)
                for r in rows {
                    text += "step \(r.step) (line \(r.line)) \(r.what): lab \(r.lab) | kernel \(r.kernel)"
                    text += r.disagreement.map { " — DISAGREE: \($0)" } ?? ""
                    text += "\n"
                }
                let bad = rows.filter { $0.disagreement != nil }
                text += "\(runner.name): \(rows.count) steps; \(bad.isEmpty ? "the lab and this kernel agree" : "\(bad.count) disagreement(s): the kernel is right") (lab only: \(rows.filter { $0.kernel.hasPrefix("lab only") }.count), refused by this kernel: \(rows.filter { $0.kernel.hasPrefix("refused") }.count), not observable: \(rows.filter { $0.kernel.hasPrefix("not observable") }.count))\n"
                if !result.keptByKernel.isEmpty {
                    text += "note: after the run closed everything, this kernel still publishes \(result.keptByKernel.joined(separator: ", ")) (a reference the kernel leaked; see README, \"The live kernel\")\n"
                }
                try StandardOutput.write(text)
                if !bad.isEmpty { throw ExitCode(3) }
                if !outcome.passed { throw ExitCode(1) }
                return
            }
            let outcome = runner.run(options)
            try Run.report(outcome, format: format, quiet: quiet)
            if outcome.interrupted { throw ExitCode(130) }
            if !outcome.passed { throw ExitCode(1) }
        } catch let e as ScenarioFileError {
            FileHandle.standardError.write(Data("error: \(e.text)\n".utf8))
            throw ExitCode(2)
        }
    }

    /// Reads and checks a scenario by path or shipped name. Invalid files throw
    /// ScenarioFileError (exit code 2), saying where and why.
    static func load(_ scenario: String) throws -> (ScenarioRunner, String) {
        var path = scenario
        var isDir: ObjCBool = false
        if !FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            guard let s = ShippedScenarios.all.first(where: { $0.name == scenario }) else {
                var msg = "'\(scenario)' is neither a file nor a shipped scenario (see `bpflab scenarios`)"
                if let m = suggestion(for: scenario, in: ShippedScenarios.all.map(\.name)) { msg += "; did you mean '\(m)'?" }
                throw ScenarioFileError(text: msg)
            }
            path = s.path
        } else if isDir.boolValue {
            throw ScenarioFileError(text: "cannot read '\(path)': it is a directory")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ScenarioFileError(text: "cannot read '\(path)': \(String(cString: strerror(errno)))")
        }
        if data.count > ScenarioLimits.maxFileBytes {
            throw ScenarioFileError(text: "cannot read '\(path)': \(data.count) bytes; scenario files are at most \(ScenarioLimits.maxFileBytes) bytes")
        }
        if data.contains(0) { throw ScenarioFileError(text: "cannot read '\(path)': it is a binary file (it contains NUL bytes)") }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ScenarioFileError(text: "cannot read '\(path)': it is not UTF-8 text")
        }
        do {
            return (try ScenarioRunner(yaml: text, source: path), path)
        } catch let e as ScenarioError {
            throw ScenarioFileError(text: "\(path): \(e)")
        }
    }

    /// Runs a scenario by path or shipped name and prints what happened (tests use it).
    static func execute(_ scenario: String, quiet: Bool = false) throws -> ScenarioOutcome {
        let outcome = try load(scenario).0.run()
        try report(outcome, format: .text, quiet: quiet)
        return outcome
    }

    static func report(_ outcome: ScenarioOutcome, format: OutputFormat, quiet: Bool) throws {
        switch format {
        case .json:
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            var text = ""
            for r in outcome.records { text += String(decoding: try enc.encode(r), as: UTF8.self) + "\n" }
            struct Summary: Codable {
                let scenario: String, passed: Bool, failures: [String], liveAfterTeardown: Int, interrupted: Bool
            }
            text += String(decoding: try enc.encode(Summary(scenario: outcome.name, passed: outcome.passed, failures: outcome.failures,
                                                            liveAfterTeardown: outcome.liveAfterTeardown, interrupted: outcome.interrupted)), as: UTF8.self) + "\n"
            try StandardOutput.write(text)
        case .text:
            var text = ""
            if !quiet { for l in outcome.lines { text += l + "\n" } }
            for f in outcome.failures { text += "FAILED \(f)\n" }
            text += "\(outcome.name): \(outcome.passed ? "all expectations hold" : "\(outcome.failures.count) expectation(s) failed")"
            text += outcome.liveAfterTeardown == 0 ? "; nothing leaked\n" : "\n"
            try StandardOutput.write(text)
        }
    }
}

func jsonString(_ s: String) -> String {
    String(decoding: (try? JSONEncoder().encode(s)) ?? Data("\"\"".utf8), as: UTF8.self)
}


/// An invalid scenario file: exit code 2.
struct ScenarioFileError: Error, CustomStringConvertible {
    let text: String
    var description: String { text }
}

struct Scenarios: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the scenarios shipped with the harness, or the scenario vocabulary.")

    @Flag(help: "Print every word of the scenario language (operations, steps, expectations) instead.")
    var vocabulary = false

    func run() throws {
        if vocabulary {
            print(ScenarioVocabulary.text)
            return
        }
        for s in ShippedScenarios.all {
            let desc = (try? String(contentsOfFile: s.path, encoding: .utf8))
                .flatMap { $0.split(separator: "\n").first { $0.hasPrefix("description:") } }
                .map { String($0.dropFirst("description:".count)).trimmingCharacters(in: .whitespaces) } ?? ""
            print("\(s.name.padding(toLength: 24, withPad: " ", startingAt: 0)) \(desc)")
        }
    }
}
