// GraphRender.swift — the reference graph (Kernel.referenceGraph) as Graphviz DOT.
//
// Objects are nodes with their refcount (and a map's usercnt): programs as boxes, maps as
// cylinders, links as hexagons; holders that are not objects — fds and pins (user
// space), devices, the bpf_dispatcher, run arrays — as small shapes on the left. Every
// reference is an edge from its holder, labelled with what holds it. Objects waiting for
// a grace period are dashed and grey. A cycle of references that no user action can
// break is drawn red; the program ↔ prog-array cycle, which the uref flush breaks, is
// drawn with dashed orange slot edges. Trampolines are drawn with the entry they patch and
// the programs in their image as dotted edges: pointers, not references.
import BPFKernel
import Foundation
import Synchronization

public enum GraphRender {
    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
    }

    /// DOT text for `g`, titled `title`.
    public static func dot(_ g: ReferenceGraph, title: String) -> String {
        var s = "digraph refs {\n"
        s += "  graph [rankdir=LR, fontname=\"Helvetica\", fontsize=12, labelloc=t, label=\"\(esc(title))\", nodesep=0.3, ranksep=0.6, pad=0.3];\n"
        s += "  node [fontname=\"Helvetica\", fontsize=11];\n  edge [fontname=\"Helvetica\", fontsize=9];\n"
        let order: [RefNode.Kind] = [.fd, .pin, .device, .dispatcher, .runArray, .flush]
        let holders = g.nodes.filter { order.contains($0.kind) }.sorted { a, b in
            let (ia, ib) = (order.firstIndex(of: a.kind)!, order.firstIndex(of: b.kind)!)
            if ia != ib { return ia < ib }
            return a.label.count != b.label.count ? a.label.count < b.label.count : a.label < b.label  // fd 3 before fd 10
        }
        if !holders.isEmpty {
            s += "  { rank=source;\n"
            for n in holders { s += "    " + node(n) + "\n" }
            s += "  }\n"
        }
        for n in g.nodes where !holders.contains(n) { s += "  " + node(n) + "\n" }
        if g.edges.contains(where: { $0.target == "freed" }) {
            s += "  \"freed\" [label=\"freed record\", shape=octagon, style=filled, fillcolor=\"#f4cccc\", color=\"#cc0000\"];\n"
        }
        for e in g.edges {
            let onCycle = g.cycleEdges.contains(e)
            var attrs = ["label=\"\(esc(edgeLabel(e.kind)))\""]
            switch e.kind {
            case .fd, .pin: attrs.append("color=\"#888888\"")
            case .progArraySlot: attrs += ["style=dashed", "color=\"#e69138\"", "tooltip=\"broken by the uref flush when the array's last user reference goes\""]
            case .usedMap: attrs.append("color=\"#6aa84f\"")
            case .patchedEntry, .imageItem: attrs += ["style=dotted", "color=\"#777777\"", "arrowhead=open", "tooltip=\"not a reference: the links hold these programs\""]
            default: break
            }
            if g.flushCycleEdges.contains(e) { attrs += ["color=\"#e69138\"", "penwidth=1.6", "fontcolor=\"#b45f06\""] }
            if onCycle { attrs += ["color=\"#cc0000\"", "penwidth=2.2", "fontcolor=\"#cc0000\""] }
            s += "  \"\(esc(e.holder))\" -> \"\(esc(e.target))\" [\(attrs.joined(separator: ", "))];\n"
        }
        if !g.flushCycleEdges.isEmpty {
            s += "  \"flush_note\" [shape=note, color=\"#e69138\", fontcolor=\"#b45f06\", label=\"orange: the program ↔ prog-array cycle (used map one way, a slot the other);\\nthe uref flush breaks it when the array's last fd or pin goes\"];\n"
        }
        if !g.cycleEdges.isEmpty {
            s += "  \"cycle_note\" [shape=note, color=\"#cc0000\", fontcolor=\"#cc0000\", label=\"red: a cycle of references no user action can break\\n(the lab refuses the chain ADD that would close one: ELOOP)\"];\n"
        }
        return s + "}\n"
    }

    static func edgeLabel(_ k: RefKind) -> String {
        switch k {
        case .fd, .pin: return ""
        case let .device(_, m): return "attached (\(m.name))"
        default: return "\(k)"
        }
    }

    static func node(_ n: RefNode) -> String {
        var label = n.label
        if let r = n.refcnt { label += "\nrefcnt \(r)" }
        if let u = n.usercnt { label += "  usercnt \(u)" }
        if n.dying { label += "\n(waiting for a grace period)" }
        var attrs: [String]
        switch n.kind {
        case .prog: attrs = ["shape=box", "style=\"rounded,filled\"", "fillcolor=\"#cfe2f3\""]
        case .map: attrs = ["shape=cylinder", "style=filled", "fillcolor=\"#d9ead3\""]
        case .link: attrs = ["shape=hexagon", "style=filled", "fillcolor=\"#fff2cc\""]
        case .fd: attrs = ["shape=ellipse", "fontsize=9", "color=\"#888888\""]
        case .pin: attrs = ["shape=note", "fontsize=9", "color=\"#888888\""]
        case .device: attrs = ["shape=box3d", "style=filled", "fillcolor=\"#eeeeee\""]
        case .dispatcher: attrs = ["shape=component", "style=filled", "fillcolor=\"#eeeeee\""]
        case .runArray, .flush: attrs = ["shape=box", "style=dotted"]
        case .trampoline: attrs = ["shape=box", "style=\"dashed,filled\"", "fillcolor=\"#f3f3f3\"", "fontsize=10"]
        case .kernelFunction: attrs = ["shape=box", "style=filled", "fillcolor=\"#e6e6e6\"", "fontsize=10"]
        }
        if n.dying { attrs = ["shape=box", "style=\"rounded,dashed\"", "color=\"#999999\"", "fontcolor=\"#999999\""] }
        return "\"\(esc(n.key))\" [label=\"\(esc(label).replacingOccurrences(of: "\n", with: "\\n"))\", \(attrs.joined(separator: ", "))];"
    }

    /// Graphviz's `dot`, if installed.
    public static var dotPath: String? {
        for p in ["/usr/bin/dot", "/usr/local/bin/dot"] where FileManager.default.isExecutableFile(atPath: p) { return p }
        return nil
    }

    /// SVG for DOT text through `dot -Tsvg`; nil (with the reason) when dot is missing or fails.
    public static func svg(_ dotText: String) -> (svg: String?, problem: String?) {
        guard let dot = dotPath else { return (nil, "Graphviz is not installed (apt-get install graphviz); wrote DOT only") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: dot)
        p.arguments = ["-Tsvg"]
        let inp = Pipe(), out = Pipe(), err = Pipe()
        p.standardInput = inp
        p.standardOutput = out
        p.standardError = err
        do { try p.run() } catch { return (nil, "cannot run \(dot): \(error)") }
        // stderr is drained beside stdout: dot blocked on a full stderr pipe would never close
        // stdout, and both sides would wait for ever.
        let errText = Mutex(Data())
        let drained = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            let d = err.fileHandleForReading.readDataToEndOfFile()
            errText.withLock { $0 = d }
            drained.signal()
        }
        inp.fileHandleForWriting.write(Data(dotText.utf8))
        try? inp.fileHandleForWriting.close()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        drained.wait()
        p.waitUntilExit()
        if p.terminationStatus != 0 {
            return (nil, "dot failed: " + String(decoding: errText.withLock { $0 }, as: UTF8.self).prefix(300))
        }
        return (String(decoding: data, as: UTF8.self), nil)
    }

    /// An HTML page stepping through one SVG per step (`bpflab graph --step all`).
    public static func stepPage(title: String, steps: [(step: Int, caption: String, file: String)]) -> String {
        let title = title.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        var s = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>\(title)</title>\n"
        s += "<style>body{font-family:Helvetica,sans-serif;margin:1em} img{max-width:100%;border:1px solid #ddd} button{font-size:1em}</style></head><body>\n"
        s += "<h2>\(title)</h2>\n<p><button onclick=\"go(-1)\">◀ previous</button> <button onclick=\"go(1)\">next ▶</button> <span id=\"cap\"></span></p>\n<img id=\"pic\">\n"
        s += "<script>\nconst steps = [" + steps.map { "[\"\($0.file)\", \(jsonString("step \($0.step): \($0.caption)"))]" }.joined(separator: ",") + "];\n"
        s += "let i = 0; function show(){ document.getElementById('pic').src = steps[i][0]; document.getElementById('cap').textContent = steps[i][1]; }\n"
        s += "function go(d){ i = Math.max(0, Math.min(steps.length - 1, i + d)); show(); }\ndocument.onkeydown = e => { if (e.key === 'ArrowRight') go(1); if (e.key === 'ArrowLeft') go(-1); };\nshow();\n</script></body></html>\n"
        return s
    }

    static func jsonString(_ s: String) -> String {
        String(decoding: (try? JSONEncoder().encode(s)) ?? Data("\"\"".utf8), as: UTF8.self)
    }
}
