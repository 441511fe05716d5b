import Foundation
// ScenarioDecode.swift — YAML text → ScenarioFile, every name and key checked first.
//
// The text is bounded (YAMLGuard), composed by Yams, then decoded in one pass that keeps
// the set of names in scope in file order: declarations add names, `load`, `link`,
// `get_fd_by_id`, `obj_get` and `stats: {as}` add them, `close` removes them. A step that
// names something not in scope (or of the wrong kind) makes the whole file invalid —
// before its first step runs.
import BPFKernel
import CBPFShims
import Yams
import BPFInstructions
import BPFObject

struct ScenarioDecoder {
    private var scope: [String: ObjectKind] = [:]
    /// Program definitions by name (for `load: NAME` and libxdp components).
    private(set) var definitions: [String: ProgramSpec] = [:]
    private var devices: [String] = []
    private var mapBytes = 0

    static func decode(_ text: String) throws -> ScenarioFile {
        try YAMLGuard.check(text)
        let root: Node
        do {
            guard let n = try Yams.compose(yaml: text) else { throw ScenarioError(line: 1, column: 1, message: "the file is empty") }
            root = n
        } catch let e as YamlError {
            throw ScenarioDecoder.yamlError(e)
        }
        var d = ScenarioDecoder()
        return try d.file(root)
    }

    static func yamlError(_ e: YamlError) -> ScenarioError {
        // Yams puts "line:column: …" first in its description; keep only its first line.
        let text = "\(e)".split(separator: "\n").first.map(String.init) ?? "YAML error"
        let parts = text.split(separator: ":", maxSplits: 2)
        if parts.count == 3, let l = Int(parts[0].trimmingCharacters(in: .whitespaces)),
           let c = Int(parts[1].trimmingCharacters(in: .whitespaces)) {
            return ScenarioError(line: l, column: c, message: yamlMessage(String(parts[2].trimmingCharacters(in: .whitespaces).prefix(200))))
        }
        return ScenarioError(line: 1, column: 1, message: "YAML: " + text.prefix(200))
    }

    /// A YAML syntax error's message, with a hint for the one a scenario writer meets most.
    static func yamlMessage(_ problem: String) -> String {
        var msg = "YAML: " + problem
        if problem.contains("mapping values are not allowed") {
            msg += " (a bare step such as `- detach` cannot carry expect:; write `- detach: {}` with expect: under it)"
        }
        return msg
    }

    private func pos(_ n: Node) -> Position { Position(line: max(1, n.mark?.line ?? 1), column: max(1, n.mark?.column ?? 1)) }

    // MARK: the file

    mutating func file(_ root: Node) throws -> ScenarioFile {
        let f = try Fields(root, "a scenario", allowed: ScenarioVocabulary.topLevel)
        let name = try f["name"].map { try stringValue($0, "name") } ?? "scenario"
        let desc = try f["description"].map { try stringValue($0, "description") } ?? ""
        if f["device"] != nil && f["devices"] != nil {
            throw ScenarioError(f.keyNode("devices")!, "give either device: (one) or devices: (several), not both")
        }
        var devs: [DeviceSpec] = []
        if let d = f["device"] {
            devs = [try device(d, defaultName: "veth0", ifindex: 1)]
        } else if let ds = f["devices"] {
            for (i, e) in try namedEntries(ds, "devices").enumerated() {
                if i >= ScenarioLimits.maxDevices { throw ScenarioError(e.key, "at most \(ScenarioLimits.maxDevices) devices") }
                var spec = try device(e.value, defaultName: e.name, ifindex: UInt32(i + 1), named: true)
                spec.name = e.name
                devs.append(spec)
            }
        }
        if devs.isEmpty { devs = [DeviceSpec(name: "veth0", ifindex: 1, queues: 1)] }
        if Set(devs.map(\.ifindex)).count != devs.count { throw ScenarioError(root, "two devices share an ifindex") }
        devices = devs.map(\.name)

        var frames = FrameSpec(size: 64, flows: 1)
        if let p = f["packet"] {
            let pf = try Fields(p, "packet:", allowed: ["size", "flows"])
            frames = FrameSpec(size: Int(try pf["size"].map { try intValue($0, "packet size", 60...1514) } ?? 64),
                               flows: Int(try pf["flows"].map { try intValue($0, "flows", 1...65536) } ?? 1))
        }

        var maps: [(String, MapSpec)] = []
        for e in try namedEntries(f["maps"], "maps") {
            maps.append((e.name, try mapSpec(e.value, e.name)))
            try declare(e.name, .map, e.key)
        }
        var progs: [(String, ProgramSpec)] = []
        for e in try namedEntries(f["programs"], "programs") {
            let spec = try program(e.value, e.name)
            progs.append((e.name, spec))
            definitions[e.name] = spec
            try declare(e.name, .program, e.key)
            declareObjectMaps(spec)
        }
        var slots: [(String, UInt32, String, Position)] = []
        for e in try namedEntries(f["slots"], "slots") {
            try use(e.name, .map, e.key)
            guard case let .mapping(m) = e.value else { throw ScenarioError(e.value, "slots of '\(e.name)' map indices to programs") }
            for (k, v) in m {
                let p = try nameValue(v, "a slot's program")
                try use(p, .program, v)
                slots.append((e.name, try u32Value(k, "a slot index"), p, pos(k)))
            }
        }
        let seqNode = try f.require("sequence", "a scenario")
        let seq = try listValue(seqNode, "sequence:")
        if seq.count > ScenarioLimits.maxSteps { throw ScenarioError(seqNode, "at most \(ScenarioLimits.maxSteps) steps") }
        var steps: [StepDecl] = []
        for (i, s) in seq.enumerated() { steps.append(try step(s, i + 1)) }
        return ScenarioFile(name: name, description: desc, maps: maps, programs: progs, slots: slots,
                            devices: devs, packet: frames, steps: steps)
    }

