// ScenarioRun.swift — runs a checked ScenarioFile on a fresh checked lab kernel.
//
// Every operation is a facade call (the bpf(2) commands, XDP attach, libxdp, bpffs) or a
// burst through the driver. Each step prints what it did and its result
// (`chain_add pass[XDP_PASS] → drop: ok`), records observations (verdicts, retval, IDs,
// refcounts, …) and checks its `expect:`. A call that fails without `errno:` expected is a
// failure; so is one that succeeds when an errno was expected. The format is documented
// in README.md ("Scenario files"); the vocabulary is ScenarioModel.swift's.
import BPFKernel
import BPFInstructions
import CBPFShims
import Foundation
import Yams

/// One step's record, for `bpflab run --format json` (one object per step).
public struct StepRecord: Codable, Sendable {
    public var step: Int
    public var line: Int
    public var operation: String
    public var arguments: String
    public var result: String
    public var errno: String?
    public var message: String?
    public var observed: [String: String]
    public var passed: Bool
    public var failures: [String]
}

/// What a scenario run did.
public struct ScenarioOutcome: Sendable {
    public var name: String
    public var lines: [String] = []
    public var failures: [String] = []
    public var records: [StepRecord] = []
    /// Objects alive after teardown and a barrier (0 unless something leaked).
    public var liveAfterTeardown = 0
    /// Refcount rules broken during the run (checked kernel).
    public var violations: [String] = []
    public var interrupted = false
    /// With `traceStep`: the walk, the verdict it found, and the real run's on the same frame.
    public var trace: [TraceLine]?
    public var tracedVerdict: UInt32?
    public var realVerdict: UInt32?
    /// With `observeState`: the state after each step (index 0: the declarations), taken
    /// once the step's grace periods have passed.
    public var states: [Int: ObservedState] = [:]
    public var passed: Bool { failures.isEmpty && !interrupted }
}

/// How a run may be watched and stopped (long bursts).
public struct ScenarioRunOptions {
    public var progress: ((String) -> Void)?
    public var shouldStop: () -> Bool = { false }
    /// Run the auditor after every step (`bpflab run --audit`); a finding is a failure.
    public var auditEveryStep = false
    /// Called after every step with the kernel (graphs are taken here).
    public var afterStep: ((Int, Kernel) -> Void)?
    /// Trace one packet (or test run) just before this step runs — it must be a
    /// `packets` or `test_run` step — then stop (`bpflab trace`).
    public var traceStep: Int?
    /// Run every program declared `engine: interp` (steps, builtins, returns) as compiled
    /// instructions on the bytecode interpreter instead (`bpflab run --bytecode`): the
    /// scenario's expectations must hold the same.
    public var bytecodeForInterp = false
    /// After every step, let its grace periods pass (an RCU barrier) and record what the run's
    /// objects, devices and links look like (ScenarioState.swift) — what `--on both` compares
    /// with the live kernel, whose grace periods pass on their own between steps.
    public var observeState = false
    public init() {}
}

/// A name that is not open when a step runs (its creation failed earlier): a failure of
/// that step, not an invalid file.
private struct NotOpen: Error { let message: String }

public final class ScenarioRunner {
    public let file: ScenarioFile
    public let source: String
    var kernel: Kernel!
    var bpf: BPF!
    var devices: [String: NetDevice] = [:]
    var handles: [String: (fd: Int32, kind: ObjectKind)] = [:]
    private var libxdp: LibXDP!
    private var statsFD: Int32?
    private var frames = FrameSpec(size: 64, flows: 1)
    private var bytecodeForInterp = false
    private var ledger = ObjectLedger()

    /// Decodes and checks `yaml` whole; throws ScenarioError (with line and column) if the
    /// file is invalid. Nothing runs yet.
    public init(yaml: String, source: String = "scenario") throws {
        self.source = source
        file = try ScenarioDecoder.decode(yaml)
    }

    /// The scenario's name (its `name:`, else the source).
    public var name: String { file.name == "scenario" ? source : file.name }

    /// Runs it on a fresh checked kernel, tears everything down, and reports.
    public func run(_ options: ScenarioRunOptions = ScenarioRunOptions()) -> ScenarioOutcome {
        var out = ScenarioOutcome(name: name)
        bytecodeForInterp = options.bytecodeForInterp
        let k = Kernel(KernelConfig(checked: true))
        defer {
            for d in devices.values { d.detachAll() }
            bpf.closeAll()
            kernel.unpinAll()
            kernel.xdpDispatcher.reset()
            kernel.quiesce()
            out.liveAfterTeardown = kernel.liveObjects
            out.violations += kernel.violations.map(\.description)
            if out.liveAfterTeardown != 0 { out.failures.append("teardown: \(out.liveAfterTeardown) objects still alive (a leak)") }
            for v in kernel.violations { out.failures.append("refcount rule broken: \(v)") }
        }
        out.failures += declare(on: BPF(kernel: k))
        if !out.failures.isEmpty { return out }
        // The runner is an RCU reader, online through each step and quiescent between steps —
        // as the kernel always has a CPU that has not passed a quiescent state yet. So what a
        // step defers to a grace period (a program's free after its last put) is still pending
        // when the step's expectations are checked, however fast the reclaimer is; a step that
        // waits for a grace period (rcu_barrier, synchronize) takes the runner offline.
        let reader = kernel.rcu.registerThread(name: "scenario")
        defer { kernel.rcu.unregisterThread(reader) }
        options.afterStep?(0, kernel)  // step 0: the declarations
        if options.observeState { out.states[0] = observedState() }
        for step in file.steps {
            if options.shouldStop() {
                out.interrupted = true
                out.failures.append("interrupted before step \(step.index)")
                return out
            }
            if step.index == options.traceStep {
                traceAt(step, &out)
                return out
            }
            runStep(step, options, &out)
            reader.quiescentState()
        }
        if let t = options.traceStep { out.failures.append("step \(t) was not reached (the scenario has \(file.steps.count) steps)") }
        return out
    }

