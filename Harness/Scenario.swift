// Scenario.swift — scenario files: the facade, scriptable in YAML (parsed with Yams).
//
// A scenario declares maps, programs, prog-array slots and a device, then runs a sequence
// of operations and packet bursts, each with optional `expect:` entries. A `packets` burst
// goes through the driver (RX ring, NAPI polls of 64, BPF_PROG_RUN), so its verdicts are
// XDP actions — a value that is not one counts as ABORTED and as invalid. A `test_run`
// runs a program directly (BPF_PROG_TEST_RUN) and reports its raw return value.
// The format is documented in README.md ("Scenario files").
//
// Errors in the file itself (unknown keys, wrong shapes, names never declared) are
// ScenarioError with the line and column of the offending node: exit code 2. An
// expectation that does not hold is a failed check: exit code 1.
import BPFKernel
import CBPFShims
import Foundation
import Yams

/// A problem with the scenario file itself, with where it is.
public struct ScenarioError: Error, CustomStringConvertible {
    public let line: Int
    public let column: Int
    public let message: String
    public var description: String { "line \(line), column \(column): \(message)" }

    init(_ node: Node?, _ message: String) {
        line = node?.mark?.line ?? 0
        column = node?.mark?.column ?? 0
        self.message = message
    }
}

/// What a scenario run did.
public struct ScenarioOutcome: Sendable {
    public var name: String
    public var lines: [String] = []
    public var failures: [String] = []
    public var passed: Bool { failures.isEmpty }
}

public final class ScenarioRunner {
    let root: Node
    let source: String
    private var kernel: Kernel!
    private var bpf: BPF!
    private var device: NetDevice!
    private var progs: [String: Int32] = [:]
    /// How each declared program was loaded (libxdp loads components again as extensions).
    private var declared: [String: ProgLoadAttr] = [:]
    private var maps: [String: Int32] = [:]
    private var links: [String: Int32] = [:]
    private var libxdp: LibXDP!
    private var statsFD: Int32?
    private var frames = FrameSpec(size: 64, flows: 1)

    /// Parses `yaml`; throws ScenarioError for YAML that does not parse or is not a mapping.
    public init(yaml: String, source: String = "scenario") throws {
        self.source = source
        do {
            guard let n = try Yams.compose(yaml: yaml) else { throw ScenarioError(nil, "the file is empty") }
            guard case .mapping = n else { throw ScenarioError(n, "a scenario is a mapping (name:, programs:, sequence:, …)") }
            root = n
        } catch let e as YamlError {
            throw ScenarioRunner.yamlError(e)
        }
    }

    private static func yamlError(_ e: YamlError) -> ScenarioError {
        // Yams puts "line:column: …" first in its description.
        let text = "\(e)"
        let parts = text.split(separator: ":", maxSplits: 2)
        if parts.count == 3, let l = Int(parts[0].trimmingCharacters(in: .whitespaces)),
           let c = Int(parts[1].trimmingCharacters(in: .whitespaces)) {
            return ScenarioError(line: l, column: c, message: parts[2].trimmingCharacters(in: .whitespaces))
        }
        return ScenarioError(line: 0, column: 0, message: text)
    }

    /// The scenario's name (its `name:`, else the source).
    public var name: String { root["name"]?.string ?? source }

