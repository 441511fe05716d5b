// ScenarioKernelRun.swift — a scenario's steps on the live kernel of this machine, so the
// same file runs on the lab and on the kernel and the two are compared step by step
// (`bpflab run FILE --on both`).
//
// Mirrors: what a user would do by hand with bpf(2), iproute2 and bpffs. Programs become
// instructions (builtins and returns as `r0 = K; exit`, step programs through the step
// compiler, asm/raw/object as they are); devices are the veths of a private network
// namespace; pins live in a private bpffs mount (/tmp/bpflab-<pid>-bpffs); everything
// is closed and removed when the run ends.
//
// What the kernel does not have is "lab only" (the RFC's chain calls never merged; the lab's
// static keys, kfuncs and indirect calls; the interpreter engine — this kernel's JIT is
// always on); what it cannot show is "not observable" (packets through a device without
// traffic; next-ID walks over a kernel other processes share); a step that needs an object
// the kernel refused to create is refused too.
import Foundation
import BPFKernel
import BPFInstructions
import LiveKernel

/// How a step went on the kernel.
public enum KernelStepResult: Sendable, Equatable {
    /// It ran: the errno name it failed with (nil: success) and what it observed.
    case ran(errno: String?, observed: [String: String])
    case labOnly(String)
    case refusedByKernel(String)
    case notObservable(String)
}

public final class KernelScenarioRunner {
    public let file: ScenarioFile
    private let live = LiveBPF()
    private var netns: LiveNetns?
    private var handles: [String: (fd: Int32, kind: ObjectKind)] = [:]
    /// Names whose creation this kernel refused (EPERM): later steps on them are refused too.
    private var refused: Set<String> = []
    private var labOnly: Set<String> = []
    /// Names this backend has no object for although the lab has (get_fd_by_id of a literal
    /// ID; a map or program past the RLIMIT_MEMLOCK budget), with why.
    private var unobserved: [String: String] = [:]
    private var bpffs: LiveBPFFS?
    private var ledger = ObjectLedger()
    /// The lab's state after each step, which this kernel's is given time to reach.
    private let expected: [Int: ObservedState]
    /// The kernel's state after each step (with `expected`: once it matched, or the wait ran out).
    public private(set) var states: [Int: ObservedState] = [:]
    /// Every name that was lab only or refused here at some point: left out of state comparisons.
    public private(set) var excluded: Set<String> = []

    /// `expected`: the lab's state per step (ScenarioRunOptions.observeState); the kernel's
    /// is then recorded after every step too.
    public init(file: ScenarioFile, expected: [Int: ObservedState] = [:]) {
        self.file = file
        self.expected = expected
    }

    deinit { close() }

    /// Everything made is closed and removed.
    public func close() {
        live.closeAll()
        netns?.close()
        netns = nil
        bpffs?.close()
        bpffs = nil
        try? FileManager.default.removeItem(atPath: plainDir)
    }

    /// Steps run after some object of the scenario turned out lab only or refused here:
    /// their results may differ for that reason alone, and are not compared.
    public private(set) var stepsWithoutPremise: Set<Int> = []

    /// Runs every step; results in step order (index 0: the declarations).
    public func run() -> [(step: Int, result: KernelStepResult)] {
        let out = runSteps()
        close()
        leftAfterClose = leftovers()
        return out
    }

    /// The run's objects this kernel still publishes once every fd is closed, the pins and
    /// the namespace are gone and a second has passed — none, unless the kernel leaked one.
    public private(set) var leftAfterClose: [String] = []

    private func leftovers() -> [String] {
        var left: [String] = []
        for _ in 0..<20 {
            left = snapshot(devices: false).objects.filter(\.alive).map(\.label)
            if left.isEmpty { break }
            usleep(50_000)
        }
        return left
    }

