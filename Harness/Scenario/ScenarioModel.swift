// ScenarioModel.swift — a scenario file as typed values, and its vocabulary.
//
// A file is decoded whole into these values (ScenarioDecode.swift), every name and key
// checked, before anything runs (ScenarioRun.swift). The vocabulary — the words the
// parser accepts, the lists its error messages print, and `bpflab scenarios --vocabulary`
// — comes from the tables at the end of this file, and nowhere else.
import BPFKernel
import BPFInstructions
import BPFObject

/// Where a value came from in the file.
public struct Position: Sendable, Codable, Equatable {
    public var line: Int
    public var column: Int
}

public enum ObjectKind: String, Sendable, Codable {
    case program, map, link, stats
    /// An object whose kind is known only when it runs (obj_get of a path).
    case any
}

/// A map declaration or a map created by a step.
public struct MapSpec: Sendable {
    public var type: MapType
    public var maxEntries: UInt32
    public var keySize: UInt32
    public var valueSize: UInt32
}

/// Where a tracing or extension program attaches.
public enum AttachSpec: Sendable {
    case extends(program: String, function: String)
    case traces(kind: AttachType, program: String?, function: String?)
}

/// How a program is made.
public enum ProgramBody: Sendable {
    case builtin(ProgBody)
    case returns(UInt32)
    case steps(main: [StepSpec], subprogs: [[StepSpec]], subprogNames: [String])
    /// Instructions: assembler text (`asm: |`, maps by name) or raw bytes (`raw:` hex), with
    /// the static-key maps behind local keys 0, 1, … (`static_keys:`).
    case bytecode(BytecodeSource, staticKeys: [String])
}

public enum BytecodeSource: Sendable {
    case asm(String)
    case raw([BPFInsn])
    /// A program of an object clang wrote (`object: FILE.o` or a shipped name, `program:`).
    /// Its maps are the scenario's maps of the same names, or created from the object.
    case object(BPFObjectFile, program: String)
}

public enum ProgramEngine: String, Sendable, CaseIterable {
    case jit, interp, direct
    /// Compiled to instructions and run by the bytecode interpreter (StepCompiler.swift).
    case bytecode
    /// Generated x86-64 (MachineStepJIT.swift): tail calls as emit_bpf_tail_call_indirect,
    /// or (machine-direct) as emit_bpf_tail_call_direct's patched jump.
    case machine
    case machineDirect = "machine-direct"

    /// Whether tail calls with a constant key are the patched direct jump.
    var directTailCalls: Bool { self == .direct || self == .machineDirect }
}

public struct ProgramSpec: Sendable {
    public var body: ProgramBody
    public var flags: ProgLoadFlags
    public var engine: ProgramEngine
    public var attach: AttachSpec?
    public var position: Position
}

/// A step of a step program, with names still unresolved (maps by name).
public enum StepSpec: Sendable {
    case count(String)
    case tailCall(array: String, index: TailIndex)
    case indirectCall(array: String, index: TailIndex)
    case call(Int)
    case setVar(Int, UInt64)
    case returnConst(UInt32)
    case returnVar(Int)
    case returnLast
    case storeCookie(Int)
    case storeFuncRet(Int)
    case staticBranch(key: String, call: Int)
    case staticKeySet(key: String, on: Bool)

    /// The step as the kernel objects take it, each named map resolved to an fd by `mapFD`
    /// (the lab's handles, or the live backend's).
    func resolved(_ mapFD: (String) throws -> Int32) throws -> Step {
        switch self {
        case let .count(n): return .count(n)
        case let .tailCall(a, i): return .tailCall(arrayFD: try mapFD(a), index: i)
        case let .indirectCall(a, i): return .indirectCall(arrayFD: try mapFD(a), index: i)
        case let .call(n): return .call(n)
        case let .setVar(i, v): return .setVar(i, v)
        case let .returnConst(v): return .returnConst(v)
        case let .returnVar(i): return .returnVar(i)
        case .returnLast: return .returnLast
        case let .storeCookie(i): return .storeCookie(i)
        case let .storeFuncRet(i): return .storeFuncRet(i)
        case let .staticBranch(k, n): return .staticBranch(keyFD: try mapFD(k), call: n)
        case let .staticKeySet(k, on): return .staticKeySet(keyFD: try mapFD(k), on: on)
        }
    }
}