    private func device(_ n: Node, defaultName: String, ifindex: UInt32, named: Bool = false) throws -> DeviceSpec {
        let f = try Fields(n, "a device", allowed: named ? ["queues", "ifindex"] : ["name", "queues", "ifindex"])
        return DeviceSpec(name: try f["name"].map { try nameValue($0, "device name") } ?? defaultName,
                          ifindex: try f["ifindex"].map { UInt32(try intValue($0, "ifindex", 1...65535)) } ?? ifindex,
                          queues: Int(try f["queues"].map { try intValue($0, "queues", 1...Int64(ScenarioLimits.maxQueues)) } ?? 1))
    }

    // MARK: names in scope

    private mutating func declare(_ name: String, _ kind: ObjectKind, _ at: Node) throws {
        if let k = scope[name] { throw ScenarioError(at, "'\(name)' already names an open \(k.rawValue)") }
        scope[name] = kind
    }

    /// An object program's maps: the scenario's own of the same name, or opened under
    /// their names when the program loads.
    private mutating func declareObjectMaps(_ spec: ProgramSpec) {
        if case let .bytecode(.object(obj, _), _) = spec.body {
            for m in obj.maps where scope[m.name] == nil { scope[m.name] = .map }
        }
    }

    private func use(_ name: String, _ kind: ObjectKind, _ at: Node) throws {
        guard let k = scope[name] else {
            var msg = "no \(kind == .any ? "object" : kind.rawValue) named '\(name)' is open here"
            let same = scope.filter { $0.value == kind || kind == .any || $0.value == .any }.keys.sorted()
            if let m = suggestion(for: name, in: same) { msg += "; did you mean '\(m)'?" }
            throw ScenarioError(at, msg + (definitions[name] != nil ? " (it was closed; load it again with load: \(name))" : ""))
        }
        if k != kind && k != .any && kind != .any { throw ScenarioError(at, "'\(name)' is a \(k.rawValue), not a \(kind.rawValue)") }
    }

    private func useDevice(_ n: Node?) throws -> String? {
        guard let n else { return nil }
        let d = try nameValue(n, "device")
        guard devices.contains(d) else { throw ScenarioError(n, unknownMessage("device", d, devices)) }
        return d
    }

    private func ref(_ n: Node, _ kind: ObjectKind, _ what: String) throws -> String {
        let s = try nameValue(n, what)
        try use(s, kind, n)
        return s
    }

    // MARK: declarations

    private mutating func mapSpec(_ n: Node, _ name: String, extraKeys: [String] = []) throws -> MapSpec {
        let f = try Fields(n, "map '\(name)'", allowed: ScenarioVocabulary.mapKeys + extraKeys)
        let t = try choiceValue(try f.require("type", "map '\(name)'"), "map type", ScenarioVocabulary.mapTypes)
        let type: MapType = ["prog_array": .progArray, "array": .array, "static_key": .staticKey,
                             "hash": .hash, "percpu_array": .percpuArray][t]!
        let maxEntries = try f["max_entries"].map { try u32Value($0, "max_entries") } ?? 1
        let keySize = try f["key_size"].map { try u32Value($0, "key_size") } ?? 4
        let valueSize = try f["value_size"].map { try u32Value($0, "value_size") } ?? 4
        // A bound of the lab's, not the kernel's: a scenario's maps together.
        mapBytes += Int(maxEntries) * Int(max(valueSize, 8))
        if mapBytes > ScenarioLimits.maxMapBytes {
            throw ScenarioError(f.keyNode("max_entries") ?? n, "the scenario's maps would take \(mapBytes) bytes; scenario files may create at most \(ScenarioLimits.maxMapBytes >> 20) MiB of maps")
        }
        return MapSpec(type: type, maxEntries: maxEntries, keySize: keySize, valueSize: valueSize)
    }