    /// Runs it on a fresh checked kernel. Throws ScenarioError when the file is invalid.
    public func run() throws -> ScenarioOutcome {
        var out = ScenarioOutcome(name: name)
        try checkKeys(root, ["name", "description", "maps", "programs", "slots", "device", "packet", "sequence"])
        kernel = Kernel(KernelConfig(checked: true))
        bpf = BPF(kernel: kernel)
        libxdp = LibXDP(bpf: bpf)
        defer {
            device?.detachAll()
            bpf.closeAll()
            kernel.unpinAll()
            kernel.xdpDispatcher.reset()
            kernel.quiesce()
        }
        let dev = root["device"]
        if let dev { try checkKeys(dev, ["name", "queues", "ifindex"]) }
        device = NetDevice(kernel: kernel, name: dev?["name"]?.string ?? "veth0",
                           ifindex: UInt32(try int(dev?["ifindex"], default: 1)), queues: try int(dev?["queues"], default: 1))
        if let p = root["packet"] {
            try checkKeys(p, ["size", "flows"])
            frames = FrameSpec(size: try int(p["size"], default: 64), flows: try int(p["flows"], default: 1))
            do { try frames.validate() } catch { throw ScenarioError(p, "\(error)") }
        }
        for (k, v) in try mapping(root["maps"]) { try createMap(try str(k), v) }
        for (k, v) in try mapping(root["programs"]) { try loadProgram(try str(k), v) }
        for (k, v) in try mapping(root["slots"]) {
            let m = try lookup(maps, k, "map")
            for (i, p) in try mapping(v) {
                let fd = try lookup(progs, p, "program")
                do { try bpf.mapUpdateElem(m, key: u32Bytes(UInt32(try int(i))), value: u32Bytes(UInt32(bitPattern: fd))) }
                catch { throw ScenarioError(p, "slot \(i.string ?? "?") of '\(k.string ?? "")': \(error)") }
            }
        }
        guard let seq = root["sequence"] else { throw ScenarioError(root, "a scenario needs a sequence:") }
        guard case let .sequence(steps) = seq else { throw ScenarioError(seq, "sequence: is a list of steps") }
        for (i, step) in steps.enumerated() {
            try runStep(i + 1, step, &out)
        }
        return out
    }

    // MARK: declarations

    private func createMap(_ name: String, _ v: Node) throws {
        try checkKeys(v, ["type", "max_entries"])
        let type: MapType
        switch v["type"]?.string {
        case "prog_array": type = .progArray
        case "array": type = .array
        case "static_key": type = .staticKey
        default: throw ScenarioError(v["type"] ?? v, "map type is prog_array, array or static_key")
        }
        let n = UInt32(try int(v["max_entries"], default: 1))
        do { maps[name] = try bpf.mapCreate(MapCreateAttr(type: type, maxEntries: n, name: name)) }
        catch { throw ScenarioError(v, "map '\(name)': \(error)") }
    }

    private func loadProgram(_ name: String, _ v: Node) throws {
        try checkKeys(v, ["builtin", "returns", "steps", "subprogs", "flags", "engine", "extends", "traces"])
        var attr: ProgLoadAttr
        let jited = v["engine"]?.string != "interp"
        if let b = v["builtin"] {
            let bodies: [String: ProgBody] = ["pass": .xdpPass, "drop": .xdpDrop, "tx": .xdpTx, "aborted": .xdpAborted]
            guard let s = b.string, let body = bodies[s] else { throw ScenarioError(b, "builtin is pass, drop, tx or aborted") }
            attr = ProgLoadAttr(body: body, name: name)
        } else if let r = v["returns"] {
            attr = .returning(UInt32(try int(r)), name: name)
        } else if let s = v["steps"] {
            let subs = try list(v["subprogs"]).map { try steps($0) }
            attr = ProgLoadAttr(steps: StepProgram(try steps(s), subprogs: subs, directTailCalls: v["engine"]?.string == "direct"),
                                name: name, jited: jited)
        } else {
            throw ScenarioError(v, "program '\(name)' needs builtin:, returns: or steps:")
        }
        for f in try list(v["flags"]) {
            switch f.string {
            case "chain_calls": attr.progFlags |= ProgLoadFlags.chainCalls.rawValue
            case "xdp_has_frags": attr.progFlags |= ProgLoadFlags.xdpHasFrags.rawValue
            default: throw ScenarioError(f, "flags are chain_calls or xdp_has_frags")
            }
        }
        if let e = v["extends"] {
            try checkKeys(e, ["program", "function"])
            attr.progType = ProgType.ext.rawValue
            attr.attachProgFD = try lookup(progs, e["program"], "program")
            attr.attachFunc = e["function"]?.string
        }
        if let t = v["traces"] {
            try checkKeys(t, ["program", "function", "kind"])
            let kinds: [String: AttachType] = ["fentry": .traceFentry, "fexit": .traceFexit, "fmod_ret": .modifyReturn]
            guard let k = t["kind"]?.string, let kind = kinds[k] else { throw ScenarioError(t, "kind is fentry, fexit or fmod_ret") }
            attr.progType = ProgType.tracing.rawValue
            attr.expectedAttachType = kind.rawValue
            attr.attachProgFD = try lookup(progs, t["program"], "program")
            attr.attachFunc = t["function"]?.string
        }
        do { progs[name] = try bpf.progLoad(attr) } catch { throw ScenarioError(v, "program '\(name)': \(error)") }
        declared[name] = attr
    }

