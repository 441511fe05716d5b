// Designs.swift — the ways of running "the next program" the harness compares, each set
// up through the facade exactly as a user would, with the seed's pair of programs: one
// that returns XDP_PASS followed by one that returns XDP_DROP (the baseline is the DROP
// program alone). Every design must drop every packet: the harness checks that before it
// measures anything.
import BPFKernel
import BPFInstructions
import BPFObject
import BPFPrograms
import Foundation

public enum DesignID: String, CaseIterable, Sendable, Codable {
    case beforePatch = "before-patch"
    case baseline
    case chainUnused = "chain-unused"
    case chainPass = "chain-pass"
    case chainWildcard = "chain-wildcard"
    case tailJIT = "tail-jit"
    case tailInterp = "tail-interp"
    case tailDirect = "tail-direct"
    case extSlot = "ext-slot"
    case trampoline
    case libxdp1 = "libxdp-1"
    case libxdp3 = "libxdp-3"
    case dispatcherHit = "dispatcher-hit"
    case dispatcherMiss = "dispatcher-miss"
    case staticKeyOff = "static-key-off"
    case staticKeyOn = "static-key-on"
    case indirectCall = "indirect-call"
    case runAll = "run-all"
    // Real instructions, run by the kernel's interpreter (BPFPrograms/interpreter.c).
    case bytecodeDrop = "bytecode-drop"
    case bytecodeTail = "bytecode-tail"
    case bytecodeParser = "bytecode-parser"
    case bytecodeTailLoop = "bytecode-tail-loop"
    // Seed 004: an fentry program on the DROP program reading per-attachment data four ways.
    case dataCookie = "data-cookie"
    case dataArray = "data-array"
    case dataHash = "data-hash"
    case dataGlobal = "data-global"

    /// The row name in the seed-shaped table.
    public var title: String {
        switch self {
        case .beforePatch: return "Before patch (XDP DROP program)"
        case .baseline: return "After patch (XDP DROP program)"
        case .chainUnused: return "Chain flag set, no slots (DROP)"
        case .chainPass: return "XDP chain call (XDP_PASS return)"
        case .chainWildcard: return "XDP chain call (wildcard return)"
        case .tailJIT: return "Tail call, JIT style"
        case .tailInterp: return "Tail call, interpreter style"
        case .tailDirect: return "Tail call, direct (patched)"
        case .extSlot: return "freplace extension slot (DROP)"
        case .trampoline: return "Trampoline, one fentry (DROP)"
        case .libxdp1: return "libxdp dispatcher, 1 program"
        case .libxdp3: return "libxdp dispatcher, 3 programs"
        case .dispatcherHit: return "bpf_dispatcher, hit (48 targets)"
        case .dispatcherMiss: return "bpf_dispatcher, miss (48 targets)"
        case .staticKeyOff: return "Static key off (DROP)"
        case .staticKeyOn: return "Static key on (hook + DROP)"
        case .indirectCall: return "Indirect call table (PASS, DROP)"
        case .runAll: return "Run-all array (PASS, DROP)"
        case .bytecodeDrop: return "Bytecode DROP (interpreter)"
        case .bytecodeTail: return "Bytecode tail call (interpreter)"
        case .bytecodeParser: return "Bytecode Eth/IPv4/UDP parser (clang)"
        case .bytecodeTailLoop: return "Bytecode self tail call, 34 runs (clang)"
        case .dataCookie: return "fentry reads the link cookie"
        case .dataArray: return "fentry reads an array map"
        case .dataHash: return "fentry reads a hash map"
        case .dataGlobal: return "fentry reads a global variable"
        }
    }