    private func program(_ n: Node, _ name: String) throws -> ProgramSpec {
        let f = try Fields(n, "program '\(name)'", allowed: ScenarioVocabulary.programKeys)
        let bodies = ["builtin", "returns", "steps", "asm", "raw", "object"].filter { f[$0] != nil }
        guard bodies.count == 1 else {
            throw ScenarioError(n, bodies.isEmpty ? "program '\(name)' needs builtin:, returns:, steps:, asm:, raw: or object:" : "program '\(name)' has both \(bodies[0]): and \(bodies[1]):")
        }
        if f["program"] != nil && f["object"] == nil { throw ScenarioError(f.keyNode("program")!, "program: names a program of an object: (it goes with object:)") }
        let body: ProgramBody
        if let o = f["object"] {
            let file = try stringValue(o, "object")
            let obj: BPFObjectFile
            do {
                if file.hasSuffix(".o") {
                    guard let data = FileManager.default.contents(atPath: file) else { throw ScenarioError(o, "cannot read object '\(file.prefix(80))'") }
                    obj = try BPFObjectFile(bytes: Array(data))
                } else {
                    obj = try ShippedObjects.object(file)
                }
            } catch let e as ObjectError {
                throw ScenarioError(o, "object '\(file.prefix(80))': \(e.message)")
            } catch let e as HarnessError {
                throw ScenarioError(o, e.message)
            }
            let names = obj.programs.map(\.name)
            let pn: String
            if let p = f["program"] {
                pn = try stringValue(p, "program")
                guard names.contains(pn) else { throw ScenarioError(p, unknownMessage("program", pn, names, in: "object '\(file.prefix(40))'")) }
            } else {
                guard names.count == 1 else { throw ScenarioError(o, "object '\(file.prefix(40))' has \(names.count) programs; name one with program: (\(names.joined(separator: ", ")))") }
                pn = names[0]
            }
            body = .bytecode(.object(obj, program: pn), staticKeys: [])
        } else if f["asm"] != nil || f["raw"] != nil {
            let keys = try f["static_keys"].map { try listValue($0, "static_keys").map { try ref($0, .map, "static_keys") } } ?? []
            if let a = f["asm"] {
                let text = try stringValue(a, "asm")
                // Checked now, so a wrong line is reported with the file's line; maps by name.
                do {
                    _ = try Assembler.assemble(text) { mapName in
                        try self.use(mapName, .map, a)
                        return 0
                    }
                } catch let e as AssemblyError {
                    let line = (a.mark?.line ?? 1) + e.line
                    throw ScenarioError(line: line, column: e.column, message: "program '\(name)', asm line \(e.line), column \(e.column): \(e.message)")
                }
                body = .bytecode(.asm(text), staticKeys: keys)
            } else {
                let text = try stringValue(f["raw"]!, "raw")
                do {
                    body = .bytecode(.raw(try BPFBytecode.decode(try BPFBytecode.parseHex(text))), staticKeys: keys)
                } catch let e as BytecodeError {
                    throw ScenarioError(f["raw"]!, "program '\(name)': raw: \(e.message)")
                }
            }
            if let e = f["engine"], !["interp", "bytecode"].contains(try choiceValue(e, "engine", ProgramEngine.allCases.map(\.rawValue))) {
                throw ScenarioError(e, "bytecode programs run on the interpreter (engine: interp); the lab has no JIT for instructions yet")
            }
        } else if f["static_keys"] != nil {
            throw ScenarioError(f.keyNode("static_keys")!, "static_keys: go with asm: or raw:")
        } else if let b = f["builtin"] {
            let s = try choiceValue(b, "builtin", ScenarioVocabulary.builtins)
            body = .builtin(["pass": .xdpPass, "drop": .xdpDrop, "tx": .xdpTx, "aborted": .xdpAborted][s]!)
        } else if let r = f["returns"] {
            body = .returns(try u32OrMinusOne(r, "returns"))
        } else {
            let subs = try f["subprogs"].map { try listValue($0, "subprogs").map { try steps($0) } } ?? []
            let names = try f["subprog_names"].map { try listValue($0, "subprog_names").map { try nameValue($0, "a subprogram name") } } ?? []
            body = .steps(main: try steps(f["steps"]!), subprogs: subs, subprogNames: names)
        }
        if case .steps = body {} else if f["subprogs"] != nil || f["subprog_names"] != nil {
            throw ScenarioError(f.keyNode("subprogs") ?? f.keyNode("subprog_names")!, "subprogs: go with steps:")
        }
        var flags: ProgLoadFlags = []
        for fl in try f["flags"].map({ try listValue($0, "flags") }) ?? [] {
            flags.insert(try choiceValue(fl, "program flag", ScenarioVocabulary.programFlags) == "chain_calls" ? .chainCalls : .xdpHasFrags)
        }
        let engine = try f["engine"].map { ProgramEngine(rawValue: try choiceValue($0, "engine", ProgramEngine.allCases.map(\.rawValue)))! } ?? .jit
        var attach: AttachSpec?
        if f["extends"] != nil && f["traces"] != nil { throw ScenarioError(n, "a program either extends: or traces:, not both") }
        if let e = f["extends"] {
            let ef = try Fields(e, "extends:", allowed: ["program", "function"])
            attach = .extends(program: try ref(try ef.require("program", "extends:"), .program, "extends: program"),
                              function: try nameValue(try ef.require("function", "extends:"), "function"))
        }
        if let t = f["traces"] {
            let tf = try Fields(t, "traces:", allowed: ["program", "kernel_function", "function", "kind"])
            let k = try choiceValue(try tf.require("kind", "traces:"), "trace kind", ScenarioVocabulary.traceKinds)
            let kind: AttachType = k == "fentry" ? .traceFentry : k == "fexit" ? .traceFexit : .modifyReturn
            if (tf["program"] == nil) == (tf["kernel_function"] == nil) {
                throw ScenarioError(t, "traces: names a program: or a kernel_function: (one of them)")
            }
            if let kf = tf["kernel_function"] {
                attach = .traces(kind: kind, program: nil, function: try nameValue(kf, "kernel_function"))
            } else {
                attach = .traces(kind: kind, program: try ref(tf["program"]!, .program, "traces: program"),
                                 function: try tf["function"].map { try nameValue($0, "function") })
            }
        }
        return ProgramSpec(body: body, flags: flags, engine: engine, attach: attach, position: pos(n))
    }