    private func runSteps() -> [(step: Int, result: KernelStepResult)] {
        var out: [(Int, KernelStepResult)] = []
        for (name, spec) in file.maps {
            do { open(name, try mapCreate(name, spec), .map) } catch let e as LabOnly {
                labOnly.insert(name)
                out.append((0, .labOnly(e.why)))
            } catch let e as LiveBudgetError {
                unobserved[name] = "not created within RLIMIT_MEMLOCK"
                out.append((0, .notObservable(e.message)))
            } catch {
                out.append((0, .ran(errno: errnoName(error), observed: ["declaring": name])))
            }
        }
        for (name, spec) in file.programs {
            switch load(name, spec) {
            case .ran(nil, _): break
            case let r: out.append((0, r))
            }
        }
        for s in file.slots {
            guard let m = handles[s.map], let p = handles[s.program] else { continue }
            try? live.mapUpdate(m.fd, key: u32Bytes(s.index), value: u32Bytes(UInt32(bitPattern: p.fd)))
        }
        excluded = refused.union(labOnly)
        observe(0)
        var premiseMissing = false
        for step in file.steps {
            if !refused.isEmpty || !labOnly.isEmpty || !unobserved.isEmpty { premiseMissing = true }
            if premiseMissing { stepsWithoutPremise.insert(step.index) }
            out.append((step.index, runStep(step)))
            settleAfterPinRemoval(step)
            excluded.formUnion(refused)
            excluded.formUnion(labOnly)
            excluded.formUnion(unobserved.keys)
            observe(step.index)
        }
        return out
    }

    /// A bpffs inode is freed after an RCU grace period, and only then puts what its pin held:
    /// a prog array's last user reference may go (and its slots be cleared) well after the
    /// unlink returned. The lab's pins put at once, so after an unpin or rmdir this waits one
    /// grace period of the kernel (~15 ms) and lets its work items run.
    private func settleAfterPinRemoval(_ step: StepDecl) {
        switch step.operation {
        case .unpin, .rmdir: break
        default: return
        }
        let t0 = DispatchTime.now().uptimeNanoseconds
        live.synchronizeRCU()
        usleep(1_000)
        waitedForState += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    /// A new object under `name`: open, and in the ledger with the ID this kernel gave it.
    private func open(_ name: String, _ fd: Int32, _ kind: ObjectKind) {
        handles[name] = (fd, kind)
        ledger.created(name, kind: kind == .program ? "prog" : kind.rawValue, id: live.objectID(fd) ?? 0)
    }

    /// The state after step `index`. The kernel frees in the background (RCU callbacks put a
    /// closed program's maps; a prog array's entries are cleared by a work item once its last
    /// user reference goes), so when the lab's state after the same step is known and this
    /// one differs, it is read again with growing pauses, for up to half a second, before the
    /// difference stands.
    private func observe(_ index: Int) {
        guard let want = expected[index] else { return }
        let target = want.rendered(excluding: excluded)
        var got = snapshot()
        // A step after a gap (lab only, refused, not observable) is not compared: no wait.
        var waitedUs: UInt32 = 0, pause: UInt32 = 500
        while !stepsWithoutPremise.contains(index) && got.rendered(excluding: excluded) != target && waitedUs < 500_000 {
            usleep(pause)
            waitedUs += pause
            pause = min(pause * 2, 50_000)
            got = snapshot()
        }
        waitedForState += Double(waitedUs) / 1e6
        states[index] = got
    }

    /// Seconds spent waiting for the kernel's background frees to reach the lab's state.
    public private(set) var waitedForState = 0.0

    private func snapshot(devices: Bool = true) -> ObservedState {
        var published: [String: Set<UInt32>] = [:]
        for kind in ["prog", "map", "link"] {
            let ids = ledger.entries.filter { $0.kind == kind && $0.id != 0 }.map(\.id)
            if let lo = ids.min(), let hi = ids.max() { published[kind] = live.publishedIDs(kind, in: lo...hi) }
        }
        var s = ObservedState(ledger: ledger) { e in published[e.kind]?.contains(e.id) ?? false }
        for e in ledger.entries where e.kind == "map" && published["map"]?.contains(e.id) == true {
            guard let h = handles.values.first(where: { live.objectID($0.fd) == e.id }),
                  let info = try? live.mapInfo(h.fd), info.type == MapType.progArray.rawValue else { continue }
            let filled = (0..<min(info.maxEntries, ObservedState.slotLimit)).compactMap { k -> (UInt32, String)? in
                guard let b = try? live.mapLookup(h.fd, key: u32Bytes(k), valueSize: 4), b.count >= 4 else { return nil }
                return (k, ledger.label(kind: "prog", id: b.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }))
            }
            s.slots[e.label] = ObservedState.slotsText(filled)
        }
        guard devices, let netns else { return s }
        let names = file.devices.map(\.name)
        var byIndex: [UInt32: String] = [:]
        for (i, name) in names.prefix(2).enumerated() {
            let veth = "veth\(i)"
            if let idx = try? netns.ifindex(veth) { byIndex[UInt32(idx)] = name }
            guard let q = try? netns.xdpQuery(device: veth) else { continue }
            var modes: [String: String] = [:]
            for (mode, id) in [("skb", q.skb), ("drv", q.drv), ("hw", q.hw)] where id != 0 {
                modes[mode] = ledger.label(kind: "prog", id: id)
            }
            if !modes.isEmpty { s.xdp[name] = modes }
        }
        // A link's info needs an fd: a short-lived one by ID (a link has no user count whose
        // release would change it, unlike a prog array; and it is alive, so this is not its
        // last reference).
        for e in ledger.entries where e.kind == "link" && s.objects.contains(where: { $0.label == e.label && $0.alive }) {
            guard let f = try? live.getFdByID("link", e.id) else { continue }
            defer { try? live.close(f) }
            guard let info = try? live.linkInfo(f) else { continue }
            let device = info.ifindex == 0 ? nil : byIndex[info.ifindex] ?? "ifindex \(info.ifindex)"
            s.links[e.label] = ObservedState.linkText(prog: ledger.label(kind: "prog", id: info.progID), device: device)
        }
        return s
    }