    private func steps(_ n: Node) throws -> [Step] {
        try list(n).map { s in
            if let word = s.string {
                guard word == "return_last" else { throw ScenarioError(s, "unknown step '\(word)'") }
                return .returnLast
            }
            let pairs = try mapping(s)
            guard pairs.count == 1, let (k, v) = pairs.first, let op = k.string else {
                throw ScenarioError(s, "a step is one key: count, tail_call, indirect_call, call, set_var, return, return_var, return_last")
            }
            switch op {
            case "count": return .count(try str(v))
            case "call": return .call(try int(v))
            case "return": return .returnConst(UInt32(truncatingIfNeeded: try int(v)))
            case "return_var": return .returnVar(try int(v))
            case "store_cookie": return .storeCookie(try int(v))
            case "store_func_ret": return .storeFuncRet(try int(v))
            case "set_var": return .setVar(try int(v["index"]), UInt64(try int(v["value"])))
            case "tail_call", "indirect_call":
                try checkKeys(v, ["array", "index", "index_var"])
                let arr = try lookup(maps, v["array"], "map")
                let idx: TailIndex = v["index_var"] != nil ? .variable(try int(v["index_var"])) : .constant(UInt64(try int(v["index"])))
                return op == "tail_call" ? .tailCall(arrayFD: arr, index: idx) : .indirectCall(arrayFD: arr, index: idx)
            default:
                throw ScenarioError(k, "unknown step '\(op)'")
            }
        }
    }

    // MARK: the sequence

