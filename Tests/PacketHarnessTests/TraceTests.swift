// `bpflab trace`: the tracer's verdict equals the real run's on the same frame — for every
// bench design on several flows and for every packets and test_run step of every shipped
// scenario — and it says what it walked through.
import XCTest
import BPFKernel
@testable import PacketHarness
@testable import bpflab

final class TraceTests: XCTestCase {
    func testTheTracedVerdictIsTheRealOneForEveryDesign() throws {
        for d in DesignID.allCases {
            for flow in 0..<3 {
                let (lines, traced, real) = try Trace.design(d, flow: flow)
                XCTAssertEqual(traced, real, "\(d.rawValue) flow \(flow):\n" + lines.map(\.text).joined(separator: "\n"))
                XCTAssertFalse(lines.isEmpty)
            }
        }
    }

    func testTheTracedVerdictIsTheRealOneForEveryScenarioPacketStep() throws {
        var traced = 0
        for s in ShippedScenarios.all {
            let file = try Run.load(s.name).0.file
            for step in file.steps {
                switch step.operation {
                case .packets, .testRun: break
                default: continue
                }
                var options = ScenarioRunOptions()
                options.traceStep = step.index
                let out = try Run.load(s.name).0.run(options)
                if case .testRun = step.operation, out.realVerdict == nil { continue }  // a test run refused (EINVAL) is not traced
                XCTAssertNotNil(out.tracedVerdict, "\(s.name) step \(step.index): \(out.failures)")
                XCTAssertEqual(out.tracedVerdict, out.realVerdict, "\(s.name) step \(step.index):\n" + (out.trace ?? []).map(\.text).joined(separator: "\n"))
                traced += 1
            }
        }
        XCTAssertGreaterThan(traced, 40)
    }

    func testTheSelfTailCallTraceShows33TailCallsAndTheLimit() throws {
        var options = ScenarioRunOptions()
        options.traceStep = 1
        let out = try Run.load("tail-call-limit").0.run(options)
        let text = (out.trace ?? []).map(\.text)
        XCTAssertEqual(text.filter { $0.contains("tail call, index 0: counter") }.count, 33)
        XCTAssertTrue(text.contains { $0.contains("the counter is at 33 (MAX_TAIL_CALL_CNT) → falls through") })
        XCTAssertEqual(text.filter { $0.hasPrefix("count 'loops'") }.count, 34)
        XCTAssertEqual(Set(out.trace!.map(\.depth)).count, 2, "a tail call replaces the frame: no nesting")
    }
}