    /// The devices, then the declarations (maps, programs, slots), through `bpf`. Returns
    /// what failed (the kernel refused it): a failed step 0.
    func declare(on bpf: BPF) -> [String] {
        var failures: [String] = []
        kernel = bpf.kernel
        self.bpf = bpf
        libxdp = LibXDP(bpf: bpf)
        frames = file.packet
        for d in file.devices {
            devices[d.name] = NetDevice(kernel: kernel, name: d.name, ifindex: d.ifindex, queues: d.queues, feedsDispatcher: true)
        }
        for (name, spec) in file.maps {
            do { try open(name, try bpf.mapCreate(mapAttr(name, spec)), .map) } catch { failures.append("declaring map '\(name)': \(error)") }
        }
        for (name, spec) in file.programs {
            do { try open(name, try bpf.progLoad(try progAttr(name, spec)), .program) } catch { failures.append("declaring program '\(name)': \(error)") }
        }
        for s in file.slots {
            do { try bpf.mapUpdateElem(try fd(s.map, .map), key: u32Bytes(s.index), value: u32Bytes(UInt32(bitPattern: try fd(s.program, .program)))) }
            catch { failures.append("slot \(s.index) of '\(s.map)' (line \(s.position.line)): \(error)") }
        }
        return failures
    }

    // MARK: building attributes

    private func fd(_ name: String, _ kind: ObjectKind) throws -> Int32 {
        guard let h = handles[name] else { throw NotOpen(message: "'\(name)' is not open (its creation failed at an earlier step)") }
        // A name of the wrong kind (an obj_get that found a link where a program is asked
        // for) goes to the facade as it is: the kernel answers such an fd with its errno.
        return h.fd
    }

    private func mapAttr(_ name: String, _ s: MapSpec) -> MapCreateAttr {
        MapCreateAttr(type: s.type, keySize: s.keySize, valueSize: s.valueSize, maxEntries: s.maxEntries, name: String(name.prefix(15)).replacingOccurrences(of: "-", with: "_"))
    }

    private func objName(_ n: String) -> String { String(n.prefix(15)).replacingOccurrences(of: "-", with: "_") }

    private func progAttr(_ name: String, _ spec: ProgramSpec) throws -> ProgLoadAttr {
        func resolve(_ s: StepSpec) throws -> Step { try s.resolved { try fd($0, .map) } }
        var attr: ProgLoadAttr
        let engine = bytecodeForInterp && spec.engine == .interp ? .bytecode : spec.engine
        func compiled(_ sp: StepProgram) -> ProgLoadAttr {
            var a = ProgLoadAttr(steps: sp, name: objName(name), jited: false)
            a.compileSteps = true
            return a
        }
        let machine = engine == .machine || engine == .machineDirect
        func generated(_ sp: StepProgram) -> ProgLoadAttr {
            var a = ProgLoadAttr(steps: sp, name: objName(name))
            a.machineCode = true
            return a
        }
        switch spec.body {
        case let .builtin(b) where engine == .bytecode:
            attr = compiled(StepProgram([.returnConst(ScenarioVocabulary.verdict(ofBuiltin: b))]))
        case let .returns(v) where engine == .bytecode:
            attr = compiled(StepProgram([.returnConst(v)]))
        case let .builtin(b) where machine:
            attr = generated(StepProgram([.returnConst(ScenarioVocabulary.verdict(ofBuiltin: b))]))
        case let .returns(v) where machine:
            attr = generated(StepProgram([.returnConst(v)]))
        case let .builtin(b): attr = ProgLoadAttr(body: b, name: objName(name))
        case let .returns(v): attr = .returning(v, name: objName(name))
        case let .steps(main, subs, names):
            let sp = StepProgram(try main.map(resolve), subprogs: try subs.map { try $0.map(resolve) },
                                 directTailCalls: engine.directTailCalls, subprogNames: names)
            attr = engine == .bytecode ? compiled(sp) : machine ? generated(sp) : ProgLoadAttr(steps: sp, name: objName(name), jited: engine != .interp)
        case let .bytecode(source, keys):
            let insns: [BPFInsn]
            switch source {
            case let .asm(text): insns = try Assembler.assemble(text) { try self.fd($0, .map) }
            case let .raw(i): insns = i
            case let .object(obj, program):
                // The object's maps: the scenario's maps of the same name, else created from
                // the object (and open under that name from then on).
                let p = obj.program(named: program)!
                var fds: [String: Int32] = [:]
                for m in obj.maps {
                    if let h = handles[m.name], h.kind == .map {
                        fds[m.name] = h.fd
                    } else if handles[m.name] == nil {
                        let fd = try bpf.createObjectMap(m)
                        try open(m.name, fd, .map)
                        fds[m.name] = fd
                    }
                }
                attr = try bpf.objectProgramAttr(obj, p, mapFDs: fds)
                attr.name = objName(name)
                return try finishAttr(attr, spec)
            }
            attr = ProgLoadAttr(insns: insns, name: objName(name), staticKeyFDs: try keys.map { try fd($0, .map) })
        }
        return try finishAttr(attr, spec)
    }