    private func steps(_ n: Node) throws -> [StepSpec] {
        try listValue(n, "steps").map { s in
            if let word = s.scalar?.string {
                guard word == "return_last" else {
                    throw ScenarioError(s, unknownMessage("step", word, ScenarioVocabulary.stepNames) + " — a step with an argument is written {\(word): …}")
                }
                return .returnLast
            }
            let (k, op, v) = try singleKey(s, "a step")
            func index(_ a: Fields) throws -> TailIndex {
                if a["index"] != nil && a["index_var"] != nil { throw ScenarioError(a.node, "give index: or index_var:, not both") }
                if let iv = a["index_var"] { return .variable(Int(try intValue(iv, "index_var", 0...63))) }
                return .constant(UInt64(try u32Value(try a.require("index", op), "index")))
            }
            switch op {
            case "count": return .count(try nameValue(v, "counter name"))
            case "call": return .call(Int(try intValue(v, "subprogram number", 0...255)))
            case "return": return .returnConst(try u32OrMinusOne(v, "return value"))
            case "return_var": return .returnVar(Int(try intValue(v, "variable", 0...63)))
            case "store_cookie": return .storeCookie(Int(try intValue(v, "variable", 0...63)))
            case "store_func_ret": return .storeFuncRet(Int(try intValue(v, "variable", 0...63)))
            case "set_var":
                let a = try Fields(v, "set_var", allowed: ["index", "value"])
                return .setVar(Int(try intValue(try a.require("index", "set_var"), "variable", 0...63)), try u64Value(try a.require("value", "set_var"), "value"))
            case "tail_call", "indirect_call":
                let a = try Fields(v, op, allowed: ["array", "index", "index_var"])
                let arr = try ref(try a.require("array", op), .map, "array")
                return op == "tail_call" ? .tailCall(array: arr, index: try index(a)) : .indirectCall(array: arr, index: try index(a))
            case "static_branch":
                let a = try Fields(v, op, allowed: ["key", "call"])
                return .staticBranch(key: try ref(try a.require("key", op), .map, "key"),
                                     call: Int(try intValue(try a.require("call", op), "subprogram number", 0...255)))
            case "static_key_set":
                let a = try Fields(v, op, allowed: ["key", "on"])
                return .staticKeySet(key: try ref(try a.require("key", op), .map, "key"), on: try boolValue(try a.require("on", op), "on"))
            default:
                throw ScenarioError(k, unknownMessage("step", op, ScenarioVocabulary.stepNames))
            }
        }
    }

    // MARK: the sequence