    private func errnoName(_ e: Error) -> String {
        if let l = e as? LiveError { return l.known?.name ?? "errno \(l.errno)" }
        if let b = e as? BPFError { return b.errno.name }
        return "EINVAL"
    }

    private func mapCreate(_ name: String, _ s: MapSpec) throws -> Int32 {
        guard s.type != .staticKey else { throw LabOnly(why: "the static-key map is the lab's (seed 000's proposal)") }
        return try live.mapCreate(type: s.type.rawValue, keySize: s.keySize, valueSize: s.valueSize, maxEntries: s.maxEntries,
                                  name: String(name.prefix(15)).replacingOccurrences(of: "-", with: "_"))
    }

    private struct LabOnly: Error { let why: String }
    private struct NotOpenHere: Error { let name: String }

    private func fd(_ name: String) throws -> Int32 {
        if refused.contains(name) { throw RefusedDependency(name: name) }
        if let why = unobserved[name] { throw UnobservedDependency(name: name, why: why) }
        if labOnly.contains(name) { throw LabOnly(why: "'\(name)' exists only in the lab") }
        guard let h = handles[name] else { throw NotOpenHere(name: name) }
        return h.fd
    }
    private struct RefusedDependency: Error { let name: String }
    private struct UnobservedDependency: Error { let name: String, why: String }