    /// What runs per packet (for `bpflab bench --list`).
    public var summary: String {
        switch self {
        case .beforePatch: return "the DROP program run by BPF_PROG_RUN without the RFC's chain_calls test"
        case .baseline: return "the DROP program run by BPF_PROG_RUN with the chain_calls test (the reference for overheads, as in the seed)"
        case .chainUnused: return "the DROP program loaded with BPF_F_CHAIN_CALLS and no slots filled: the chain loop runs and finds nothing"
        case .chainPass: return "PASS program whose XDP_PASS chain slot holds the DROP program"
        case .chainWildcard: return "PASS program whose wildcard slot holds the DROP program"
        case .tailJIT: return "program tail-calling the DROP program through a prog array (bounds, count, load, NULL check, jump)"
        case .tailInterp: return "the same, interpreted: the interpreter switches to the target's steps in its loop"
        case .tailDirect: return "the same with a constant key: a patched direct jump, re-pointed on update"
        case .extSlot: return "a program calling its global function 'slot', replaced (freplace) by the DROP program through a link"
        case .trampoline: return "the DROP program with one fentry program (returns 0) on its trampoline"
        case .libxdp1: return "libxdp's dispatcher with one slot filled by the DROP program (extension)"
        case .libxdp3: return "libxdp's dispatcher: PASS, PASS, DROP in three slots, XDP_PASS in every mask"
        case .dispatcherHit: return "the DROP program run through the kernel's bpf_dispatcher, found among 48 known targets"
        case .dispatcherMiss: return "the same, but the DROP program is not among the 48 targets: binary search, then the indirect call"
        case .staticKeyOff: return "DROP after a static branch site whose key is off (the hook is not called)"
        case .staticKeyOn: return "the same with the key on: the branch calls a hook function (returns PASS, ignored)"
        case .indirectCall: return "the DROP program calling the PASS program through a NULL-checked function-table slot"
        case .runAll: return "BPF_PROG_RUN_ARRAY over [PASS, DROP]: every program runs, the first non-PASS verdict wins"
        case .bytecodeDrop: return "the DROP program as instructions (r0 = 1; exit), run by the interpreter: its fixed cost per packet"
        case .bytecodeTail: return "an instruction program tail-calling the bytecode DROP program (bpf_tail_call, the interpreter's JMP_TAIL_CALL)"
        case .bytecodeParser: return "bpf/xdp_parser.c compiled by clang: Ethernet, IPv4, UDP, a hash-map count per port, DROP for port 9000"
        case .bytecodeTailLoop: return "bpf/tail_loop.c compiled by clang: counts into an array map and tail-calls itself; 34 runs per packet, then DROP"
        case .dataCookie: return "seed 004: the DROP program with a clang-built fentry program adding bpf_get_attach_cookie() to a global (bpf/attach_data.c)"
        case .dataArray: return "seed 004: the same, reading an array map's value (bpf_map_lookup_elem)"
        case .dataHash: return "seed 004: the same, reading a hash map's value (bpf_map_lookup_elem)"
        case .dataGlobal: return "seed 004: the same, reading a global variable (.data, direct value access)"
        }
    }

    /// The seed's table: before/after patch, chain calls, tail calls.
    public static let seedSuite: [DesignID] = [.beforePatch, .baseline, .chainUnused, .chainPass, .chainWildcard,
                                               .tailJIT, .tailInterp, .tailDirect]
    /// Trampolines, extensions, dispatchers, static keys, indirect calls, run-all.
    public static let attachSuite: [DesignID] = [.baseline, .extSlot, .trampoline, .libxdp1, .libxdp3, .dispatcherHit,
                                                 .dispatcherMiss, .staticKeyOff, .staticKeyOn, .indirectCall, .runAll]

    /// The design called `name` ('_' accepted for '-': one spelling per concept); an
    /// unknown name is an error naming the closest one.
    /// Instructions in the interpreter, beside the native designs they mirror, and seed 004.
    public static let bytecodeSuite: [DesignID] = [.baseline, .bytecodeDrop, .tailInterp, .bytecodeTail, .bytecodeTailLoop, .bytecodeParser,
                                                   .trampoline, .dataCookie, .dataArray, .dataHash, .dataGlobal]

    /// Designs built from the shipped, clang-compiled objects (bpf/out).
    public var needsObjects: Bool { [.bytecodeParser, .bytecodeTailLoop, .dataCookie, .dataArray, .dataHash, .dataGlobal].contains(self) }

    public static func named(_ name: String) throws -> DesignID {
        guard let d = DesignID(rawValue: name) ?? DesignID(rawValue: name.replacingOccurrences(of: "_", with: "-")) else {
            throw HarnessError(unknownMessage("design", name, allCases.map(\.rawValue)))
        }
        return d
    }

