// `bpflab graph`: every shipped scenario at every step and every bench design gives a
// graph whose edges are exactly the auditor's references, and Graphviz renders each.
import XCTest
import BPFKernel
import CBPFShims
@testable import PacketHarness
@testable import bpflab

final class GraphTests: XCTestCase {
    func testEveryScenarioStepAndEveryDesignHasAGraphThatRenders() throws {
        var graphs: [(String, ReferenceGraph, String)] = []
        for s in ShippedScenarios.all {
            var options = ScenarioRunOptions()
            options.afterStep = { n, kernel in
                kernel.quiesce()
                let g = kernel.referenceGraph()
                graphs.append(("\(s.name) step \(n)", g, GraphRender.dot(g, title: s.name)))
            }
            _ = try Run.load(s.name).0.run(options)
        }
        for d in DesignID.allCases {
            let kernel = Kernel(KernelConfig(checked: true))
            let bpf = BPF(kernel: kernel)
            let setup = try DesignSetup.make(d, bpf: bpf)
            kernel.quiesce()
            let g = kernel.referenceGraph()
            graphs.append((d.rawValue, g, GraphRender.dot(g, title: d.rawValue)))
            setup.close(bpf)
            kernel.xdpDispatcher.reset()
            kernel.quiesce()
        }
        XCTAssertGreaterThan(graphs.count, 100)
        for (what, g, dot) in graphs {
            // Each object's refcount is its number of in-edges (the auditor's rule, drawn).
            for n in g.nodes where n.refcnt != nil {
                XCTAssertEqual(UInt64(g.edges.filter { $0.target == n.key && $0.kind.isReference }.count), n.refcnt, "\(what): \(n.label)")
            }
            XCTAssertEqual(dot.components(separatedBy: " -> ").count - 1, g.edges.count, what)
        }
        guard GraphRender.dotPath != nil else {
            print("skipped rendering: Graphviz's dot is not installed (Tests/install-deps.sh installs it)")
            return
        }
        for (what, _, dot) in graphs.enumerated().filter({ $0.offset % 7 == 0 }).map(\.element) {
            let (svg, problem) = GraphRender.svg(dot)
            XCTAssertNil(problem, what)
            XCTAssertTrue(svg?.contains("<svg") ?? false, what)
        }
    }

    func testAnUnbreakableCycleIsDrawnRed() throws {
        let kernel = Kernel(KernelConfig(checked: true))
        let bpf = BPF(kernel: kernel)
        let a = try bpf.progLoad(.returning(2, name: "a", flags: .chainCalls))
        let pa = try bpf.prog(a)
        _ = cbpf_prog_chain_xchg(pa.aux, 0, pa.raw)  // past the ELOOP check, on purpose
        let g = kernel.referenceGraph()
        XCTAssertEqual(g.cycleEdges.count, 1)
        XCTAssertTrue(GraphRender.dot(g, title: "cycle").contains("penwidth=2.2"))
        _ = cbpf_prog_chain_xchg(pa.aux, 0, nil)
        pa.put()
        bpf.closeAll()
        kernel.quiesce()
        XCTAssertEqual(kernel.liveObjects, 0)
    }
}