    /// The program's instructions and type for the kernel, or why it has none.
    private func program(_ name: String, _ spec: ProgramSpec) throws -> (insns: [BPFInsn], type: UInt32) {
        if spec.engine == .interp { throw LabOnly(why: "the interpreter engine: this kernel's JIT is always on") }
        if spec.flags.contains(.chainCalls) { throw LabOnly(why: "BPF_F_CHAIN_CALLS (the RFC's chain calls never merged)") }
        // Tracing programs and extensions keep their body; their type follows the attach spec.
        let progType: UInt32
        switch spec.attach {
        case .extends?: progType = ProgType.ext.rawValue
        case .traces?: progType = ProgType.tracing.rawValue
        case nil: progType = ProgType.xdp.rawValue
        }
        switch spec.body {
        case let .builtin(b):
            return ([.mov64(0, imm: Int32(ScenarioVocabulary.verdict(ofBuiltin: b))), .exit], progType)
        case let .returns(r):
            return ([.alu32(.mov, dst: 0, imm: Int32(bitPattern: r)), .exit], progType)
        case let .steps(main, subs, _):
            func step(_ s: StepSpec) throws -> Step {
                switch s {
                case .staticBranch, .staticKeySet: throw LabOnly(why: "static branches (seed 000's proposal) are the lab's")
                default: return try s.resolved { try fd($0) }
                }
            }
            let sp = StepProgram(try main.map(step), subprogs: try subs.map { try $0.map(step) }, directTailCalls: spec.engine.directTailCalls)
            var varsFD: Int32?
            if sp.usesVariables {
                varsFD = try live.mapCreate(type: 2, keySize: 4, valueSize: UInt32(sp.vars * 8), maxEntries: 1, name: ".data")
            }
            guard let (insns, _) = try sp.instructionsForKernel(varsFD: varsFD) else {
                throw LabOnly(why: "its steps use the lab's kfuncs, static keys or indirect calls")
            }
            return (insns, progType)
        case let .bytecode(source, keys):
            if !keys.isEmpty { throw LabOnly(why: "configurable jumps (JA_CFG) are the lab's") }
            switch source {
            case let .asm(text): return (try Assembler.assemble(text) { try self.fd($0) }, progType)
            case let .raw(i): return (i, progType)
            case let .object(obj, prog):
                var fds: [String: Int32] = [:]
                for m in obj.maps {
                    if let h = handles[m.name], h.kind == .map { fds[m.name] = h.fd; continue }
                    let f = try live.mapCreate(type: m.type, keySize: m.keySize, valueSize: m.valueSize, maxEntries: m.maxEntries,
                                               name: String(m.name.prefix(15)))
                    if let v = m.initialValue { try live.mapUpdate(f, key: [0, 0, 0, 0], value: v) }
                    open(m.name, f, .map)
                    fds[m.name] = f
                }
                let p = obj.program(named: prog)!
                var type = progType
                if case .schedCls = p.kind { type = ProgType.schedCls.rawValue }
                if case .socketFilter = p.kind { type = ProgType.socketFilter.rawValue }
                if case .ext = p.kind { type = ProgType.ext.rawValue }
                if case .tracing = p.kind { type = ProgType.tracing.rawValue }
                return (try p.instructions(mapFDs: fds), type)
            }
        }
    }

    private func load(_ name: String, _ spec: ProgramSpec) -> KernelStepResult {
        do {
            let (insns, type) = try program(name, spec)
            var eat: UInt32 = 0, target: Int32 = -1
            if case let .traces(kind, p, _)? = spec.attach { eat = kind.rawValue; target = try p.map { try fd($0) } ?? -1 }
            if case let .extends(p, _)? = spec.attach { target = try fd(p) }
            let f = try live.progLoad(type: type, insns: insns, name: String(name.prefix(15)).replacingOccurrences(of: "-", with: "_"),
                                      expectedAttachType: eat, attachProgFD: target, attachBTFID: spec.attach == nil ? 0 : 1,
                                      flags: spec.flags.rawValue & ProgLoadFlags.xdpHasFrags.rawValue)
            open(name, f, .program)
            return .ran(errno: nil, observed: [:])
        } catch let e as LabOnly {
            labOnly.insert(name)
            return .labOnly(e.why)
        } catch let e as LiveError where e.errno == 1 && spec.attach != nil {
            refused.insert(name)
            return .refusedByKernel("\(spec.attach.map { if case .extends = $0 { return "extension" } else { return "tracing" } }!) programs: EPERM here")
        } catch let e as RefusedDependency {
            refused.insert(name)
            return .refusedByKernel("it needs '\(e.name)', which this kernel refused")
        } catch let e as UnobservedDependency {
            unobserved[name] = e.why
            return .notObservable("it needs '\(e.name)', \(e.why)")
        } catch let e as LiveBudgetError {
            unobserved[name] = "not created within RLIMIT_MEMLOCK"
            return .notObservable(e.message)
        } catch {
            return .ran(errno: errnoName(error), observed: [:])
        }
    }