    public static func parseList(_ s: String) throws -> [DesignID] {
        if s == "all" { return allCases }
        if s == "seed" { return seedSuite }
        if s == "attach" { return attachSuite }
        if s == "bytecode" { return bytecodeSuite }
        var out: [DesignID] = []
        for raw in s.split(separator: ",") {
            let part = raw.trimmingCharacters(in: .whitespaces)  // "a, b" as well as "a,b"
            if part.isEmpty { continue }
            let d = try named(part)
            if !out.contains(d) { out.append(d) }
        }
        if out.isEmpty { throw HarnessError("--designs is empty") }
        if !out.contains(.baseline) { out.insert(.baseline, at: out.first == .beforePatch ? 1 : 0) }
        return out
    }
}

/// A design's objects: the program to attach, every fd it opened, how the driver runs it,
/// and what churn may touch.
public struct DesignSetup: @unchecked Sendable {
    public let id: DesignID
    public let root: Int32
    public let fds: [Int32]
    /// A chain-enabled program whose unused XDP_TX slot churn may fill and empty.
    public var chainPrev: Int32?
    /// A prog array (with a spare slot 1) that churn may update.
    public var progArray: Int32?
    /// A static-key map whose flips leave the verdicts unchanged.
    public var staticKey: Int32?
    public var runner: RunnerKind = .patched
    /// The bytecode program each packet runs (the root, or the fentry program of seed
    /// 004's designs): the report counts its instructions per packet.
    public var bytecodeProg: Int32?
    /// Undoes what closing the fds does not (scratch devices, dispatcher targets, arrays).
    var teardown: () -> Void = {}

    init(id: DesignID, root: Int32, fds: [Int32], chainPrev: Int32? = nil, progArray: Int32? = nil) {
        self.id = id
        self.root = root
        self.fds = fds
        self.chainPrev = chainPrev
        self.progArray = progArray
    }

