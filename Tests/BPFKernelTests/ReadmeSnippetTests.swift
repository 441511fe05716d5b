// The README's Swift snippet ("Step programs") compiles and does what its comment says:
// the test body below is the snippet, and a second test checks the README still holds it
// line for line.
import XCTest
import BPFKernel

final class ReadmeSnippetTests: XCTestCase {
    func testTheReadmeSnippetRunsAndMeans34() throws {
        // README snippet begins
        let kernel = Kernel()
        let bpf = BPF(kernel: kernel)
        let jmp = try bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: 4, name: "jmp"))
        let loop = try bpf.progLoad(ProgLoadAttr(
            steps: StepProgram([.count("loops"), .tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(1)]),
            name: "loop"))                               // jited: false → interpreter; directTailCalls: true → direct
        let fdValue = withUnsafeBytes(of: UInt32(bitPattern: loop).littleEndian) { Array($0) }
        try bpf.mapUpdateElem(jmp, key: [0, 0, 0, 0], value: fdValue)
        let run = try bpf.progTestRun(TestRunAttr(progFD: loop, data: [UInt8](repeating: 0, count: 64)))
        // run.retval == 1; kernel.counter("loops") == 34 (1 run + 33 tail calls)
        // README snippet ends
        XCTAssertEqual(run.retval, 1)
        XCTAssertEqual(kernel.counter("loops"), 34)
        bpf.closeAll()
        kernel.quiesce()
        XCTAssertEqual(kernel.liveObjects, 0)
    }

    func testTheReadmeHoldsTheSnippetThisTestRuns() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let me = try String(contentsOfFile: #filePath, encoding: .utf8)
        let body = me.components(separatedBy: "// README snippet begins\n")[1].components(separatedBy: "        // README snippet ends")[0]
        let lines = body.split(separator: "\n").map { $0.dropFirst(8) }
        let block = readme.components(separatedBy: "```swift\n").dropFirst().first { $0.hasPrefix("let kernel = Kernel()") }
        XCTAssertNotNil(block, "the README has the snippet")
        let readmeLines = (block ?? "").components(separatedBy: "```")[0].split(separator: "\n")
        XCTAssertEqual(readmeLines.map(String.init), lines.map(String.init), "README and test differ")
    }
}