    /// The veth of the private namespace that stands for the scenario's device.
    private func device(_ device: String?) throws -> String {
        if netns == nil {
            do { netns = try LiveNetns(tag: "scenario") } catch { throw NoNetns(why: "\(error)") }
        }
        let names = file.devices.map(\.name)
        let i = device.flatMap { names.firstIndex(of: $0) } ?? 0
        guard i < 2 else { throw LabOnly(why: "more than two devices (the backend makes one veth pair)") }
        return "veth\(i)"
    }

    private func modeFlags(_ m: XDPModeSpec?) -> UInt32 { XDPModeSpec.flags(m) }

    /// A scenario's /sys/fs/bpf path, in the run's private bpffs mount; any other path in a
    /// private plain directory of the run (so a pin there meets a filesystem that is not
    /// bpffs, and nothing of the machine's own is ever touched).
    private func path(_ p: String) throws -> String {
        if p.hasPrefix("/sys/fs/bpf") {
            if bpffs == nil {
                do { bpffs = try LiveBPFFS() } catch { throw NoBPFFS(why: "\(error)") }
            }
            return bpffs!.path + p.dropFirst("/sys/fs/bpf".count)
        }
        try FileManager.default.createDirectory(atPath: plainDir, withIntermediateDirectories: true)
        return plainDir + "/" + p.replacingOccurrences(of: "/", with: "_")
    }
    private var plainDir: String { "/tmp/\(LiveNetns.prefix)\(getpid())-plain" }
    private struct NoBPFFS: Error { let why: String }
    private struct NoNetns: Error { let why: String }