    private mutating func step(_ s: Node, _ n: Int) throws -> StepDecl {
        // Forms: a bare word (detach, rcu_barrier), or a mapping with one operation key and
        // optionally expect:. A bare operation that needs no argument with an expectation
        // is written `detach: {}` (or `rcu_barrier: {}`) followed by expect:.
        let opNames = ScenarioVocabulary.operationNames
        var opKey: Node, op: String, arg: Node?, expectNode: Node?
        if let word = s.scalar?.string {
            guard ["detach", "rcu_barrier"].contains(word) else {
                if opNames.contains(word) { throw ScenarioError(s, "'\(word)' needs an argument: \(word): …") }
                throw ScenarioError(s, unknownMessage("operation", word, opNames))
            }
            (opKey, op, arg) = (s, word, nil)
        } else {
            guard case let .mapping(m) = s else { throw ScenarioError(s, "a step is an operation (one key), optionally with expect:; got \(s.shape)") }
            var ops: [(Node, String, Node)] = []
            for (k, v) in m {
                guard let name = k.scalar?.string else { throw ScenarioError(k, "an operation name is a word") }
                if name == "expect" {
                    if expectNode != nil { throw ScenarioError(k, "expect: appears twice") }
                    expectNode = v
                } else {
                    guard opNames.contains(name) else { throw ScenarioError(k, unknownMessage("operation", name, opNames + ["expect"])) }
                    ops.append((k, name, v))
                }
            }
            guard ops.count == 1 else {
                throw ScenarioError(s, ops.isEmpty ? "a step needs an operation besides expect:" : "a step is one operation; this one has \(ops.map(\.1).joined(separator: ", "))")
            }
            (opKey, op, arg) = (ops[0].0, ops[0].1, ops[0].2)
            if let a = arg, case .mapping(let mm) = a, mm.isEmpty, ["detach", "rcu_barrier"].contains(op) { arg = nil }
        }
        let keys = ScenarioVocabulary.operations.first { $0.name == op }!.keys
        func fields() throws -> Fields {
            guard let arg else { throw ScenarioError(opKey, "\(op) needs its arguments {\(keys.joined(separator: ", "))}") }
            return try Fields(arg, op, allowed: keys)
        }
        func word(_ what: String) throws -> Node {
            guard let arg else { throw ScenarioError(opKey, "\(op) needs \(what)") }
            return arg
        }
        func retcode(_ n: Node) throws -> UInt32 {
            if n.scalar?.string == "wildcard" { return chainWildcard }
            if let s = n.scalar?.string, s.hasPrefix("XDP_") {
                guard let i = ScenarioVocabulary.verdictNames.firstIndex(of: String(s.dropFirst(4))) else {
                    throw ScenarioError(n, unknownMessage("retcode", s, ScenarioVocabulary.verdictNames.map { "XDP_" + $0 } + ["wildcard"]))
                }
                return UInt32(i)
            }
            return try u32OrMinusOne(n, "retcode")
        }
        func mode(_ n: Node?) throws -> XDPModeSpec? {
            try n.map { XDPModeSpec(rawValue: try choiceValue($0, "XDP mode", XDPModeSpec.allCases.map(\.rawValue)))! }
        }
        func xdpFlags(_ n: Node?) throws -> XDPFlags {
            var f: XDPFlags = []
            for x in try n.map({ try listValue($0, "flags") }) ?? [] {
                f.insert(try choiceValue(x, "XDP flag", ScenarioVocabulary.xdpFlags) == "replace" ? .replace : .updateIfNoExist)
            }
            return f
        }
        func idRef(_ n: Node) throws -> IDRef {
            if let s = n.scalar?.string, let _ = Int64(s) { return .number(try u32Value(n, "id")) }
            return .of(try ref(n, .any, "id"))
        }
        func idKind(_ n: Node) throws -> IDKind { IDKind(rawValue: try choiceValue(n, "kind", IDKind.allCases.map(\.rawValue)))! }
        let operation: Operation
        switch op {
        case "attach":
            if let a = arg, a.scalar != nil {
                operation = .attach(program: try ref(a, .program, "attach"), device: nil, mode: nil, flags: [], expected: nil)
            } else {
                let a = try fields()
                operation = .attach(program: try ref(try a.require("program", "attach"), .program, "program"), device: try useDevice(a["device"]),
                                    mode: try mode(a["mode"]), flags: try xdpFlags(a["flags"]),
                                    expected: try a["expected"].map { try ref($0, .program, "expected") })
            }
        case "detach":
            if arg == nil {
                operation = .detach(device: nil, mode: nil, flags: [], expected: nil)
            } else {
                let a = try fields()
                operation = .detach(device: try useDevice(a["device"]), mode: try mode(a["mode"]), flags: try xdpFlags(a["flags"]),
                                    expected: try a["expected"].map { try ref($0, .program, "expected") })
            }
        case "packets":
            let maxP = Int64(ScenarioLimits.maxPacketsPerStep)
            if let a = arg, a.scalar != nil {
                operation = .packets(count: Int(try intValue(a, "packets (count)", 0...maxP)), device: nil, viaDispatcher: false)
            } else {
                let a = try fields()
                operation = .packets(count: Int(try intValue(try a.require("count", "packets"), "count", 0...maxP)), device: try useDevice(a["device"]),
                                     viaDispatcher: try a["via"].map { try choiceValue($0, "via", ["driver", "dispatcher"]) == "dispatcher" } ?? false)
            }
        case "test_run":
            if let a = arg, a.scalar != nil {
                operation = .testRun(program: try ref(a, .program, "test_run"), size: nil, repeatCount: 1)
            } else {
                let a = try fields()
                operation = .testRun(program: try ref(try a.require("program", "test_run"), .program, "program"),
                                     size: try a["size"].map { Int(try intValue($0, "size", 0...65536)) },
                                     repeatCount: try a["repeat"].map { UInt32(try intValue($0, "repeat", 0...Int64(ScenarioLimits.maxRepeat))) } ?? 1)
            }
        case "load":
            let a = try word("a program name or {NAME: {program}}")
            if a.scalar != nil {
                let name = try nameValue(a, "load")
                guard let spec = definitions[name] else { throw ScenarioError(a, "no program '\(name)' is declared under programs: (or write load: {\(name): {…}})") }
                try declare(name, .program, a)
                declareObjectMaps(spec)
                operation = .load(name: name, spec: spec)
            } else {
                let e = try namedEntries(a, "load")
                guard e.count == 1 else { throw ScenarioError(a, "load: {NAME: {program}} loads one program") }
                let spec = try program(e[0].value, e[0].name)
                definitions[e[0].name] = spec
                try declare(e[0].name, .program, e[0].key)
                declareObjectMaps(spec)
                operation = .load(name: e[0].name, spec: spec)
            }
        case "close":
            let a = try word("a name")
            let name = try nameValue(a, "close")
            try use(name, .any, a)
            scope[name] = nil
            operation = .close(name)
        case "chain_add", "chain_del", "chain_get":
            let a = try fields()
            let prev = try ref(try a.require("prev", op), .program, "prev")
            let rc = try retcode(try a.require("retcode", op))
            if op == "chain_add" {
                operation = .chainAdd(prev: prev, retcode: rc, next: try ref(try a.require("next", op), .program, "next"))
            } else {
                if a["next"] != nil { throw ScenarioError(a.keyNode("next")!, "\(op) takes no next:") }
                operation = op == "chain_del" ? .chainDel(prev: prev, retcode: rc) : .chainGet(prev: prev, retcode: rc)
            }
        case "map_create":
            let a = try fields()
            let name = try nameValue(try a.require("name", op), "name")
            guard case let .mapping(m) = arg! else { throw ScenarioError(arg!, "map_create takes a mapping") }
            let rest = Node.mapping(Node.Mapping(m.filter { $0.key.scalar?.string != "name" }.map { ($0.key, $0.value) }, .implicit, .any, arg!.mark))
            let spec = try mapSpec(rest, name)
            try declare(name, .map, a.keyNode("name")!)
            operation = .mapCreate(name: name, spec: spec)
        case "map_update":
            let a = try fields()
            let given = ["program", "map_fd", "fd", "value"].filter { a[$0] != nil }
            guard given.count == 1 else { throw ScenarioError(a.node, "map_update takes one of program:, map_fd:, fd: or value:") }
            let value: MapValueSpec
            switch given[0] {
            case "program": value = .program(try ref(a["program"]!, .program, "program"))
            case "map_fd": value = .map(try ref(a["map_fd"]!, .map, "map_fd"))
            case "fd": value = .fd(Int32(try intValue(a["fd"]!, "fd", 0...1_000_000)))
            default: value = .number(try u64Value(a["value"]!, "value"))
            }
            let flag = try a["flags"].map { try choiceValue($0, "update flag", ScenarioVocabulary.updateFlags) } ?? "any"
            operation = .mapUpdate(map: try ref(try a.require("map", op), .map, "map"), key: try u32Value(try a.require("key", op), "key"),
                                   value: value, flags: flag == "any" ? .any : flag == "noexist" ? .noExist : .exist)
        case "map_delete", "map_lookup":
            let a = try fields()
            let m = try ref(try a.require("map", op), .map, "map"), k = try u32Value(try a.require("key", op), "key")
            operation = op == "map_delete" ? .mapDelete(map: m, key: k) : .mapLookup(map: m, key: k)
        case "get_fd_by_id":
            let a = try fields()
            let kind = try idKind(try a.require("kind", op))
            let id = try idRef(try a.require("id", op))
            let asNode = try a.require("as", op)
            let name = try nameValue(asNode, "as")
            try declare(name, kind == .prog ? .program : kind == .map ? .map : .link, asNode)
            operation = .getFdByID(kind: kind, id: id, as: name)
        case "next_id":
            let a = try fields()
            operation = .nextID(kind: try idKind(try a.require("kind", op)), after: try a["after"].map { try idRef($0) } ?? .number(0))
        case "mkdir", "rmdir", "unpin":
            let p = try stringValue(try word("a path"), "path")
            operation = op == "mkdir" ? .mkdir(p) : op == "rmdir" ? .rmdir(p) : .unpin(p)
        case "pin":
            let a = try fields()
            operation = .pin(object: try ref(try a.require("object", op), .any, "object"), path: try stringValue(try a.require("path", op), "path"))
        case "obj_get":
            let a = try fields()
            let asNode = try a.require("as", op)
            let name = try nameValue(asNode, "as")
            try declare(name, .any, asNode)
            operation = .objGet(path: try stringValue(try a.require("path", op), "path"), as: name)
        case "link":
            let a = try fields()
            let nameNode = try a.require("name", op)
            let name = try nameValue(nameNode, "link name")
            let prog = try ref(try a.require("program", op), .program, "program")
            let target = try a["target"].map { try ref($0, .program, "target") }
            try declare(name, .link, nameNode)
            operation = .link(name: name, program: prog, device: try useDevice(a["device"]), mode: try mode(a["mode"]),
                              target: target, function: try a["function"].map { try nameValue($0, "function") },
                              cookie: try a["cookie"].map { try u64Value($0, "cookie") } ?? 0)
        case "link_update":
            let a = try fields()
            operation = .linkUpdate(link: try ref(try a.require("link", op), .link, "link"), program: try ref(try a.require("program", op), .program, "program"),
                                    expected: try a["expected"].map { try ref($0, .program, "expected") })
        case "link_detach":
            operation = .linkDetach(try ref(try word("a link name"), .link, "link_detach"))
        case "libxdp_attach":
            var specs: [(String, UInt32, UInt32)] = []
            for e in try listValue(try word("a list of programs"), "libxdp_attach") {
                if e.scalar != nil {
                    let p = try nameValue(e, "program")
                    try libxdpComponent(p, e)
                    specs.append((p, XDPProgramSpec.defaultRunPrio, XDPProgramSpec.defaultChainCallActions))
                    continue
                }
                let f = try Fields(e, "a libxdp program", allowed: keys)
                let p = try nameValue(try f.require("program", "a libxdp program"), "program")
                try libxdpComponent(p, f["program"]!)
                var mask: UInt32 = 0
                if let acts = f["chain_call_actions"] {
                    for x in try listValue(acts, "chain_call_actions") {
                        mask |= 1 << UInt32(ScenarioVocabulary.verdictNames.firstIndex(of: try choiceValue(x, "XDP action", ScenarioVocabulary.verdictNames))!)
                    }
                } else {
                    mask = XDPProgramSpec.defaultChainCallActions
                }
                specs.append((p, try f["run_prio"].map { try u32Value($0, "run_prio") } ?? XDPProgramSpec.defaultRunPrio, mask))
            }
            operation = .libxdpAttach(specs.map { (program: $0.0, runPrio: $0.1, actions: $0.2) })
        case "libxdp_detach":
            let names = try listValue(try word("a list of names"), "libxdp_detach").map { try nameValue($0, "program") }
            operation = .libxdpDetach(names)
        case "stats":
            let a = try word("on, off or {as: NAME}")
            if a.scalar != nil {
                operation = .stats(on: try choiceValue(a, "stats", ["on", "off"]) == "on", as: nil)
            } else {
                let f = try Fields(a, "stats", allowed: ["as"])
                let asNode = try f.require("as", "stats")
                let name = try nameValue(asNode, "as")
                try declare(name, .stats, asNode)
                operation = .stats(on: true, as: name)
            }
        case "set_var":
            let a = try fields()
            operation = .setVar(program: try ref(try a.require("program", op), .program, "program"),
                                index: Int(try intValue(try a.require("index", op), "variable", 0...63)), value: try u64Value(try a.require("value", op), "value"))
        case "rcu_barrier":
            operation = .rcuBarrier
        default:
            throw ScenarioError(opKey, unknownMessage("operation", op, opNames))
        }
        return StepDecl(index: n, operation: operation, expect: try expectNode.map { try expectation($0) }, position: pos(s))
    }