    private func runStep(_ n: Int, _ step: Node, _ out: inout ScenarioOutcome) throws {
        // A bare word is an operation without arguments (detach, rcu_barrier).
        let pairs: [(Node, Node)]
        if step.string != nil { pairs = [(step, step)] } else { pairs = try mapping(step) }
        let ops = pairs.filter { $0.0.string != "expect" }
        guard ops.count == 1, let (kNode, arg) = ops.first, let op = kNode.string else {
            throw ScenarioError(step, "a step is one operation, optionally with expect:")
        }
        let expect = step["expect"]
        if let expect {
            try checkKeys(expect, ["verdicts", "invalid", "errno", "retval", "counters", "live_objects", "run_count", "refcnt"])
        }
        var observed: [String: Any] = [:]
        var thrown: BPFError?
        var what = "\(op)"
        do {
            switch op {
            case "attach":
                let p = try lookup(progs, arg["program"] ?? arg, "program")
                try bpf.xdpAttach(device, fd: p, flags: arg["flags"].map { UInt32(try int($0)) } ?? 0)
                what = "attach \(arg["program"]?.string ?? arg.string ?? "")"
            case "detach":
                try bpf.xdpAttach(device, fd: -1)
            case "packets":
                let count = try int(arg)
                let (v, invalid) = runPackets(count)
                observed["verdicts"] = v
                observed["invalid"] = invalid
                what = "packets \(count): " + zip(verdictNames, v).filter { $0.1 > 0 }.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
                    + (invalid > 0 ? " (invalid \(invalid))" : "")
            case "test_run":
                let p = try lookup(progs, arg["program"] ?? arg, "program")
                let r = try bpf.progTestRun(TestRunAttr(progFD: p, data: frames.frame(flow: 0)))
                observed["retval"] = r.retval
                what = "test_run \(arg["program"]?.string ?? arg.string ?? ""): retval \(r.retval)"
            case "chain_add":
                try checkKeys(arg, ["prev", "retcode", "next"])
                try bpf.progChainAdd(prev: try lookup(progs, arg["prev"], "program"), retcode: try retcode(arg["retcode"]),
                                     next: try lookup(progs, arg["next"], "program"))
            case "chain_del":
                try checkKeys(arg, ["prev", "retcode"])
                try bpf.progChainDel(prev: try lookup(progs, arg["prev"], "program"), retcode: try retcode(arg["retcode"]))
            case "map_update":
                try checkKeys(arg, ["map", "key", "program", "value"])
                let m = try lookup(maps, arg["map"], "map")
                let value = arg["program"] != nil ? UInt32(bitPattern: try lookup(progs, arg["program"], "program")) : UInt32(try int(arg["value"]))
                try bpf.mapUpdateElem(m, key: u32Bytes(UInt32(try int(arg["key"]))), value: u32Bytes(value))
            case "map_delete":
                try checkKeys(arg, ["map", "key"])
                try bpf.mapDeleteElem(try lookup(maps, arg["map"], "map"), key: u32Bytes(UInt32(try int(arg["key"]))))
            case "close":
                let name = try str(arg)
                guard let fd = progs.removeValue(forKey: name) ?? maps.removeValue(forKey: name) ?? links.removeValue(forKey: name) else {
                    throw ScenarioError(arg, "nothing named '\(name)' is open")
                }
                try bpf.objClose(fd)
            case "link":
                try checkKeys(arg, ["name", "program", "xdp", "cookie"])
                let p = try lookup(progs, arg["program"], "program")
                let prog = try bpf.prog(p)
                defer { prog.put() }
                var attr = LinkCreateAttr(progFD: p, attachType: .unspecified, cookie: UInt64(try int(arg["cookie"], default: 0)))
                switch prog.type {
                case .xdp: attr.device = device; attr.attachType = .xdp
                case .tracing: attr.attachType = AttachType(rawValue: prog.expectedAttachType) ?? .unspecified
                default: break
                }
                let l = try bpf.linkCreate(attr)
                links[try str(arg["name"])] = l
            case "link_update":
                try checkKeys(arg, ["link", "program", "expected"])
                let l = try lookup(links, arg["link"], "link")
                if let e = arg["expected"] {
                    try bpf.linkUpdate(l, newProgFD: try lookup(progs, arg["program"], "program"), flags: linkUpdateReplace,
                                       expectedOldFD: try lookup(progs, e, "program"))
                } else {
                    try bpf.linkUpdate(l, newProgFD: try lookup(progs, arg["program"], "program"))
                }
            case "link_detach":
                try bpf.linkDetach(try lookup(links, arg, "link"))
            case "libxdp_attach", "libxdp_detach":
                let names = try list(arg).map { try str($0["program"] ?? $0) }
                if op == "libxdp_detach" {
                    try libxdp.detach(names, from: device)
                } else {
                    let specs: [XDPProgramSpec] = try list(arg).map { e in
                        let nm = try str(e["program"] ?? e)
                        let attr = try programAttr(nm, e)
                        return XDPProgramSpec(name: nm, attr: attr, runPrio: UInt32(try int(e["run_prio"], default: 50)),
                                              chainCallActions: try actions(e["chain_call_actions"]))
                    }
                    try libxdp.attach(specs, to: device)
                }
                what = "\(op) \(names.joined(separator: ","))"
            case "pin":
                try checkKeys(arg, ["object", "path"])
                let name = try str(arg["object"])
                guard let fd = progs[name] ?? maps[name] ?? links[name] else { throw ScenarioError(arg, "nothing named '\(name)' is open") }
                try bpf.objPin(fd, path: try str(arg["path"]))
            case "unpin":
                try bpf.unpin(path: try str(arg))
            case "stats":
                if try str(arg) == "on" {
                    if statsFD == nil { statsFD = try bpf.enableStats() }
                } else if let fd = statsFD {
                    try bpf.objClose(fd)
                    statsFD = nil
                }
            case "set_var":
                try checkKeys(arg, ["program", "index", "value"])
                try bpf.progSetVar(try lookup(progs, arg["program"], "program"), index: try int(arg["index"]), value: UInt64(try int(arg["value"])))
            case "rcu_barrier":
                kernel.quiesce()
            default:
                throw ScenarioError(kNode, "unknown operation '\(op)'")
            }
        } catch let e as BPFError {
            thrown = e
            what += " → \(e.errno.name)"
        }
        out.lines.append("step \(n): \(what)")
        if thrown == nil, op != "packets", op != "test_run" { out.lines[out.lines.count - 1] += " → ok" }
        try check(n, expect, observed: observed, thrown: thrown, &out)
    }