    private func runStep(_ step: StepDecl) -> KernelStepResult {
        var observed: [String: String] = [:]
        do {
            switch step.operation {
            case let .attach(p, d, m, flags, expected):
                let dev = try device(d)
                let pf = try fd(p), ef = try expected.map { try fd($0) } ?? -1
                try netns!.xdpAttach(live, device: dev, fd: pf, flags: modeFlags(m) | flags.rawValue, expectedFD: ef)
            case let .detach(d, m, flags, expected):
                let dev = try device(d)
                let ef = try expected.map { try fd($0) } ?? -1
                try netns!.xdpAttach(live, device: dev, fd: -1, flags: modeFlags(m) | flags.rawValue, expectedFD: ef)
            case .packets:
                return .notObservable("packets through a device need traffic the backend does not send")
            case let .testRun(p, size, reps):
                let data = file.packet.testRunFrame(size: size)
                let r = try live.testRun(try fd(p), data: data, repeat: reps)
                observed["retval"] = "\(r.retval)"
            case let .load(name, spec):
                return load(name, spec)
            case let .close(name):
                if refused.remove(name) != nil { return .refusedByKernel("'\(name)' was refused here") }
                if labOnly.remove(name) != nil { return .labOnly("'\(name)' exists only in the lab") }
                if unobserved.removeValue(forKey: name) != nil { return .notObservable("'\(name)' was bound by a step this backend cannot reproduce") }
                let f = try fd(name)
                handles[name] = nil
                try live.close(f)
            case .chainAdd, .chainDel, .chainGet:
                return .labOnly("the RFC's chain calls never merged")
            case let .mapCreate(name, spec):
                do { open(name, try mapCreate(name, spec), .map) } catch let e as LabOnly {
                    labOnly.insert(name)
                    return .labOnly(e.why)
                }
            case let .mapUpdate(m, key, v, flags):
                let mf = try fd(m)
                let raw: UInt64
                switch v {
                case let .program(p): raw = UInt64(UInt32(bitPattern: try fd(p)))
                case let .map(o): raw = UInt64(UInt32(bitPattern: try fd(o)))
                case let .fd(n): raw = UInt64(UInt32(bitPattern: n))
                case let .number(n): raw = n
                }
                let value = valueBytes(raw, valueSize: try live.mapInfo(mf).valueSize)
                try live.mapUpdate(mf, key: u32Bytes(key), value: value, flags: flags.rawValue)
            case let .mapDelete(m, key):
                try live.mapDelete(try fd(m), key: u32Bytes(key))
            case let .mapLookup(m, key):
                let mf = try fd(m)
                let info = try live.mapInfo(mf)
                let b = try live.mapLookup(mf, key: u32Bytes(key), valueSize: Int(info.valueSize))
                var v: UInt64 = 0
                for (i, x) in b.prefix(8).enumerated() { v |= UInt64(x) << (8 * UInt64(i)) }
                if info.type == MapType.progArray.rawValue {
                    // A prog array answers the program's ID: compared by which program it is.
                    observed["value"] = handles.first { live.objectID($0.value.fd) == UInt32(truncatingIfNeeded: v) && $0.value.kind == .program }?.key ?? "id \(v)"
                } else {
                    observed["value"] = "\(v)"
                }
            case let .getFdByID(kind, idRef, name):
                let id: UInt32
                switch idRef {
                case let .of(n): id = live.objectID(try fd(n)) ?? 0
                case .number:
                    unobserved[name] = "bound by get_fd_by_id of a literal ID"
                    return .notObservable("a literal ID names whatever the shared kernel gave that number")
                }
                handles[name] = (try live.getFdByID(kind.rawValue, id), .any)
            case .nextID:
                return .notObservable("next-ID walks cross every object on the shared kernel")
            case let .mkdir(p) where !p.hasPrefix("/sys/fs/bpf"), let .rmdir(p) where !p.hasPrefix("/sys/fs/bpf"):
                return .notObservable("a directory outside bpffs is the machine's own filesystem")
            case let .mkdir(p):
                guard mkdir(try path(p), 0o700) == 0 else { throw LiveError(errno: errno, message: "mkdir") }
            case let .rmdir(p):
                guard rmdir(try path(p)) == 0 else { throw LiveError(errno: errno, message: "rmdir") }
            case let .pin(o, p):
                try live.objPin(try fd(o), path: try path(p))
            case let .unpin(p):
                guard unlink(try path(p)) == 0 else { throw LiveError(errno: errno, message: "unlink") }
            case let .objGet(p, name):
                handles[name] = (try live.objGet(path: try path(p)), .any)
            case let .link(name, p, d, m, target, _, _):
                if target != nil || refused.contains(p) {
                    refused.insert(name)
                    return .refusedByKernel("tracing and extension links need programs this kernel refuses")
                }
                let dev = try device(d)
                let l = try netns!.xdpLinkCreate(live, device: dev, progFD: try fd(p), flags: modeFlags(m))
                open(name, l, .link)
            case let .linkUpdate(l, p, expected):
                try live.linkUpdate(try fd(l), newProgFD: try fd(p), expectedOldFD: try expected.map { try fd($0) } ?? -1)
            case let .linkDetach(l):
                try live.linkDetach(try fd(l))
            case .libxdpAttach, .libxdpDetach:
                return .labOnly("libxdp's dispatcher needs freplace, which this kernel refuses")
            case let .stats(_, name):
                if let name { labOnly.insert(name) }
                return .notObservable("run-time stats are not compared")
            case .setVar:
                return .labOnly("user-space variables are the lab's step-program convenience")
            case .rcuBarrier:
                break
            }
            return .ran(errno: nil, observed: observed)
        } catch let e as LabOnly {
            return .labOnly(e.why)
        } catch let e as RefusedDependency {
            return .refusedByKernel("it needs '\(e.name)', which this kernel refused")
        } catch let e as UnobservedDependency {
            return .notObservable("it needs '\(e.name)', \(e.why)")
        } catch let e as LiveBudgetError {
            if case let .mapCreate(name, _) = step.operation { unobserved[name] = "not created within RLIMIT_MEMLOCK" }
            return .notObservable(e.message)
        } catch let e as NoNetns {
            return .notObservable("no private network namespace: \(e.why)")
        } catch let e as NoBPFFS {
            return .notObservable("no private bpffs mount: \(e.why)")
        } catch let e as NotOpenHere {
            return .ran(errno: "not open", observed: ["name": e.name])
        } catch {
            return .ran(errno: errnoName(error), observed: observed)
        }
    }
}