public struct DeviceSpec: Sendable {
    public var name: String
    public var ifindex: UInt32
    public var queues: Int
}

public enum XDPModeSpec: String, Sendable, CaseIterable {
    case skb, drv, hw

    /// The XDP_FLAGS_*_MODE bit; none (0) lets the kernel choose.
    static func flags(_ m: XDPModeSpec?) -> UInt32 {
        switch m {
        case .skb?: return XDPFlags.skbMode.rawValue
        case .drv?: return XDPFlags.drvMode.rawValue
        case .hw?: return XDPFlags.hwMode.rawValue
        case nil: return 0
        }
    }
}

/// A map_update's value.
public enum MapValueSpec: Sendable {
    case program(String)
    case map(String)      // another map's fd (a prog array must refuse it)
    case fd(Int32)        // a raw descriptor number (e.g. a closed one)
    case number(UInt64)
}

public enum IDKind: String, Sendable, CaseIterable {
    case prog, map, link
}

/// An ID argument: a named object's ID, or a number.
public enum IDRef: Sendable {
    case of(String)
    case number(UInt32)
}

/// One operation of the sequence.
public enum Operation: Sendable {
    case attach(program: String, device: String?, mode: XDPModeSpec?, flags: XDPFlags, expected: String?)
    case detach(device: String?, mode: XDPModeSpec?, flags: XDPFlags, expected: String?)
    case packets(count: Int, device: String?, viaDispatcher: Bool)
    case testRun(program: String, size: Int?, repeatCount: UInt32)
    case load(name: String, spec: ProgramSpec)
    case close(String)
    case chainAdd(prev: String, retcode: UInt32, next: String)
    case chainDel(prev: String, retcode: UInt32)
    case chainGet(prev: String, retcode: UInt32)
    case mapCreate(name: String, spec: MapSpec)
    case mapUpdate(map: String, key: UInt32, value: MapValueSpec, flags: MapUpdateFlag)
    case mapDelete(map: String, key: UInt32)
    case mapLookup(map: String, key: UInt32)
    case getFdByID(kind: IDKind, id: IDRef, as: String)
    case nextID(kind: IDKind, after: IDRef)
    case mkdir(String)
    case rmdir(String)
    case pin(object: String, path: String)
    case unpin(String)
    case objGet(path: String, as: String)
    case link(name: String, program: String, device: String?, mode: XDPModeSpec?, target: String?, function: String?, cookie: UInt64)
    case linkUpdate(link: String, program: String, expected: String?)
    case linkDetach(String)
    case libxdpAttach([(program: String, runPrio: UInt32, actions: UInt32)])
    case libxdpDetach([String])
    case stats(on: Bool, as: String?)
    case setVar(program: String, index: Int, value: UInt64)
    case rcuBarrier
}

/// What a step expects. Every field is optional; an absent one is not checked.
public struct Expectation: Sendable {
    public var errno: Errno?
    public var verdicts: [Int: UInt64] = [:]
    public var invalid: UInt64?
    public var retval: UInt32?
    public var dataOutSize: Int?
    public var counters: [String: UInt64] = [:]
    public var runCount: [String: UInt64] = [:]
    public var runTimeNonzero: [String: Bool] = [:]
    public var misses: [String: UInt64] = [:]
    public var refcnt: [String: UInt64] = [:]
    public var usercnt: [String: UInt64] = [:]
    public var liveObjects: Int?
    public var pendingFree: Int?
    public var next: String??           // chain_get: a program name, or nil for "empty"
    public var value: ValueExpectation?
    public var ids: [String] = []
    public var vars: [String: [Int: UInt64]] = [:]
    public var linkProgram: [String: String] = [:]
    public var dispatcher: [String]?
    public var staticKeys: [String: (enabled: Bool?, sites: Int?)] = [:]
    public var attached: [String: String?] = [:]   // device → program name (nil: none)
    public var pins: [String]?
    /// `audit: clean`: the auditor finds nothing (after a barrier).
    public var audit = false
    public var position: Position
}