    private func check(_ n: Int, _ expect: Node?, observed: [String: Any], thrown: BPFError?, _ out: inout ScenarioOutcome) throws {
        func fail(_ s: String) { out.failures.append("step \(n): \(s)") }
        guard let expect else {
            if let thrown { fail("unexpected \(thrown)") }
            return
        }
        if let e = expect["errno"] {
            let want = try str(e)
            if thrown?.errno.name != want { fail("expected \(want), got \(thrown.map { "\($0)" } ?? "success")") }
        } else if let thrown {
            fail("unexpected \(thrown)")
        }
        if let v = expect["verdicts"] {
            let got = observed["verdicts"] as? [UInt64] ?? []
            for (k, c) in try mapping(v) {
                guard let name = k.string, let i = verdictNames.firstIndex(of: name), i < 5 else {
                    throw ScenarioError(k, "verdicts are ABORTED, DROP, PASS, TX, REDIRECT")
                }
                let want = UInt64(try int(c))
                if got.count > i, got[i] != want { fail("expected \(name)=\(want), got \(got[i])") }
            }
        }
        if let v = expect["invalid"], UInt64(try int(v)) != observed["invalid"] as? UInt64 {
            fail("expected \(try int(v)) invalid actions, got \(observed["invalid"] as? UInt64 ?? 0)")
        }
        if let v = expect["retval"], UInt32(truncatingIfNeeded: try int(v)) != observed["retval"] as? UInt32 {
            fail("expected retval \(try int(v)), got \(observed["retval"].map { "\($0)" } ?? "none")")
        }
        for (k, v) in try mapping(expect["counters"]) {
            let name = try str(k), want = UInt64(try int(v))
            if kernel.counter(name) != want { fail("expected counter \(name)=\(want), got \(kernel.counter(name))") }
        }
        for (k, v) in try mapping(expect["run_count"]) {
            let info = try bpf.progGetInfo(try lookup(progs, k, "program"))
            if info.runCount != UInt64(try int(v)) { fail("expected \(k.string ?? "") to have run \(try int(v)) times, got \(info.runCount)") }
        }
        for (k, v) in try mapping(expect["refcnt"]) {
            let info = try bpf.progGetInfo(try lookup(progs, k, "program"))
            if info.refcnt != UInt64(try int(v)) { fail("expected \(k.string ?? "") refcnt \(try int(v)), got \(info.refcnt)") }
        }
        if let v = expect["live_objects"] {
            kernel.quiesce()
            if kernel.liveObjects != (try int(v)) { fail("expected \(try int(v)) live objects, got \(kernel.liveObjects)") }
        }
    }

    /// A burst through the driver: an RX ring of frames, NAPI polls of at most 64.
    private func runPackets(_ count: Int) -> ([UInt64], UInt64) {
        let ring = try! RxRing(frames: frames, numa: .off, cpu: 0)
        let counts = UnsafeMutablePointer<UInt64>.allocate(capacity: verdictSlots)
        counts.initialize(repeating: 0, count: verdictSlots)
        defer { counts.deallocate() }
        var md = cbpf_xdp_md()
        md.ingress_ifindex = device.ifindex
        var head = 0, left = count
        withUnsafeMutablePointer(to: &md) { ctx in
            while left > 0 {
                let b = min(64, left)
                napiPoll(PatchedProgRun(), ring: ring.buffers, lengths: ring.lengths, mask: ring.mask, head: &head,
                         budget: b, dev: device, ctx: ctx, counts: counts)
                left -= b
            }
        }
        return (Array(UnsafeBufferPointer(start: counts, count: 5)), counts[5])
    }