    /// Flags and the attach target from the spec (extends: / traces:), over what the body gave.
    private func finishAttr(_ a: ProgLoadAttr, _ spec: ProgramSpec) throws -> ProgLoadAttr {
        var attr = a
        attr.progFlags |= spec.flags.rawValue
        switch spec.attach {
        case let .extends(program, function)?:
            attr.progType = ProgType.ext.rawValue
            attr.attachProgFD = try fd(program, .program)
            attr.attachFunc = function
        case let .traces(kind, program, function)?:
            attr.progType = ProgType.tracing.rawValue
            attr.expectedAttachType = kind.rawValue
            attr.attachProgFD = try program.map { try fd($0, .program) } ?? -1
            attr.attachFunc = function
        case nil:
            break
        }
        return attr
    }

    private func device(_ name: String?) -> NetDevice {
        name.flatMap { devices[$0] } ?? devices[file.devices[0].name]!
    }

    private func modeFlags(_ m: XDPModeSpec?) -> UInt32 { XDPModeSpec.flags(m) }

    private func nameOfProg(id: UInt32) -> String {
        for (n, h) in handles where h.kind == .program || h.kind == .any {
            if let p = try? bpf.prog(h.fd) {
                defer { p.put() }
                if p.id == id { return n }
            }
        }
        return "id \(id)"
    }

    /// An ID argument: a number, or the ID of a named open object.
    private func resolve(_ r: IDRef) throws -> UInt32 {
        switch r {
        case let .of(n): return try id(of: n)
        case let .number(n): return n
        }
    }

    private func id(of name: String) throws -> UInt32 {
        let f = try fd(name, .any)
        switch try bpf.fds.getObject(f) {
        case let .prog(p): defer { p.put() }; return p.id
        case let .map(m): defer { m.putWithUref() }; return m.id
        case let .link(l): defer { l.put() }; return l.id
        case .stats: throw NotOpen(message: "'\(name)' is a stats fd; it has no ID")
        }
    }

    /// A new object under `name`: open, and in the ledger with its ID.
    private func open(_ name: String, _ fd: Int32, _ kind: ObjectKind) throws {
        handles[name] = (fd, kind)
        ledger.created(name, kind: kind == .program ? "prog" : kind.rawValue, id: try id(of: name))
    }