    /// Loads the design's programs through `bpf`.
    public static func make(_ id: DesignID, bpf: BPF) throws -> DesignSetup {
        func load(_ a: ProgLoadAttr) throws -> Int32 { try bpf.progLoad(a) }
        let dropName = "xdp_drop"
        let pass = UInt32(2), drop = UInt32(1)
        switch id {
        case .baseline, .beforePatch:
            let d = try load(ProgLoadAttr(body: .xdpDrop, name: dropName))
            var s = DesignSetup(id: id, root: d, fds: [d])
            if id == .beforePatch { s.runner = .unpatched }
            return s
        case .chainUnused:
            let d = try load(ProgLoadAttr(body: .xdpDrop, name: dropName, flags: .chainCalls))
            return DesignSetup(id: id, root: d, fds: [d], chainPrev: d)
        case .chainPass, .chainWildcard:
            let p = try load(ProgLoadAttr(body: .xdpPass, name: "xdp_pass", flags: .chainCalls))
            let d = try load(ProgLoadAttr(body: .xdpDrop, name: dropName, flags: .chainCalls))
            try bpf.progChainAdd(prev: p, retcode: id == .chainPass ? 2 : chainWildcard, next: d)
            return DesignSetup(id: id, root: p, fds: [p, d], chainPrev: p)
        case .tailJIT, .tailInterp, .tailDirect:
            let jited = id != .tailInterp
            let jmp = try bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: 2, name: "jmp"))
            let d = jited ? try load(ProgLoadAttr(body: .xdpDrop, name: dropName))
                          : try load(ProgLoadAttr(steps: StepProgram([.returnConst(1)]), name: dropName, jited: false))
            try bpf.mapUpdateElem(jmp, key: [0, 0, 0, 0], value: u32Bytes(UInt32(bitPattern: d)))
            let t = try load(ProgLoadAttr(steps: StepProgram([.tailCall(arrayFD: jmp, index: .constant(0)), .returnConst(2)],
                                                             directTailCalls: id == .tailDirect),
                                          name: "xdp_tail", jited: jited))
            return DesignSetup(id: id, root: t, fds: [t, d, jmp], progArray: jmp)
        case .extSlot:
            let t = try load(ProgLoadAttr(steps: StepProgram([.call(0), .returnLast], subprogs: [[.returnConst(pass)]],
                                                             subprogNames: ["slot"]), name: "xdp_main"))
            let e = try load(.extension(of: t, function: "slot", body: .xdpDrop, name: dropName))
            let l = try bpf.linkCreate(LinkCreateAttr(progFD: e, attachType: .unspecified))
            return DesignSetup(id: id, root: t, fds: [t, e, l])
        case .trampoline:
            let d = try load(ProgLoadAttr(body: .xdpDrop, name: dropName))
            let f = try load(.tracing(.traceFentry, on: d, body: .retConst, data: [0, 0, 0, 0], name: "fentry"))
            let l = try bpf.linkCreate(LinkCreateAttr(progFD: f, attachType: .traceFentry))
            return DesignSetup(id: id, root: d, fds: [d, f, l])
        case .libxdp1, .libxdp3:
            // Built on a scratch device, as libxdp would on the real one; the bench device
            // then runs the same dispatcher program.
            let scratch = NetDevice(kernel: bpf.kernel, name: "xdpscratch", ifindex: 99)
            let x = LibXDP(bpf: bpf)
            let specs = id == .libxdp1
                ? [XDPProgramSpec(name: dropName, body: .xdpDrop)]
                : [XDPProgramSpec(name: "pass_a", body: .xdpPass, runPrio: 10), XDPProgramSpec(name: "pass_b", body: .xdpPass, runPrio: 20),
                   XDPProgramSpec(name: dropName, body: .xdpDrop, runPrio: 30)]
            try x.attach(specs, to: scratch)
            let root = try bpf.progGetFdById(scratch.program!.id)
            var s = DesignSetup(id: id, root: root, fds: [root])
            s.teardown = { try? x.detach(specs.map(\.name), from: scratch); scratch.detachAll() }
            return s
        case .dispatcherHit, .dispatcherMiss:
            let d = try load(ProgLoadAttr(body: .xdpDrop, name: dropName))
            let disp = bpf.kernel.xdpDispatcher!
            // The targets are held by their fds (as the kernel's are by the devices they
            // are attached to); the dispatcher holds its own reference on each.
            func change(_ fd: Int32, add: Bool) {
                guard let p = try? bpf.prog(fd) else { return }
                disp.change(from: add ? nil : p, to: add ? p : nil)
                p.put()  // bpf.prog's
            }
            var others: [Int32] = []
            for _ in 0..<(id == .dispatcherHit ? 47 : 48) {
                let o = try load(ProgLoadAttr(body: .xdpTx, name: "other"))
                change(o, add: true)
                others.append(o)
            }
            if id == .dispatcherHit { change(d, add: true) }
            var s = DesignSetup(id: id, root: d, fds: [d] + others)
            s.runner = .dispatched(UnsafePointer(disp.raw))
            s.teardown = {
                if id == .dispatcherHit { change(d, add: false) }
                for o in others { change(o, add: false) }
            }
            return s
        case .staticKeyOff, .staticKeyOn:
            let key = try bpf.mapCreate(MapCreateAttr(type: .staticKey, maxEntries: 1, name: "hook_key"))
            let p = try load(ProgLoadAttr(steps: StepProgram([.staticBranch(keyFD: key, call: 0), .returnConst(drop)],
                                                             subprogs: [[.returnConst(pass)]], subprogNames: ["hook"]), name: dropName))
            if id == .staticKeyOn { try bpf.mapUpdateElem(key, key: [0, 0, 0, 0], value: [1, 0, 0, 0]) }
            var s = DesignSetup(id: id, root: p, fds: [p, key])
            s.staticKey = key
            return s
        case .indirectCall:
            let table = try bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: 4, name: "debugpoints"))
            let hook = try load(ProgLoadAttr(body: .xdpPass, name: "xdp_pass"))
            try bpf.mapUpdateElem(table, key: [0, 0, 0, 0], value: u32Bytes(UInt32(bitPattern: hook)))
            let p = try load(ProgLoadAttr(steps: StepProgram([.indirectCall(arrayFD: table, index: .constant(0)), .returnConst(drop)]), name: dropName))
            return DesignSetup(id: id, root: p, fds: [p, hook, table])
        case .bytecodeDrop:
            let d = try load(ProgLoadAttr(insns: [.mov64(0, imm: Int32(drop)), .exit], name: dropName))
            var s = DesignSetup(id: id, root: d, fds: [d])
            s.bytecodeProg = d
            return s
        case .bytecodeTail:
            let jmp = try bpf.mapCreate(MapCreateAttr(type: .progArray, maxEntries: 2, name: "jmp"))
            let d = try load(ProgLoadAttr(insns: [.mov64(0, imm: Int32(drop)), .exit], name: dropName))
            try bpf.mapUpdateElem(jmp, key: [0, 0, 0, 0], value: u32Bytes(UInt32(bitPattern: d)))
            let t = try load(ProgLoadAttr(insns: try Assembler.assemble("""
                lddw %r2, map \(jmp)
                mov %r3, 0
                call 12
                mov %r0, 2
                exit
                """), name: "xdp_tail"))
            var s = DesignSetup(id: id, root: t, fds: [t, d, jmp], progArray: jmp)
            s.bytecodeProg = t
            return s
        case .bytecodeParser:
            let l = try bpf.loadObject(try ShippedObjects.object("xdp_parser"))
            var s = DesignSetup(id: id, root: l.programs["xdp_parser"]!, fds: Array(l.programs.values) + Array(l.maps.values))
            s.bytecodeProg = s.root
            return s
        case .bytecodeTailLoop:
            let l = try bpf.loadObject(try ShippedObjects.object("tail_loop"))
            let p = l.programs["tail_loop"]!
            try bpf.mapUpdateElem(l.maps["jmp_table"]!, key: [0, 0, 0, 0], value: u32Bytes(UInt32(bitPattern: p)))
            var s = DesignSetup(id: id, root: p, fds: [p] + Array(l.maps.values), progArray: l.maps["jmp_table"]!)
            s.bytecodeProg = p
            return s
        case .dataCookie, .dataArray, .dataHash, .dataGlobal:
            let name = ["data-cookie": "by_cookie", "data-array": "by_array", "data-hash": "by_hash", "data-global": "by_global"][id.rawValue]!
            let d = try load(ProgLoadAttr(body: .xdpDrop, name: dropName))
            let l = try bpf.loadObject(try ShippedObjects.object("attach_data"), only: [name], targets: [name: d],
                                       functions: [name: dropName])
            try bpf.mapUpdateElem(l.maps["data_array"]!, key: [0, 0, 0, 0], value: [5, 0, 0, 0, 0, 0, 0, 0])
            try bpf.mapUpdateElem(l.maps["data_hash"]!, key: [0, 0, 0, 0], value: [5, 0, 0, 0, 0, 0, 0, 0])
            let link = try bpf.linkCreate(LinkCreateAttr(progFD: l.programs[name]!, attachType: .traceFentry, cookie: 5))
            var s = DesignSetup(id: id, root: d, fds: [d] + Array(l.programs.values) + [link] + Array(l.maps.values))
            s.bytecodeProg = l.programs[name]!
            return s
        case .runAll:
            let a = try load(ProgLoadAttr(body: .xdpPass, name: "xdp_pass"))
            let d = try load(ProgLoadAttr(body: .xdpDrop, name: dropName))
            let ra = RunArray(kernel: bpf.kernel)
            let pa = try bpf.prog(a), pd = try bpf.prog(d)
            defer { pa.put(); pd.put() }
            try ra.attach(pa)
            try ra.attach(pd)
            var s = DesignSetup(id: id, root: d, fds: [a, d])
            s.runner = .runArray(UnsafePointer(ra.slot))
            s.teardown = { ra.detachAll() }
            return s
        }
    }

    /// One packet as the driver would run it for this design (the verdict cross-check).
    public func runOnce(_ device: NetDevice, _ ctx: XDPContext) -> UInt32 {
        let prog = device.currentProg
        switch runner {
        case .patched: return PatchedProgRun().run(prog, ctx)
        case .unpatched: return UnpatchedProgRun().run(prog, ctx)
        case let .dispatched(d): return DispatchedProgRun(dispatcher: d).run(prog, ctx)
        case let .runArray(slot): return RunArrayRun(slot: slot).run(prog, ctx)
        }
    }

    /// Instructions the interpreter executes for one packet of `frame` in this design's
    /// bytecode program (tail calls followed), or nil if it has none.
    public func instructionsPerPacket(_ bpf: BPF, frame: [UInt8]) -> UInt64? {
        guard let fd = bytecodeProg, let p = try? bpf.prog(fd) else { return nil }
        defer { p.put() }  // bpf.prog's
        var f = frame
        var n: UInt64 = 0
        _ = withXDPContext(&f, ifindex: 1) { bpfi_prog_run_counted($0, p.raw.pointee.insnsi, &n) }
        return n
    }

    public func close(_ bpf: BPF) {
        teardown()
        for fd in fds.reversed() { try? bpf.objClose(fd) }
    }
}