    // MARK: node helpers

    private func programAttr(_ name: String, _ n: Node) throws -> ProgLoadAttr {
        guard let attr = declared[name] else { throw ScenarioError(n, "no program '\(name)' is declared") }
        guard attr.progType == ProgType.xdp.rawValue else { throw ScenarioError(n, "libxdp components are xdp programs") }
        return attr
    }

    private func actions(_ n: Node?) throws -> UInt32 {
        guard let n else { return XDPProgramSpec.defaultChainCallActions }
        var mask: UInt32 = 0
        for a in try list(n) {
            guard let s = a.string, let i = verdictNames.firstIndex(of: s), i < 5 else { throw ScenarioError(a, "actions are XDP action names") }
            mask |= 1 << UInt32(i)
        }
        return mask
    }

    private func retcode(_ n: Node?) throws -> UInt32 {
        guard let n else { throw ScenarioError(nil, "retcode is missing") }
        if n.string == "wildcard" { return chainWildcard }
        if let s = n.string, s.hasPrefix("XDP_"), let i = verdictNames.firstIndex(of: String(s.dropFirst(4))), i < 5 { return UInt32(i) }
        return UInt32(truncatingIfNeeded: try int(n))
    }

    private func checkKeys(_ n: Node, _ allowed: [String]) throws {
        guard case let .mapping(m) = n else { return }
        for (k, _) in m where !allowed.contains(k.string ?? "") {
            throw ScenarioError(k, "unknown key '\(k.string ?? "?")' (allowed: \(allowed.joined(separator: ", ")))")
        }
    }

    private func mapping(_ n: Node?) throws -> [(Node, Node)] {
        guard let n else { return [] }
        guard case let .mapping(m) = n else { throw ScenarioError(n, "expected a mapping") }
        return m.map { ($0.key, $0.value) }
    }

    private func list(_ n: Node?) throws -> [Node] {
        guard let n else { return [] }
        guard case let .sequence(s) = n else { throw ScenarioError(n, "expected a list") }
        return Array(s)
    }

    private func str(_ n: Node?) throws -> String {
        guard let s = n?.string, !s.isEmpty else { throw ScenarioError(n, "expected a name") }
        return s
    }

    private func int(_ n: Node?, default d: Int? = nil) throws -> Int {
        guard let n else {
            if let d { return d }
            throw ScenarioError(nil, "a number is missing")
        }
        guard let s = n.string, let v = Int(s) ?? (s.hasPrefix("0x") ? Int(s.dropFirst(2), radix: 16) : nil) else {
            throw ScenarioError(n, "expected a number, got '\(n.string ?? "a \(n)")'")
        }
        return v
    }

    private func lookup(_ table: [String: Int32], _ n: Node?, _ kind: String) throws -> Int32 {
        let name = try str(n)
        guard let fd = table[name] else { throw ScenarioError(n, "no \(kind) named '\(name)' is declared (or it was closed)") }
        return fd
    }

}

extension ScenarioError {
    init(line: Int, column: Int, message: String) {
        self.line = line
        self.column = column
        self.message = message
    }
}

/// The scenarios shipped with the harness (Harness/Scenarios/*.yaml), by name.
public enum ShippedScenarios {
    public static var directory: URL? {
        Bundle.module.url(forResource: "Scenarios", withExtension: nil)
    }

    /// (name, path), sorted by name.
    public static var all: [(name: String, path: String)] {
        guard let dir = directory,
              let files = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else { return [] }
        return files.filter { $0.hasSuffix(".yaml") }.sorted().map {
            (String($0.dropLast(5)), dir.appendingPathComponent($0).path)
        }
    }
}