    /// The run's objects, devices and links as the ID tables, the devices' XDP state and the
    /// links' info show them.
    private func observedState() -> ObservedState {
        var s = ObservedState(ledger: ledger) { e in
            switch e.kind {
            case "prog": return kernel.progIDR.lookup(e.id) { $0 != nil }
            case "map": return kernel.mapIDR.lookup(e.id) { $0 != nil }
            default: return kernel.linkIDR.lookup(e.id) { $0 != nil }
            }
        }
        for (name, dev) in devices {
            var modes: [String: String] = [:]
            for mode in XDPMode.allCases {
                if let p = dev.program(mode: mode) { modes[mode.name] = ledger.label(kind: "prog", id: p.id) }
            }
            if !modes.isEmpty { s.xdp[name] = modes }
        }
        for e in ledger.entries where e.kind == "map" && s.objects.contains(where: { $0.label == e.label && $0.alive }) {
            guard let h = handles.values.first(where: { ((try? bpf.mapGetInfo($0.fd))?.id) == e.id }),
                  let info = try? bpf.mapGetInfo(h.fd), info.type == .progArray else { continue }
            let filled = (0..<min(info.maxEntries, ObservedState.slotLimit)).compactMap { k -> (UInt32, String)? in
                guard let b = try? bpf.mapLookupElem(h.fd, key: u32Bytes(k)), b.count >= 4 else { return nil }
                return (k, ledger.label(kind: "prog", id: b.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }))
            }
            s.slots[e.label] = ObservedState.slotsText(filled)
        }
        for e in ledger.entries where e.kind == "link" {
            guard let info = kernel.linkIDR.lookup(e.id, { $0?.info() }), info.type == .xdp else { continue }
            let device = info.detached ? nil : devices.first { $0.value.ifindex == info.targetID }?.key ?? "ifindex \(info.targetID)"
            s.links[e.label] = ObservedState.linkText(prog: ledger.label(kind: "prog", id: info.progID), device: device)
        }
        return s
    }

    // MARK: the sequence

    func runStep(_ step: StepDecl, _ options: ScenarioRunOptions, _ out: inout ScenarioOutcome) {
        var observed: [String: String] = [:]
        var thrown: BPFError?
        var notOpen: String?
        let (description, args) = describe(step.operation)
        var what = description
        var verdicts: [UInt64] = []
        var invalid: UInt64 = 0
        var retval: UInt32?
        var dataOut = 0
        var value: UInt64?
        do {
            switch step.operation {
            case let .attach(p, d, m, flags, expected):
                try bpf.xdpAttach(device(d), fd: try fd(p, .program), flags: modeFlags(m) | flags.rawValue,
                                  expectedFD: try expected.map { try fd($0, .program) } ?? -1)
            case let .detach(d, m, flags, expected):
                try bpf.xdpAttach(device(d), fd: -1, flags: modeFlags(m) | flags.rawValue, expectedFD: try expected.map { try fd($0, .program) } ?? -1)
            case let .packets(count, d, via):
                (verdicts, invalid) = runPackets(count, device(d), viaDispatcher: via, options)
                observed["verdicts"] = zip(ScenarioVocabulary.verdictNames, verdicts).filter { $0.1 > 0 }.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
                observed["invalid"] = "\(invalid)"
                what += ": " + (observed["verdicts"]!.isEmpty ? "no packets" : observed["verdicts"]!) + (invalid > 0 ? " (invalid \(invalid))" : "")
            case let .testRun(p, size, reps):
                let data = frames.testRunFrame(size: size)
                let r = try bpf.progTestRun(TestRunAttr(progFD: try fd(p, .program), data: data, repeat: reps))
                retval = r.retval
                dataOut = r.dataOut.count
                observed["retval"] = "\(r.retval)"
                what += ": retval \(r.retval)"
            case let .load(name, spec):
                if let old = handles[name] { throw NotOpen(message: "'\(name)' is still open (fd \(old.fd)); close it first") }
                try open(name, try bpf.progLoad(try progAttr(name, spec)), .program)
            case let .close(name):
                let f = try fd(name, .any)
                handles[name] = nil
                if statsFD == f { statsFD = nil }
                try bpf.objClose(f)
            case let .chainAdd(prev, rc, next):
                try bpf.progChainAdd(prev: try fd(prev, .program), retcode: rc, next: try fd(next, .program))
            case let .chainDel(prev, rc):
                try bpf.progChainDel(prev: try fd(prev, .program), retcode: rc)
            case let .chainGet(prev, rc):
                let id = try bpf.progChainGet(prev: try fd(prev, .program), retcode: rc)
                observed["next"] = nameOfProg(id: id)
                what += ": \(observed["next"]!)"
            case let .mapCreate(name, spec):
                try open(name, try bpf.mapCreate(mapAttr(name, spec)), .map)
            case let .mapUpdate(m, key, v, flags):
                let mfd = try fd(m, .map)
                let info = try bpf.mapGetInfo(mfd)
                let raw: UInt64
                switch v {
                case let .program(p): raw = UInt64(UInt32(bitPattern: try fd(p, .program)))
                case let .map(other): raw = UInt64(UInt32(bitPattern: try fd(other, .map)))
                case let .fd(n): raw = UInt64(UInt32(bitPattern: n))
                case let .number(n): raw = n
                }
                let bytes = valueBytes(raw, valueSize: info.valueSize)
                try bpf.mapUpdateElem(mfd, key: u32Bytes(key), value: bytes, flags: flags.rawValue)
            case let .mapDelete(m, key):
                try bpf.mapDeleteElem(try fd(m, .map), key: u32Bytes(key))
            case let .mapLookup(m, key):
                let mfd = try fd(m, .map)
                let b = try bpf.mapLookupElem(mfd, key: u32Bytes(key))
                var v: UInt64 = 0
                for (i, x) in b.prefix(8).enumerated() { v |= UInt64(x) << (8 * UInt64(i)) }
                value = v
                let isProgArray = try bpf.mapGetInfo(mfd).type == .progArray
                observed["value"] = isProgArray ? nameOfProg(id: UInt32(truncatingIfNeeded: v)) : "\(v)"
                what += ": \(observed["value"]!)"
            case let .getFdByID(kind, idRef, name):
                let id = try resolve(idRef)
                let f: Int32
                switch kind {
                case .prog: f = try bpf.progGetFdById(id)
                case .map: f = try bpf.mapGetFdById(id)
                case .link: f = try bpf.linkGetFdById(id)
                }
                handles[name] = (f, kind == .prog ? .program : kind == .map ? .map : .link)
            case let .nextID(kind, after):
                let start = try resolve(after)
                let id: UInt32
                switch kind {
                case .prog: id = try bpf.progGetNextId(start)
                case .map: id = try bpf.mapGetNextId(start)
                case .link: id = try bpf.linkGetNextId(start)
                }
                value = UInt64(id)
                observed["value"] = kind == .prog ? nameOfProg(id: id) : "\(id)"
                what += ": \(observed["value"]!)"
            case let .mkdir(p): try bpf.bpffsMkdir(p)
            case let .rmdir(p): try bpf.bpffsRmdir(p)
            case let .pin(o, p): try bpf.objPin(try fd(o, .any), path: p)
            case let .unpin(p): try bpf.unpin(path: p)
            case let .objGet(p, name):
                let f = try bpf.objGet(path: p)
                let k = bpf.fds.kindName(f)
                handles[name] = (f, k == "program" ? .program : k == "map" ? .map : k == "link" ? .link : .stats)
            case let .link(name, p, d, m, target, function, cookie):
                let pfd = try fd(p, .program)
                let prog = try bpf.prog(pfd)
                defer { prog.put() }
                var attr = LinkCreateAttr(progFD: pfd, attachType: .unspecified, cookie: cookie)
                switch prog.type {
                case .xdp:
                    attr.device = device(d)
                    attr.attachType = .xdp
                    attr.flags = modeFlags(m)
                case .tracing:
                    attr.attachType = AttachType(rawValue: prog.expectedAttachType) ?? .unspecified
                default: break
                }
                if let target { attr.targetProgFD = try fd(target, .program) }
                attr.targetFunc = function
                try open(name, try bpf.linkCreate(attr), .link)
            case let .linkUpdate(l, p, expected):
                if let e = expected {
                    try bpf.linkUpdate(try fd(l, .link), newProgFD: try fd(p, .program), flags: linkUpdateReplace, expectedOldFD: try fd(e, .program))
                } else {
                    try bpf.linkUpdate(try fd(l, .link), newProgFD: try fd(p, .program))
                }
            case let .linkDetach(l):
                try bpf.linkDetach(try fd(l, .link))
            case let .libxdpAttach(specs):
                let xs = try specs.map { s -> XDPProgramSpec in
                    guard let def = file.programs.first(where: { $0.name == s.program })?.spec ?? loadedDefinition(s.program) else {
                        throw NotOpen(message: "no declaration for '\(s.program)'")
                    }
                    return XDPProgramSpec(name: s.program, attr: try progAttr(s.program, def), runPrio: s.runPrio, chainCallActions: s.actions)
                }
                try libxdp.attach(xs, to: device(nil))
            case let .libxdpDetach(names):
                try libxdp.detach(names, from: device(nil))
            case let .stats(on, asName):
                if let asName {
                    handles[asName] = (try bpf.enableStats(), .stats)
                } else if on {
                    if statsFD == nil { statsFD = try bpf.enableStats() }
                } else if let f = statsFD {
                    try bpf.objClose(f)
                    statsFD = nil
                }
            case let .setVar(p, i, v):
                try bpf.progSetVar(try fd(p, .program), index: i, value: v)
            case .rcuBarrier:
                kernel.quiesce()
            }
        } catch let e as BPFError {
            thrown = e
        } catch let e as NotOpen {
            notOpen = e.message
        } catch {
            notOpen = "\(error)"
        }
        let result = thrown.map { $0.errno.name } ?? (notOpen == nil ? "ok" : "not run")
        what += " → " + result
        out.lines.append("step \(step.index): \(what)")
        var failures: [String] = []
        if let notOpen { failures.append(notOpen) }
        check(step.expect, thrown: thrown, verdicts: verdicts, invalid: invalid, retval: retval, dataOut: dataOut,
              value: value, observed: &observed, &failures)
        if options.auditEveryStep || step.expect?.audit == true {
            kernel.quiesce()
            let findings = kernel.audit()
            observed["audit"] = findings.isEmpty ? "clean" : "\(findings.count) finding(s)"
            for f in findings { failures.append("audit: \(f)") }
        }
        options.afterStep?(step.index, kernel)
        if options.observeState {
            kernel.quiesce()
            out.states[step.index] = observedState()
        }
        for f in failures { out.failures.append("step \(step.index) (line \(step.position.line)): \(f)") }
        out.records.append(StepRecord(step: step.index, line: step.position.line, operation: step.operation.name, arguments: args,
                                      result: result, errno: thrown?.errno.name, message: thrown?.message ?? notOpen,
                                      observed: observed, passed: failures.isEmpty, failures: failures))
    }

    /// One packet (flow 0) or one test run walked by the tracer, then run for real on the
    /// same frame so the two verdicts can be compared.
    private func traceAt(_ step: StepDecl, _ out: inout ScenarioOutcome) {
        var frame = frames.frame(flow: 0)
        switch step.operation {
        case let .packets(_, d, via):
            let dev = device(d)
            let tracer = PacketTracer(kernel: kernel, frame: frame, ifindex: dev.ifindex)
            let disp = UnsafePointer(kernel.xdpDispatcher.raw)
            out.tracedVerdict = tracer.traceDevice(dev, runner: via ? .dispatched(disp) : .patched)
            out.trace = tracer.lines
            out.realVerdict = withXDPContext(&frame, ifindex: dev.ifindex) { md -> UInt32 in
                guard let p = dev.currentProg else { return UInt32(CBPF_XDP_PASS) }
                if via { return bpfProgRunDispatched(disp, p, md) }
                return dev.receiveGeneric(md) ?? bpfProgRun(p, md)
            }
        case let .testRun(p, size, _):
            if let size { frame = size <= frame.count ? Array(frame.prefix(size)) : frame + [UInt8](repeating: 0, count: size - frame.count) }
            guard let h = handles[p], let prog = try? bpf.prog(h.fd) else {
                out.failures.append("step \(step.index): '\(p)' is not open")
                return
            }
            defer { prog.put() }
            let tracer = PacketTracer(kernel: kernel, frame: frame)
            out.tracedVerdict = prog.type == .tracing ? tracer.traceTracingTestRun(prog, kernel: kernel) : tracer.traceProgram(UnsafePointer(prog.raw))
            out.trace = tracer.lines
            out.realVerdict = try? bpf.progTestRun(TestRunAttr(progFD: h.fd, data: frame)).retval
        default:
            out.failures.append("step \(step.index) is \(step.operation.name); trace a packets or test_run step")
        }
    }

    private func loadedDefinition(_ name: String) -> ProgramSpec? {
        for s in file.steps { if case let .load(n, spec) = s.operation, n == name { return spec } }
        return nil
    }

    // MARK: expectations

    private func check(_ e: Expectation?, thrown: BPFError?, verdicts: [UInt64], invalid: UInt64, retval: UInt32?, dataOut: Int,
                       value: UInt64?, observed: inout [String: String], _ failures: inout [String]) {
        func fail(_ s: String) { failures.append(s) }
        guard let e else {
            if let thrown { fail("unexpected \(thrown)") }
            return
        }
        if let want = e.errno {
            if thrown?.errno != want { fail("expected \(want.name), got \(thrown.map { "\($0)" } ?? "success")") }
        } else if let thrown {
            fail("unexpected \(thrown)")
        }
        for (i, want) in e.verdicts.sorted(by: { $0.key < $1.key }) {
            let got = i < verdicts.count ? verdicts[i] : 0
            if got != want { fail("expected \(ScenarioVocabulary.verdictNames[i])=\(want), got \(got)") }
        }
        if let want = e.invalid, want != invalid { fail("expected \(want) invalid actions, got \(invalid)") }
        if let want = e.retval, want != retval { fail("expected retval \(want), got \(retval.map { "\($0)" } ?? "none")") }
        if let want = e.dataOutSize, want != dataOut { fail("expected \(want) bytes out, got \(dataOut)") }
        for (name, want) in e.counters.sorted(by: { $0.key < $1.key }) {
            let got = kernel.counter(name)
            observed["counter \(name)"] = "\(got)"
            if got != want { fail("expected counter \(name)=\(want), got \(got)") }
        }
        func info(_ name: String) -> ProgInfo? {
            guard let h = handles[name] else { fail("'\(name)' is not open"); return nil }
            do { return try bpf.progGetInfo(h.fd) } catch { fail("\(name): \(error)"); return nil }
        }
        for (name, want) in e.runCount.sorted(by: { $0.key < $1.key }) {
            if let i = info(name), i.runCount != want { fail("expected \(name) to have run \(want) times, got \(i.runCount)") }
        }
        for (name, nonzero) in e.runTimeNonzero.sorted(by: { $0.key < $1.key }) {
            if let i = info(name), (i.runTimeNs > 0) != nonzero { fail("expected run_time_ns of \(name) \(nonzero ? "nonzero" : "0"), got \(i.runTimeNs)") }
        }
        for (name, want) in e.misses.sorted(by: { $0.key < $1.key }) {
            if let i = info(name), i.recursionMisses != want { fail("expected \(want) recursion misses for \(name), got \(i.recursionMisses)") }
        }
        for (name, want) in e.refcnt.sorted(by: { $0.key < $1.key }) {
            guard let h = handles[name] else { fail("'\(name)' is not open"); continue }
            var got: UInt64?
            switch try? bpf.fds.getObject(h.fd) {
            case let .prog(p)?: got = p.refcnt - 1; p.put()          // less getObject's own
            case let .map(m)?: got = m.refcnt - 1; m.putWithUref()
            case let .link(l)?: got = l.refcountValue - 1; l.put()
            default: break
            }
            observed["refcnt \(name)"] = got.map { "\($0)" } ?? "-"
            if got != want { fail("expected \(name) refcnt \(want), got \(got.map { "\($0)" } ?? "nothing")") }
        }
        for (name, want) in e.usercnt.sorted(by: { $0.key < $1.key }) {
            guard let h = handles[name], let i = try? bpf.mapGetInfo(h.fd) else { fail("'\(name)' is not an open map"); continue }
            if i.usercnt != want { fail("expected \(name) usercnt \(want), got \(i.usercnt)") }
        }
        if let want = e.pendingFree {
            let got = kernel.pendingFreeObjects
            observed["pending_free"] = "\(got)"
            if got != want { fail("expected \(want) objects waiting for a grace period, got \(got)") }
        }
        if let want = e.liveObjects {
            kernel.quiesce()
            observed["live_objects"] = "\(kernel.liveObjects)"
            if kernel.liveObjects != want { fail("expected \(want) live objects, got \(kernel.liveObjects)") }
        }
        if let want = e.next {
            let got = observed["next"]
            if got != (want ?? nil) && !(want == nil && thrown?.errno == .ENOENT) {
                fail("expected next \(want ?? "none"), got \(got ?? "none")")
            }
        }
        switch e.value {
        case let .program(n)?:
            if observed["value"] != n { fail("expected value \(n), got \(observed["value"] ?? "none")") }
        case let .number(n)?:
            if value != n { fail("expected value \(n), got \(value.map { "\($0)" } ?? "none")") }
        case nil: break
        }
        if !e.ids.isEmpty {
            var ids: [UInt32] = []
            for n in e.ids {
                do { ids.append(try id(of: n)) } catch { fail("ids: \(n): \(error)") }
            }
            observed["ids"] = ids.map(String.init).joined(separator: ",")
            if ids.contains(0) { fail("an ID is 0: \(ids)") }
            if Set(ids).count != ids.count { fail("IDs are not distinct: \(ids)") }
            if ids != ids.sorted() { fail("IDs are not ascending in the order given: \(zip(e.ids, ids).map { "\($0)=\($1)" }.joined(separator: ", "))") }
        }
        for (name, vs) in e.vars.sorted(by: { $0.key < $1.key }) {
            guard let h = handles[name], let p = try? bpf.prog(h.fd) else { fail("'\(name)' is not open"); continue }
            defer { p.put() }
            for (i, want) in vs.sorted(by: { $0.key < $1.key }) {
                let got = try? p.getVar(i)
                if got != want { fail("expected \(name) var \(i) = \(want), got \(got.map { "\($0)" } ?? "none")") }
            }
        }
        for (l, p) in e.linkProgram.sorted(by: { $0.key < $1.key }) {
            guard let h = handles[l], let info = try? bpf.linkGetInfo(h.fd) else { fail("'\(l)' is not an open link"); continue }
            let got = info.progID == 0 ? "none" : nameOfProg(id: info.progID)
            if got != p { fail("expected link \(l) to hold \(p), got \(got)") }
        }
        if let want = e.dispatcher {
            let got = kernel.xdpDispatcher.knownTargets.map { nameOfProg(id: $0.id) }.sorted()
            observed["dispatcher"] = got.joined(separator: ",")
            if got != want.sorted() { fail("expected bpf_dispatcher targets \(want.sorted()), got \(got)") }
        }
        for (k, want) in e.staticKeys.sorted(by: { $0.key < $1.key }) {
            guard let h = handles[k], let m = try? bpf.map(h.fd) else { fail("'\(k)' is not an open map"); continue }
            defer { m.put() }
            guard let key = (m as? StaticKeyMap)?.key else { fail("'\(k)' is not a static_key map"); continue }
            if let en = want.enabled, key.isEnabled != en { fail("expected static key \(k) \(en ? "enabled" : "disabled"), got \(key.isEnabled ? "enabled" : "disabled")") }
            if let s = want.sites, key.siteCount != s { fail("expected static key \(k) with \(s) sites, got \(key.siteCount)") }
        }
        for (d, want) in e.attached.sorted(by: { $0.key < $1.key }) {
            let got = devices[d]?.program.map { nameOfProg(id: $0.id) } ?? "none"
            if got != (want ?? "none") { fail("expected \(d) to run \(want ?? "none"), got \(got)") }
        }
        if let want = e.pins, bpf.pinnedPaths != want.sorted() { fail("expected pins \(want.sorted()), got \(bpf.pinnedPaths)") }
    }

    /// A burst through the driver: an RX ring of frames, NAPI polls of at most 64, in
    /// chunks of 2^20 packets between which progress is shown and a stop is honoured.
    private func runPackets(_ count: Int, _ dev: NetDevice, viaDispatcher: Bool, _ options: ScenarioRunOptions) -> ([UInt64], UInt64) {
        guard let ring = try? RxRing(frames: frames, numa: .off, cpu: 0) else { return ([0, 0, 0, 0, 0], 0) }
        let counts = UnsafeMutablePointer<UInt64>.allocate(capacity: verdictSlots)
        counts.initialize(repeating: 0, count: verdictSlots)
        defer { counts.deallocate() }
        var md = cbpf_xdp_md()
        md.ingress_ifindex = dev.ifindex
        var head = 0, left = count
        let chunk = 1 << 20
        let dispatcher = UnsafePointer(kernel.xdpDispatcher.raw)
        let generic = dev.program(mode: .skb) != nil  // through do_xdp_generic
        withUnsafeMutablePointer(to: &md) { ctx in
            while left > 0 {
                var inChunk = min(left, chunk)
                left -= inChunk
                while inChunk > 0 {
                    let b = min(64, inChunk)
                    if viaDispatcher {
                        napiPoll(DispatchedProgRun(dispatcher: dispatcher), ring: ring.buffers, lengths: ring.lengths, mask: ring.mask, head: &head,
                                 budget: b, dev: dev, ctx: ctx, counts: counts)
                    } else if generic {
                        napiPoll(GenericXDPRun(dev: dev), ring: ring.buffers, lengths: ring.lengths, mask: ring.mask, head: &head,
                                 budget: b, dev: dev, ctx: ctx, counts: counts)
                    } else {
                        napiPoll(PatchedProgRun(), ring: ring.buffers, lengths: ring.lengths, mask: ring.mask, head: &head,
                                 budget: b, dev: dev, ctx: ctx, counts: counts)
                    }
                    inChunk -= b
                }
                if left > 0 {
                    options.progress?("packets: \(count - left) of \(count)")
                    if options.shouldStop() { break }
                }
            }
        }
        return (Array(UnsafeBufferPointer(start: counts, count: 5)), counts[5])
    }

    /// "chain_add pass[XDP_PASS] → drop", and the arguments alone (for JSON).
    private func describe(_ op: Operation) -> (String, String) {
        func rc(_ r: UInt32) -> String { r == chainWildcard ? "wildcard" : r < 5 ? "XDP_" + ScenarioVocabulary.verdictNames[Int(r)] : "\(r)" }
        let a: String
        switch op {
        case let .attach(p, d, m, f, e): a = p + (d.map { " on \($0)" } ?? "") + (m.map { " mode \($0.rawValue)" } ?? "") + (f.isEmpty ? "" : " flags 0x\(String(f.rawValue, radix: 16))") + (e.map { " expected \($0)" } ?? "")
        case let .detach(d, m, _, e): a = (d ?? "") + (m.map { " mode \($0.rawValue)" } ?? "") + (e.map { " expected \($0)" } ?? "")
        case let .packets(n, d, via): a = "\(n)" + (d.map { " on \($0)" } ?? "") + (via ? " via bpf_dispatcher" : "")
        case let .testRun(p, size, reps): a = p + (size.map { " size \($0)" } ?? "") + (reps > 1 ? " repeat \(reps)" : "")
        case let .load(n, _): a = n
        case let .close(n): a = n
        case let .chainAdd(p, r, n): a = "\(p)[\(rc(r))] → \(n)"
        case let .chainDel(p, r), let .chainGet(p, r): a = "\(p)[\(rc(r))]"
        case let .mapCreate(n, s): a = "\(n) \(s.type.name) × \(s.maxEntries)"
        case let .mapUpdate(m, k, v, f):
            let vs: String
            switch v {
            case let .program(p): vs = p
            case let .map(x): vs = "map \(x)"
            case let .fd(n): vs = "fd \(n)"
            case let .number(n): vs = "\(n)"
            }
            a = "\(m)[\(k)] = \(vs)" + (f == .any ? "" : " flags \(f.rawValue)")
        case let .mapDelete(m, k), let .mapLookup(m, k): a = "\(m)[\(k)]"
        case let .getFdByID(k, id, n): a = "\(k.rawValue) \(id.text) as \(n)"
        case let .nextID(k, id): a = "\(k.rawValue) after \(id.text)"
        case let .mkdir(p), let .rmdir(p), let .unpin(p): a = p
        case let .pin(o, p): a = "\(o) at \(p)"
        case let .objGet(p, n): a = "\(p) as \(n)"
        case let .link(n, p, d, _, t, f, c): a = "\(n): \(p)" + (d.map { " on \($0)" } ?? "") + (t.map { " → \($0)" } ?? "") + (f.map { ".\($0)" } ?? "") + (c != 0 ? " cookie \(c)" : "")
        case let .linkUpdate(l, p, e): a = "\(l) → \(p)" + (e.map { " expected \($0)" } ?? "")
        case let .linkDetach(l): a = l
        case let .libxdpAttach(s): a = s.map(\.program).joined(separator: ",")
        case let .libxdpDetach(n): a = n.joined(separator: ",")
        case let .stats(on, n): a = n.map { "as \($0)" } ?? (on ? "on" : "off")
        case let .setVar(p, i, v): a = "\(p) var \(i) = \(v)"
        case .rcuBarrier: a = ""
        }
        return (op.name + (a.isEmpty ? "" : " " + a), a)
    }
}