public enum ValueExpectation: Sendable {
    case program(String)
    case number(UInt64)
}

public struct StepDecl: Sendable {
    public var index: Int
    public var operation: Operation
    public var expect: Expectation?
    public var position: Position
}

/// A whole scenario file, checked.
public struct ScenarioFile: Sendable {
    public var name: String
    public var description: String
    public var maps: [(name: String, spec: MapSpec)]
    public var programs: [(name: String, spec: ProgramSpec)]
    public var slots: [(map: String, index: UInt32, program: String, position: Position)]
    public var devices: [DeviceSpec]
    public var packet: FrameSpec
    public var steps: [StepDecl]
}

// MARK: - the vocabulary (one source of truth)

/// A word of the scenario language: its name, its keys (for mappings) and what it does.
public struct VocabularyEntry: Sendable {
    public let name: String
    public let keys: [String]
    public let summary: String
}

public enum ScenarioVocabulary {
    public static let topLevel = ["name", "description", "maps", "programs", "slots", "device", "devices", "packet", "sequence"]
    public static let mapKeys = ["type", "max_entries", "key_size", "value_size"]
    public static let mapTypes = ["prog_array", "array", "static_key", "hash", "percpu_array"]
    public static let programKeys = ["builtin", "returns", "steps", "asm", "raw", "object", "program", "static_keys", "subprogs", "subprog_names", "flags", "engine", "extends", "traces"]
    public static let builtins = ["pass", "drop", "tx", "aborted"]

    /// The verdict a builtin body returns — what it becomes where it is not the native body
    /// (instructions for the kernel, a compiled or generated step program).
    static func verdict(ofBuiltin b: ProgBody) -> UInt32 {
        [ProgBody.xdpPass.symbol: 2, ProgBody.xdpDrop.symbol: 1, ProgBody.xdpTx.symbol: 3, ProgBody.xdpAborted.symbol: 0][b.symbol] ?? 0
    }
    public static let programFlags = ["chain_calls", "xdp_has_frags"]
    public static let traceKinds = ["fentry", "fexit", "fmod_ret"]
    public static let xdpFlags = ["update_if_noexist", "replace"]
    public static let updateFlags = ["any", "noexist", "exist"]
    public static let verdictNames = ["ABORTED", "DROP", "PASS", "TX", "REDIRECT"]

    public static let steps: [VocabularyEntry] = [
        .init(name: "count", keys: [], summary: "count: NAME — add 1 to a kernel-wide counter"),
        .init(name: "tail_call", keys: ["array", "index", "index_var"], summary: "bpf_tail_call through a prog array (constant index or from a variable)"),
        .init(name: "indirect_call", keys: ["array", "index", "index_var"], summary: "a NULL-checked call through a prog array (seed 001's indirect calls; depth-limited)"),
        .init(name: "call", keys: [], summary: "call: N — bpf-to-bpf call of subprogram N"),
        .init(name: "set_var", keys: ["index", "value"], summary: "set one of the program's u64 variables"),
        .init(name: "return", keys: [], summary: "return: N — exit with N (-1 is ~0)"),
        .init(name: "return_var", keys: [], summary: "return_var: N — exit with variable N"),
        .init(name: "return_last", keys: [], summary: "exit with the last call's value (bare word)"),
        .init(name: "store_cookie", keys: [], summary: "store_cookie: N — variable N = bpf_get_attach_cookie()"),
        .init(name: "store_func_ret", keys: [], summary: "store_func_ret: N — variable N = the traced function's return (fexit)"),
        .init(name: "static_branch", keys: ["key", "call"], summary: "if (static_branch_unlikely(key)) call subprogram"),
        .init(name: "static_key_set", keys: ["key", "on"], summary: "the lab's kfunc: switch a static key from a program"),
    ]

