// The README's 15-minute tour: every `swift run bpflab …` command in it runs and succeeds.
import XCTest
import ArgumentParser
@testable import bpflab

final class TourTests: XCTestCase {
    func testEveryTourCommandRuns() throws {
        let readme = try String(contentsOfFile: ScenarioTests.repoRoot + "/README.md", encoding: .utf8)
        let tour = readme.components(separatedBy: "## A 15-minute tour")[1].components(separatedBy: "\n## ")[0]
        let commands = tour.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { $0.hasPrefix("swift run ") && $0.contains("bpflab ") }
        XCTAssertGreaterThanOrEqual(commands.count, 7, "the tour's commands are found")
        for c in commands {
            let args = c.components(separatedBy: "bpflab ")[1].split(separator: " ").map(String.init)
            var cmd = try BPFLab.parseAsRoot(args)
            XCTAssertNoThrow(try cmd.run(), c)
        }
    }
}