/// One step's lab and kernel results side by side.
public struct StepComparison: Sendable {
    public let step: Int
    public let line: Int
    public let what: String
    public let lab: String
    public let kernel: String
    /// nil: they agree (or the kernel has no answer to compare: lab only, refused, not observable).
    public let disagreement: String?
}

/// A scenario run on both backends.
public struct ScenarioComparisonResult {
    public let outcome: ScenarioOutcome
    public let rows: [StepComparison]
    /// The run's objects the kernel still published after everything was closed (a kernel
    /// leak; none expected — see README, "The live kernel").
    public let keptByKernel: [String]
    /// Seconds the kernel runner waited for background frees (see KernelScenarioRunner.observe).
    public let waitedForState: Double
    public var disagreements: [StepComparison] { rows.filter { $0.disagreement != nil } }
}

public enum ScenarioComparison {
    /// Runs `file` on the lab and on the live kernel and compares every step: errno, the
    /// test-run return value and map values where both observed them, and the state the step
    /// left (ScenarioState.swift: objects alive, ID order, XDP attachments, links).
    public static func compare(_ runner: ScenarioRunner, options: ScenarioRunOptions = ScenarioRunOptions()) -> ScenarioComparisonResult {
        var options = options
        options.observeState = true
        let labOut = runner.run(options)
        let kr = KernelScenarioRunner(file: runner.file, expected: labOut.states)
        let kernel = kr.run()
        var rows: [StepComparison] = []
        for step in runner.file.steps {
            guard let rec = labOut.records.first(where: { $0.step == step.index }) else { continue }
            let k = kernel.first { $0.step == step.index }?.result ?? .notObservable("not reached")
            let labText = rec.result == "not run" ? "not run" : rec.errno ?? (rec.observed.isEmpty ? "ok" : rec.observed.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            var kernelText: String, disagreement: String?
            switch k {
            case .ran("not open", _) where rec.result == "not run":
                kernelText = "not run"  // a name neither side has open (its creation failed on both)
            case let .ran(errno, observed):
                kernelText = errno ?? (observed.isEmpty ? "ok" : observed.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
                if rec.result == "not run" || errno == "not open" {
                    disagreement = "lab \(rec.result == "not run" ? "did not run it (\(rec.message ?? ""))" : rec.errno ?? "ok"), kernel \(errno == "not open" ? "did not run it" : errno ?? "ok")"
                } else if errno != rec.errno {
                    disagreement = "errno: lab \(rec.errno ?? "none"), kernel \(errno ?? "none")"
                } else if errno == nil {
                    for key in ["retval", "value"] {
                        if let a = rec.observed[key], let b = observed[key], a != b { disagreement = "\(key): lab \(a), kernel \(b)" }
                    }
                }
            case let .labOnly(why): kernelText = "lab only (\(why))"
            case let .refusedByKernel(why): kernelText = "refused by this kernel (\(why))"
            case let .notObservable(why): kernelText = "not observable (\(why))"
            }
            if disagreement == nil, let a = labOut.states[step.index], let b = kr.states[step.index] {
                let diff = ObservedState.differences(lab: a.rendered(excluding: kr.excluded), kernel: b.rendered(excluding: kr.excluded))
                if !diff.isEmpty { disagreement = "state after the step: " + diff.joined(separator: "; ") }
            }
            if let d = disagreement, kr.stepsWithoutPremise.contains(step.index) {
                kernelText += " — not comparable (\(d); an object it builds on is lab only or refused here)"
                disagreement = nil
            }
            rows.append(StepComparison(step: step.index, line: step.position.line, what: "\(rec.operation) \(rec.arguments)",
                                       lab: labText, kernel: kernelText, disagreement: disagreement))
        }
        return ScenarioComparisonResult(outcome: labOut, rows: rows, keptByKernel: kr.leftAfterClose, waitedForState: kr.waitedForState)
    }
}