    public static let operations: [VocabularyEntry] = [
        .init(name: "attach", keys: ["program", "device", "mode", "flags", "expected"], summary: "legacy XDP attach (bpf_xdp_attach); mode skb|drv|hw; flags update_if_noexist, replace (with expected)"),
        .init(name: "detach", keys: ["device", "mode", "flags", "expected"], summary: "legacy XDP detach (bare word, or with a device/mode)"),
        .init(name: "packets", keys: ["count", "device", "via"], summary: "a burst through the driver (RX ring, NAPI polls of 64); via: dispatcher runs BPF_PROG_RUN through the kernel's bpf_dispatcher"),
        .init(name: "test_run", keys: ["program", "size", "repeat"], summary: "BPF_PROG_TEST_RUN (size from 14 bytes, repeat)"),
        .init(name: "load", keys: [], summary: "load: NAME (a declared program, again) or load: {NAME: {program}} — a refused load is an expectation"),
        .init(name: "close", keys: [], summary: "close: NAME — close the fd behind a name"),
        .init(name: "chain_add", keys: ["prev", "retcode", "next"], summary: "BPF_PROG_CHAIN_ADD (retcode: number, XDP_… or wildcard)"),
        .init(name: "chain_del", keys: ["prev", "retcode"], summary: "BPF_PROG_CHAIN_DEL"),
        .init(name: "chain_get", keys: ["prev", "retcode"], summary: "BPF_PROG_CHAIN_GET (expect next: NAME)"),
        .init(name: "map_create", keys: ["name", "type", "max_entries", "key_size", "value_size"], summary: "BPF_MAP_CREATE as a step"),
        .init(name: "map_update", keys: ["map", "key", "program", "map_fd", "fd", "value", "flags"], summary: "BPF_MAP_UPDATE_ELEM (a program's fd, another map's fd, a raw fd or a number; flags any|noexist|exist)"),
        .init(name: "map_delete", keys: ["map", "key"], summary: "BPF_MAP_DELETE_ELEM"),
        .init(name: "map_lookup", keys: ["map", "key"], summary: "BPF_MAP_LOOKUP_ELEM (expect value: NAME for a prog array, a number for an array)"),
        .init(name: "get_fd_by_id", keys: ["kind", "id", "as"], summary: "BPF_{PROG,MAP,LINK}_GET_FD_BY_ID (id: NAME or number) as a new name"),
        .init(name: "next_id", keys: ["kind", "after"], summary: "BPF_{PROG,MAP,LINK}_GET_NEXT_ID (expect errno: ENOENT after the last)"),
        .init(name: "mkdir", keys: [], summary: "mkdir: PATH in bpffs"),
        .init(name: "rmdir", keys: [], summary: "rmdir: PATH in bpffs (empty directories only)"),
        .init(name: "pin", keys: ["object", "path"], summary: "BPF_OBJ_PIN"),
        .init(name: "unpin", keys: [], summary: "unpin: PATH — unlink a pin"),
        .init(name: "obj_get", keys: ["path", "as"], summary: "BPF_OBJ_GET: open a pinned object as a new name"),
        .init(name: "link", keys: ["name", "program", "device", "mode", "target", "function", "cookie"], summary: "BPF_LINK_CREATE (XDP: to a device; tracing/extension: to its target, or a new target)"),
        .init(name: "link_update", keys: ["link", "program", "expected"], summary: "BPF_LINK_UPDATE (expected: BPF_F_REPLACE)"),
        .init(name: "link_detach", keys: [], summary: "link_detach: NAME — BPF_LINK_DETACH"),
        .init(name: "libxdp_attach", keys: ["program", "run_prio", "chain_call_actions"], summary: "libxdp multi-program attach (a list)"),
        .init(name: "libxdp_detach", keys: [], summary: "libxdp_detach: [NAMES]"),
        .init(name: "stats", keys: ["as"], summary: "BPF_ENABLE_STATS: on|off, or {as: NAME} for one more holder (close NAME)"),
        .init(name: "set_var", keys: ["program", "index", "value"], summary: "set a program variable from user space"),
        .init(name: "rcu_barrier", keys: [], summary: "wait for every deferred free (bare word)"),
    ]