extension IDRef {
    var text: String {
        switch self {
        case let .of(n): return n
        case let .number(n): return "\(n)"
        }
    }
}

extension Operation {
    /// The operation's word in the file.
    public var name: String {
        switch self {
        case .attach: return "attach"
        case .detach: return "detach"
        case .packets: return "packets"
        case .testRun: return "test_run"
        case .load: return "load"
        case .close: return "close"
        case .chainAdd: return "chain_add"
        case .chainDel: return "chain_del"
        case .chainGet: return "chain_get"
        case .mapCreate: return "map_create"
        case .mapUpdate: return "map_update"
        case .mapDelete: return "map_delete"
        case .mapLookup: return "map_lookup"
        case .getFdByID: return "get_fd_by_id"
        case .nextID: return "next_id"
        case .mkdir: return "mkdir"
        case .rmdir: return "rmdir"
        case .pin: return "pin"
        case .unpin: return "unpin"
        case .objGet: return "obj_get"
        case .link: return "link"
        case .linkUpdate: return "link_update"
        case .linkDetach: return "link_detach"
        case .libxdpAttach: return "libxdp_attach"
        case .libxdpDetach: return "libxdp_detach"
        case .stats: return "stats"
        case .setVar: return "set_var"
        case .rcuBarrier: return "rcu_barrier"
        }
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