    private func libxdpComponent(_ p: String, _ at: Node) throws {
        guard let d = definitions[p] else { throw ScenarioError(at, "no program '\(p)' is declared (libxdp components are loaded from their declarations)") }
        if d.attach != nil { throw ScenarioError(at, "libxdp components are plain xdp programs; '\(p)' extends or traces another") }
    }

    // MARK: expectations

    private func expectation(_ n: Node) throws -> Expectation {
        let f = try Fields(n, "expect:", allowed: ScenarioVocabulary.expectationNames)
        var e = Expectation(position: pos(n))
        func counts(_ key: String, _ kind: ObjectKind?) throws -> [String: UInt64] {
            var out: [String: UInt64] = [:]
            for x in try namedEntries(f[key], key) {
                if let kind { try use(x.name, kind, x.key) }
                out[x.name] = try u64Value(x.value, "\(key) of \(x.name)")
            }
            return out
        }
        if let v = f["errno"] {
            let s = try stringValue(v, "errno")
            guard let en = Errno(name: s) else { throw ScenarioError(v, unknownMessage("errno", s, Errno.allCases.map(\.name))) }
            e.errno = en
        }
        if let v = f["verdicts"] {
            for x in try namedEntries(v, "verdicts") {
                guard let i = ScenarioVocabulary.verdictNames.firstIndex(of: x.name) else {
                    throw ScenarioError(x.key, unknownMessage("verdict", x.name, ScenarioVocabulary.verdictNames))
                }
                e.verdicts[i] = try u64Value(x.value, "verdict count")
            }
        }
        e.invalid = try f["invalid"].map { try u64Value($0, "invalid") }
        e.retval = try f["retval"].map { try u32OrMinusOne($0, "retval") }
        e.dataOutSize = try f["data_out_size"].map { Int(try intValue($0, "data_out_size", 0...65536)) }
        e.counters = try counts("counters", nil)
        e.runCount = try counts("run_count", .program)
        e.misses = try counts("misses", .program)
        for x in try namedEntries(f["run_time_ns"], "run_time_ns") {
            try use(x.name, .program, x.key)
            e.runTimeNonzero[x.name] = try choiceValue(x.value, "run_time_ns", ["nonzero", "0"]) == "nonzero"
        }
        e.refcnt = try counts("refcnt", .any)
        e.usercnt = try counts("usercnt", .map)
        e.liveObjects = try f["live_objects"].map { Int(try intValue($0, "live_objects", 0...1_000_000)) }
        e.pendingFree = try f["pending_free"].map { Int(try intValue($0, "pending_free", 0...1_000_000)) }
        if let v = f["next"] {
            e.next = .some(v.scalar?.string == "none" ? nil : try ref(v, .program, "next"))
        }
        if let v = f["value"] {
            if let s = v.scalar?.string, Int64(s) != nil || s.hasPrefix("0x") { e.value = .number(try u64Value(v, "value")) } else {
                e.value = .program(try nameValue(v, "value"))
            }
        }
        if let v = f["ids"] { e.ids = try listValue(v, "ids").map { try ref($0, .any, "ids") } }
        for x in try namedEntries(f["vars"], "vars") {
            try use(x.name, .program, x.key)
            guard case let .mapping(m) = x.value else { throw ScenarioError(x.value, "vars of '\(x.name)' map indices to values") }
            var vs: [Int: UInt64] = [:]
            for (k, val) in m { vs[Int(try intValue(k, "variable", 0...63))] = try u64Value(val, "value") }
            e.vars[x.name] = vs
        }
        for x in try namedEntries(f["link_program"], "link_program") {
            try use(x.name, .link, x.key)
            e.linkProgram[x.name] = try nameValue(x.value, "program")
        }
        if let v = f["dispatcher"] { e.dispatcher = try listValue(v, "dispatcher").map { try ref($0, .program, "dispatcher") } }
        for x in try namedEntries(f["static_key"], "static_key") {
            try use(x.name, .map, x.key)
            let sf = try Fields(x.value, "static_key of '\(x.name)'", allowed: ["enabled", "sites"])
            e.staticKeys[x.name] = (try sf["enabled"].map { try boolValue($0, "enabled") }, try sf["sites"].map { Int(try intValue($0, "sites", 0...100_000)) })
        }
        for x in try namedEntries(f["attached"], "attached") {
            guard devices.contains(x.name) else { throw ScenarioError(x.key, unknownMessage("device", x.name, devices)) }
            e.attached[x.name] = x.value.scalar?.string == "none" ? .some(nil) : .some(try nameValue(x.value, "program"))
        }
        if let v = f["pins"] { e.pins = try listValue(v, "pins").map { try stringValue($0, "path") } }
        if let v = f["audit"] { e.audit = try choiceValue(v, "audit", ["clean"]) == "clean" }
        return e
    }
}