    public static let expectations: [VocabularyEntry] = [
        .init(name: "errno", keys: [], summary: "the step fails with this errno (without it, a failing step is a failure)"),
        .init(name: "verdicts", keys: verdictNames, summary: "packets: counts per XDP action"),
        .init(name: "invalid", keys: [], summary: "packets: verdicts that are not XDP actions"),
        .init(name: "retval", keys: [], summary: "test_run: the return value"),
        .init(name: "data_out_size", keys: [], summary: "test_run: bytes of the packet after the run"),
        .init(name: "counters", keys: [], summary: "kernel-wide step counters {name: n}"),
        .init(name: "run_count", keys: [], summary: "{program: n} runs counted while stats are on"),
        .init(name: "run_time_ns", keys: [], summary: "{program: nonzero|0}"),
        .init(name: "misses", keys: [], summary: "{program: n} recursion misses"),
        .init(name: "refcnt", keys: [], summary: "{name: n} a program's, map's or link's reference count (the fd's own included)"),
        .init(name: "usercnt", keys: [], summary: "{map: n} user references"),
        .init(name: "live_objects", keys: [], summary: "objects alive after a barrier"),
        .init(name: "pending_free", keys: [], summary: "objects unpublished but waiting for a grace period (no barrier)"),
        .init(name: "next", keys: [], summary: "chain_get: the program in the slot"),
        .init(name: "value", keys: [], summary: "map_lookup / next_id: a program name (by ID) or a number"),
        .init(name: "ids", keys: [], summary: "[names]: IDs nonzero, distinct and ascending in this order"),
        .init(name: "vars", keys: [], summary: "{program: {index: value}}"),
        .init(name: "link_program", keys: [], summary: "{link: program} the program a link holds"),
        .init(name: "dispatcher", keys: [], summary: "[programs] the kernel's bpf_dispatcher targets"),
        .init(name: "static_key", keys: ["enabled", "sites"], summary: "{map: {enabled, sites}} a static key's state"),
        .init(name: "attached", keys: [], summary: "{device: program|none} what the device runs"),
        .init(name: "pins", keys: [], summary: "[paths] every pinned path"),
        .init(name: "audit", keys: [], summary: "audit: clean — every reference accounted for by a holder, refcounts and usercnt equal to their holders, IDs only for live objects, no unbreakable cycle (after a barrier)"),
    ]

    public static var stepNames: [String] { steps.map(\.name) }
    public static var operationNames: [String] { operations.map(\.name) }
    public static var expectationNames: [String] { expectations.map(\.name) }

    /// The vocabulary as text (for `bpflab scenarios --vocabulary` and the README).
    public static var text: String {
        func section(_ title: String, _ es: [VocabularyEntry]) -> String {
            title + "\n" + es.map { "  \($0.name)" + ($0.keys.isEmpty ? "" : " {\($0.keys.joined(separator: ", "))}") + " — \($0.summary)" }.joined(separator: "\n")
        }
        return [
            "top level: " + topLevel.joined(separator: ", "),
            "maps: {" + mapKeys.joined(separator: ", ") + "}, type " + mapTypes.joined(separator: "|"),
            "programs: {" + programKeys.joined(separator: ", ") + "}; builtin " + builtins.joined(separator: "|") + "; flags " + programFlags.joined(separator: ", ") + "; engine " + ProgramEngine.allCases.map(\.rawValue).joined(separator: "|") + "; traces kind " + traceKinds.joined(separator: "|"),
            section("steps:", steps), section("operations:", operations), section("expectations:", expectations),
        ].joined(separator: "\n")
    }
}
