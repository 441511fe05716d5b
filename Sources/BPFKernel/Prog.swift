// Prog.swift — the program object and its lifetime.
//
// Mirrors: include/linux/filter.h (struct bpf_prog), include/linux/bpf.h
// (struct bpf_prog_aux), kernel/bpf/syscall.c (bpf_prog_load, bpf_prog_alloc_id,
// bpf_prog_free_id, bpf_prog_inc/add/sub/inc_not_zero/put, __bpf_prog_put,
// __bpf_prog_put_noref, __bpf_prog_put_rcu), kernel/bpf/core.c (bpf_prog_free,
// __bpf_prog_free, bpf_prog_calc_tag).
//
// The mechanism, its rules and why: BPFKernel.docc/programs-and-their-lifetime.md (the DocC article "Programs and their lifetime").
import CBPFShims
import BPFPrograms
import Synchronization
import BPFInstructions

/// enum bpf_prog_type (the ones the lab models).
public enum ProgType: UInt32, Sendable, CaseIterable {
    case socketFilter = 1
    case schedCls = 3
    case xdp = 6
    case rawTracepoint = 17
    case tracing = 26
    case ext = 28

    /// bpftool's spelling.
    public var name: String {
        switch self {
        case .socketFilter: return "socket_filter"
        case .schedCls: return "sched_cls"
        case .xdp: return "xdp"
        case .rawTracepoint: return "raw_tracepoint"
        case .tracing: return "tracing"
        case .ext: return "ext"
        }
    }
}

/// enum bpf_attach_type (the ones the lab models).
public enum AttachType: UInt32, Sendable, CaseIterable {
    case unspecified = 0
    case traceFentry = 24
    case traceFexit = 25
    case modifyReturn = 26
    case xdp = 37
}

/// prog_flags accepted by BPF_PROG_LOAD (include/uapi/linux/bpf.h, 2019 numbering).
/// Note: the RFC's BPF_F_CHAIN_CALLS took bit 4, which mainline later gave to
/// BPF_F_SLEEPABLE; the lab keeps the RFC's numbering.
public struct ProgLoadFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let strictAlignment = ProgLoadFlags(rawValue: 1 << 0)
    public static let anyAlignment = ProgLoadFlags(rawValue: 1 << 1)
    public static let testRndHi32 = ProgLoadFlags(rawValue: 1 << 2)
    public static let testStateFreq = ProgLoadFlags(rawValue: 1 << 3)
    /// BPF_F_CHAIN_CALLS: BPF_PROG_RUN takes the chain-call loop for this program.
    public static let chainCalls = ProgLoadFlags(rawValue: 1 << 4)
    /// BPF_F_XDP_HAS_FRAGS: the program handles multi-buffer frames (part of the
    /// prog-array owner rule).
    public static let xdpHasFrags = ProgLoadFlags(rawValue: 1 << 5)
    public static let all: ProgLoadFlags = [.strictAlignment, .anyAlignment, .testRndHi32, .testStateFreq, .chainCalls, .xdpHasFrags]
}

/// A native program body: the stand-in for the JIT's output.
public struct ProgBody: Sendable {
    public let symbol: String
    public let fn: cbpf_func_t

    public init(symbol: String, fn: cbpf_func_t) {
        self.symbol = symbol
        self.fn = fn
    }

    public static let xdpPass = ProgBody(symbol: "bpfp_xdp_pass", fn: bpfp_xdp_pass)
    public static let xdpDrop = ProgBody(symbol: "bpfp_xdp_drop", fn: bpfp_xdp_drop)
    public static let xdpTx = ProgBody(symbol: "bpfp_xdp_tx", fn: bpfp_xdp_tx)
    public static let xdpAborted = ProgBody(symbol: "bpfp_xdp_aborted", fn: bpfp_xdp_aborted)
    /// Data block: u32 ifindex.
    public static let xdpRedirect = ProgBody(symbol: "bpfp_xdp_redirect", fn: bpfp_xdp_redirect)
    /// Data block: u32 value to return.
    public static let retConst = ProgBody(symbol: "bpfp_ret_const", fn: bpfp_ret_const)
    /// Data block: u32 modulus; returns the UDP source port modulo it.
    public static let xdpPortMod = ProgBody(symbol: "bpfp_xdp_port_mod", fn: bpfp_xdp_port_mod)
    /// Data block: bpfp_helper_data.
    public static let callHelper = ProgBody(symbol: "bpfp_call_helper", fn: bpfp_call_helper)
    /// libxdp's dispatcher. Data block: bpfp_xdp_dispatcher_config (XDPDispatcher.swift).
    public static let xdpDispatcher = ProgBody(symbol: "bpfp_xdp_dispatcher", fn: bpfp_xdp_dispatcher)
    /// An empty libxdp placeholder (returns 31).
    public static let xdpDispatcherStub = ProgBody(symbol: "bpfp_xdp_dispatcher_stub", fn: bpfp_xdp_dispatcher_stub)
}

/// A global function of a native program besides its main function: a placeholder that an
/// extension can replace, or a function a trampoline can wrap. Its text pointer is written
/// into the main data block at `ProgLoadAttr.functionTableOffset` (in declaration order).
public struct ProgFunction: Sendable {
    public var name: String
    public var body: ProgBody
    public var data: [UInt8]
    public init(name: String, body: ProgBody, data: [UInt8] = []) {
        self.name = name
        self.body = body
        self.data = data
    }
}

/// The BPF_PROG_LOAD attributes the lab understands.
public struct ProgLoadAttr: Sendable {
    /// Raw enum bpf_prog_type value (an unknown one is EINVAL).
    public var progType: UInt32
    public var expectedAttachType: UInt32
    /// The body; nil is a program with no instructions (EINVAL).
    public var body: ProgBody?
    /// The body's data block.
    public var data: [UInt8]
    public var name: String
    public var progFlags: UInt32
    public var license: String
    /// Map fds the program uses (the fd_array / ld_imm64 map references).
    public var mapFDs: [Int32]
    /// Whether the body is "JIT output" (tail calls by jumping) or interpreted.
    public var jited: Bool
    /// A step program instead of a native body (StepProgram.swift).
    public var steps: StepProgram?
    /// attach_prog_fd: for extension and tracing programs, the program they attach to.
    public var attachProgFD: Int32 = -1
    /// attach_btf_id's stand-in: the target's global function (nil: its main function).
    public var attachFunc: String?
    /// Global functions of a native body (see ProgFunction).
    public var functions: [ProgFunction] = []
    /// Where in the data block the functions' text pointers go (required with `functions`).
    public var functionTableOffset: Int?
    /// A bytecode program: its instructions (struct bpf_insn[]), run by the interpreter
    /// (Bytecode.swift). Map references are ld_imm64 with the map fd pseudo-sources.
    public var insns: [BPFInsn]?
    /// A bytecode program's static keys: entry k is the fd of the static-key map behind
    /// local key id k (JA_CFG's key field, the kfunc's first argument) — seed 000's
    /// "(local_id → map) mappings" passed at load.
    public var staticKeyFDs: [Int32] = []
    /// A step program compiled to instructions and run by the interpreter
    /// (StepCompiler.swift) instead of a native step body. Needs `jited: false`.
    public var compileSteps = false
    /// A step program generated as x86-64 machine code (MachineStepJIT.swift: the lab's
    /// "machine" engine) instead of run by the native C step body. Needs `jited: true`.
    public var machineCode = false

    public init(type: ProgType = .xdp, body: ProgBody?, data: [UInt8] = [], name: String = "",
                flags: ProgLoadFlags = [], expectedAttachType: AttachType = .unspecified,
                mapFDs: [Int32] = [], license: String = "GPL", jited: Bool = true) {
        self.progType = type.rawValue
        self.expectedAttachType = expectedAttachType.rawValue
        self.body = body
        self.data = data
        self.name = name
        self.progFlags = flags.rawValue
        self.license = license
        self.mapFDs = mapFDs
        self.jited = jited
    }

    /// A step program.
    public init(type: ProgType = .xdp, steps: StepProgram, name: String = "", flags: ProgLoadFlags = [],
                mapFDs: [Int32] = [], jited: Bool = true) {
        self.init(type: type, body: nil, name: name, flags: flags, mapFDs: mapFDs, jited: jited)
        self.steps = steps
    }

    /// A bytecode program (interpreted: the lab has no JIT for instructions yet).
    public init(type: ProgType = .xdp, insns: [BPFInsn], name: String = "", flags: ProgLoadFlags = [],
                expectedAttachType: AttachType = .unspecified, staticKeyFDs: [Int32] = [], license: String = "GPL") {
        self.init(type: type, body: nil, name: name, flags: flags, expectedAttachType: expectedAttachType,
                  license: license, jited: false)
        self.insns = insns
        self.staticKeyFDs = staticKeyFDs
    }

    /// A program returning `value` (any u32, valid XDP action or not).
    public static func returning(_ value: UInt32, name: String = "", type: ProgType = .xdp,
                                 flags: ProgLoadFlags = []) -> ProgLoadAttr {
        ProgLoadAttr(type: type, body: .retConst, data: withUnsafeBytes(of: value.littleEndian) { Array($0) },
                     name: name, flags: flags)
    }

    /// An extension (freplace) of `function` in the program behind `targetFD`.
    public static func `extension`(of targetFD: Int32, function: String, body: ProgBody, data: [UInt8] = [],
                                   name: String = "") -> ProgLoadAttr {
        var a = ProgLoadAttr(type: .ext, body: body, data: data, name: name)
        a.attachProgFD = targetFD
        a.attachFunc = function
        return a
    }

    /// A tracing program (fentry, fexit or fmod_ret) on `function` (nil: main) of the
    /// program behind `targetFD`.
    public static func tracing(_ kind: AttachType, on targetFD: Int32, function: String? = nil,
                               body: ProgBody, data: [UInt8] = [], name: String = "") -> ProgLoadAttr {
        var a = ProgLoadAttr(type: .tracing, body: body, data: data, name: name, expectedAttachType: kind)
        a.attachProgFD = targetFD
        a.attachFunc = function
        return a
    }

    /// A tracing or extension program made of steps.
    public static func tracing(_ kind: AttachType, on targetFD: Int32, function: String? = nil,
                               steps: StepProgram, name: String = "") -> ProgLoadAttr {
        var a = ProgLoadAttr(type: kind == .unspecified ? .ext : .tracing, steps: steps, name: name)
        a.expectedAttachType = kind.rawValue
        a.attachProgFD = targetFD
        a.attachFunc = function
        return a
    }
}

/// Largest data block accepted: BPF_COMPLEXITY_LIMIT_INSNS (1M) instructions of 8 bytes.
public let progMaxDataBytes = 1_000_000 * 8

/// The lifecycle state of a kernel object, as seen from Swift.
public enum ObjectState: UInt8, Sendable {
    case live = 0, dying = 1, freed = 2
}

public final class BPFProg: @unchecked Sendable, CustomStringConvertible {
    public let kernel: Kernel
    /// The read-only hot record (struct bpf_prog).
    public let raw: UnsafeMutablePointer<cbpf_prog>
    /// The writable side (struct bpf_prog_aux).
    public let aux: UnsafeMutablePointer<cbpf_prog_aux>
    public let name: String
    public let type: ProgType
    public let expectedAttachType: UInt32
    public let body: ProgBody
    public let flags: ProgLoadFlags
    public let license: String
    public let jited: Bool
    /// Generated as x86-64 machine code (the machine engine, MachineStepJIT.swift).
    public let machineCode: Bool
    /// The patchable entry of generated function `f` (0: main), if it is generated.
    func machineEntry(function f: Int) -> MachineEntry? { stepImage?.machineEntries[f] }
    /// Serial number, unique per Kernel (IDs are reused cyclically; serials never).
    public let serial: UInt64
    /// Maps the program uses; it holds one `refcnt` reference on each (not `usercnt`).
    public let usedMaps: [BPFMap]
    let stats: UnsafeMutablePointer<cbpf_prog_stats>
    let dataBlock: UnsafeMutableRawPointer
    let textBlock: UnsafeMutableRawPointer
    let dataBytes: Int
    let state = Atomic<UInt8>(ObjectState.live.rawValue)
    private var selfRetain: Unmanaged<BPFProg>?
    /// The program an extension or tracing program was loaded against (held: one
    /// reference, which moves into its first link, or is put when this program is freed —
    /// the target never holds its extensions). nil once a link took it.
    public var dstProg: BPFProg? { dstLock.withLock { dstStorage } }
    /// dst_prog itself (guarded by dstLock).
    private var dstStorage: BPFProg?
    /// The function of `dstProg` it attaches to (0: main, n: global function n).
    public private(set) var dstFunc = 0
    /// A tracing program's kernel-function target (attach_btf_id in vmlinux): kept for
    /// the program's life, so it can be linked again after its link is gone.
    public private(set) var dstKernelFunc: KernelFunction?
    /// saved_dst_prog_type: the target's type, kept after dst_prog moved into a link.
    public private(set) var savedDstType: ProgType?
    /// Serialises the move of dst_prog into a link (aux->dst_mutex).
    let dstLock = KLock()

    /// bpf_tracing_prog_attach's hand-over: the load-time target and its reference move
    /// to the caller (the new link); dst_prog is then empty, so a later link must name its
    /// target. nil when already taken (or never set).
    func takeDstProg() -> (prog: BPFProg, function: Int)? {
        dstLock.withLock {
            guard let d = dstStorage else { return nil }
            dstStorage = nil
            return (d, dstFunc)
        }
    }

    /// Gives a taken target back (the link that took it failed before it was published).
    func returnDstProg(_ d: BPFProg) {
        dstLock.withLock { dstStorage = d }
    }
    /// This program's functions: [0] main (its own record), then its global functions.
    public private(set) var functions: [(name: String, text: UnsafeMutablePointer<cbpf_text>)] = []
    /// Extra work run after the grace period, before the free (e.g. trampoline puts).
    var onFree: [() -> Void] = []
    /// Prog-array slots holding this program (the freplace interlock reads it).
    let tailCallMemberships = Atomic<Int>(0)
    /// Serialises the freplace/prog-array interlock (the kernel's aux->ext_mutex).
    let extLock = KLock()
    /// Whether an extension (freplace) is attached to one of this program's subprograms.
    var extensionAttached: Bool { extensionCount.load(ordering: .acquiring) > 0 }
    let extensionCount = Atomic<Int>(0)
    /// The image of a step or bytecode program (nil for a native body).
    var stepImage: ProgImage?
    /// A bytecode program's instructions, as loaded and as run (nil for other programs).
    public private(set) var bytecode: BytecodeInfo?
    /// A compiled step program's variables (its .data map), nil otherwise.
    var compiledVars: ArrayMap?
    /// Extra text of a native program with global functions.
    var functionImage: ProgImage?

    private init(kernel: Kernel, attr: ProgLoadAttr, type: ProgType, body: ProgBody, maps: [BPFMap]) {
        self.kernel = kernel
        self.name = attr.name
        self.type = type
        self.expectedAttachType = attr.expectedAttachType
        self.body = body
        self.flags = ProgLoadFlags(rawValue: attr.progFlags)
        self.license = attr.license
        self.jited = attr.jited
        self.machineCode = attr.machineCode
        self.serial = kernel.serials.add(1, ordering: .relaxed).newValue
        self.usedMaps = maps

        raw = allocRecord(bytes: MemoryLayout<cbpf_prog>.stride).bindMemory(to: cbpf_prog.self, capacity: 1)
        aux = allocRecord(bytes: MemoryLayout<cbpf_prog_aux>.stride).bindMemory(to: cbpf_prog_aux.self, capacity: 1)
        let statsBytes = MemoryLayout<cbpf_prog_stats>.stride * Int(CBPF_NR_CPUS)
        stats = allocRecord(bytes: statsBytes).bindMemory(to: cbpf_prog_stats.self, capacity: Int(CBPF_NR_CPUS))
        dataBytes = max(attr.data.count, 16)
        // The data block with its text header in front (cbpf_text_hdr).
        textBlock = allocRecord(bytes: textBlockBytes(dataBytes))
        // A generated function is called past its patchable NOP by a trampoline (its `orig`).
        dataBlock = initTextHeader(textBlock, orig: attr.machineCode
            ? unsafeBitCast(unsafeBitCast(body.fn, to: UnsafeRawPointer.self) + 5, to: cbpf_func_t.self) : body.fn)
        attr.data.withUnsafeBytes { src in
            if let b = src.baseAddress { dataBlock.copyMemory(from: b, byteCount: src.count) }
        }

        var f: UInt32 = 0
        if attr.jited { f |= UInt32(CBPF_PROG_F_JITED) }
        if flags.contains(.chainCalls) { f |= UInt32(CBPF_PROG_F_CHAIN_CALLS) }
        if type == .ext { f |= UInt32(CBPF_PROG_F_IS_EXT) }
        let tag = progTag(symbol: body.symbol, data: attr.data)

        raw.pointee.bpf_func = body.fn
        raw.pointee.jit_entry = attr.machineCode ? UnsafeRawPointer(unsafeBitCast(body.fn, to: UnsafeRawPointer.self)) : nil
        raw.pointee.insnsi = UnsafeRawPointer(dataBlock)
        raw.pointee.aux = aux
        raw.pointee.stats = stats
        raw.pointee.type = type.rawValue
        raw.pointee.expected_attach_type = attr.expectedAttachType
        raw.pointee.flags = f
        raw.pointee.len = UInt32(attr.data.count)
        withUnsafeMutableBytes(of: &raw.pointee.tag) { dst in
            for i in 0..<8 { dst[i] = tag[i] }
        }
        raw.pointee.magic = CBPF_PROG_MAGIC

        aux.pointee.refcnt = 1
        aux.pointee.used_map_cnt = UInt32(maps.count)
        aux.pointee.prog = raw
        aux.pointee.load_time = cbpf_ktime_get_boottime_ns()
        withUnsafeMutableBytes(of: &aux.pointee.name) { dst in
            for (i, c) in attr.name.utf8.prefix(Int(CBPF_OBJ_NAME_LEN) - 1).enumerated() { dst[i] = c }
        }
        aux.pointee.magic = CBPF_AUX_MAGIC
        aux.pointee.owner = UnsafeMutableRawPointer(Unmanaged.passUnretained(self).toOpaque())
    }

    /// bpf_prog_load's core: validates `attr`, builds the records, publishes an ID.
    /// `maps` are the resolved map fds; the program takes its own reference on each.
    /// Returns the program holding one reference (the caller's): balance with `put()`.
    /// On error nothing has changed.
    static func load(kernel: Kernel, attr: ProgLoadAttr, maps: [BPFMap], arrays: [Int32: ProgArray] = [:],
                     target: BPFProg? = nil, keys: [Int32: StaticKeyMap] = [:],
                     insnMaps: [Int32: BPFMap] = [:]) throws -> BPFProg {
        let unknown = attr.progFlags & ~ProgLoadFlags.all.rawValue
        if unknown != 0 {
            throw fail(.EINVAL, "unknown prog_flags 0x\(String(unknown, radix: 16))")
        }
        if [attr.body != nil, attr.steps != nil, attr.insns != nil].filter({ $0 }).count > 1 {
            throw fail(.EINVAL, "a program has one of a native body, steps or instructions, not several")
        }
        if attr.insns != nil && attr.jited {
            throw fail(.ENOTSUPP, "the lab has no JIT for instructions yet: bytecode programs are interpreted (load with jited: false)")
        }
        let stepsBody = attr.jited ? ProgBody(symbol: "bpfp_step_jit", fn: bpfp_step_jit)
                                   : ProgBody(symbol: "bpfp_step_interp", fn: bpfp_step_interp)
        guard let body = attr.insns != nil || attr.compileSteps ? interpreterBody : attr.steps != nil ? stepsBody : attr.body else {
            throw fail(.EINVAL, "program has no instructions (insn_cnt is 0)")
        }
        if attr.data.count > progMaxDataBytes {
            throw fail(.E2BIG, "program data block of \(attr.data.count) bytes exceeds \(progMaxDataBytes)")
        }
        guard let type = ProgType(rawValue: attr.progType) else {
            throw fail(.EINVAL, "unknown program type \(attr.progType)")
        }
        try checkObjName(attr.name)
        if attr.license.isEmpty {
            throw fail(.EINVAL, "license string is empty")
        }
        let attachTarget = try checkAttachTarget(kernel: kernel, type: type, expectedAttachType: attr.expectedAttachType,
                                                 attachFunc: attr.attachFunc, target: target)
        if attr.machineCode && attr.steps == nil && !(sameFunc(attr.body?.fn, ProgBody.xdpDispatcher.fn) && !attr.functions.isEmpty) {
            throw fail(.ENOTSUPP, "the machine engine generates step programs and libxdp's dispatcher; '\(attr.name)' is neither")
        }
        if !attr.functions.isEmpty {
            if attr.steps != nil { throw fail(.EINVAL, "a step program declares its functions as subprograms") }
            guard let off = attr.functionTableOffset, off >= 0, off % 8 == 0,
                  off + 8 * attr.functions.count <= attr.data.count else {
                throw fail(.EINVAL, "function table offset must be 8-byte aligned and inside the data block")
            }
            for f in attr.functions { try checkObjName(f.name) }
            if Set(attr.functions.map(\.name)).count != attr.functions.count {
                throw fail(.EINVAL, "two global functions share a name")
            }
        }
        var unique: [BPFMap] = []
        for m in maps + arrays.values.map({ $0 as BPFMap }) + keys.values.map({ $0 as BPFMap }) where !unique.contains(where: { $0 === m }) { unique.append(m) }
        // check_map_prog_compatibility: a program using a prog array must match its owner.
        // An extension is compared as its target's type (resolve_prog_type).
        let resolvedType = type == .ext ? (target?.type ?? type) : type
        for case let a as ProgArray in unique {
            try a.checkCompatible(type: resolvedType, jited: attr.jited, machine: attr.machineCode,
                                  frags: attr.progFlags & ProgLoadFlags.xdpHasFrags.rawValue != 0, name: attr.name)
        }
        // fixup_call_args: "tail_calls are not allowed in non-JITed programs with
        // bpf-to-bpf calls" — the interpreter cannot carry the tail-call counter across frames.
        if let sp = attr.steps, !attr.jited, sp.hasTailCall, sp.hasBPFToBPFCall {
            throw fail(.EINVAL, "tail_calls are not allowed in non-JITed programs with bpf-to-bpf calls")
        }
        var image: ProgImage?
        var loadAttr = attr
        var bytecode: BytecodeInfo?
        var insnMaps = insnMaps
        // A step program compiled to instructions: its variables are a .data map of its own.
        var varsMap: BPFMap?
        if attr.compileSteps, let sp = attr.steps {
            if attr.jited { throw fail(.ENOTSUPP, "compiled step programs run on the interpreter (jited: false)") }
            try ProgImage.verify(sp)
            let compiled = try StepCompiler.compile(sp, counterSlot: { try kernel.counterIndex($0) }, varsFD: nil)
            if compiled.usesVars {
                let m = try BPFMap.create(kernel: kernel, attr: MapCreateAttr(type: .array, valueSize: UInt32(max(1, sp.vars) * 8), maxEntries: 1, name: ".data"))
                varsMap = m
                insnMaps[StepCompiler.varsPlaceholder] = m
                unique.append(m)
            }
            for fd in compiled.keyFDs where keys[fd] == nil { throw fail(.EINVAL, "fd \(fd) is not a static-key map") }
            for (fd, a) in arrays { insnMaps[fd] = a }
            for (fd, k) in keys { insnMaps[fd] = k }
            loadAttr.insns = compiled.insns
            loadAttr.staticKeyFDs = compiled.keyFDs
            loadAttr.steps = nil
        }
        defer { varsMap?.putWithUref() }  // the creator's references: the program holds its own
        if let insns = loadAttr.insns {
            // The verifier's environment: an extension is checked as its target's type.
            let env = VerifierEnvironment.program(resolvedType)
            func mapFor(_ i: BPFInsn) -> BPFMap? {
                switch i.src {
                case Pseudo.mapFD, Pseudo.mapValue: return insnMaps[i.imm]
                case Pseudo.mapIndex, Pseudo.mapIndexValue:
                    guard i.imm >= 0 && Int(i.imm) < attr.mapFDs.count else { return nil }
                    return insnMaps[attr.mapFDs[Int(i.imm)]]
                default: return nil
                }
            }
            let v = try Verifier.check(insns, environment: env, jited: false) { src, imm in
                mapFor(BPFInsn(code: 0x18, src: src, imm: imm))
            }
            var keyMaps: [Int: StaticKeyMap] = [:]
            for (k, fd) in loadAttr.staticKeyFDs.enumerated() {
                guard k < Int(BPFI_MAX_KEYS) else { throw fail(.E2BIG, "at most \(BPFI_MAX_KEYS) static keys per program") }
                keyMaps[k] = keys[fd]
            }
            let (img, xlated) = try ProgImage.bytecode(v, counters: kernel.counters, usedMaps: unique, mapFor: mapFor,
                                                       keys: keyMaps, raw: false)
            image = img
            loadAttr.data = img.mainBlock
            bytecode = BytecodeInfo(original: insns, xlated: xlated, functionStarts: v.functionStarts, log: v.log)
        }
        if let sp = loadAttr.steps, attr.machineCode {
            guard attr.jited else { throw fail(.EINVAL, "the machine engine is a JIT: load with jited: true") }
            try ProgImage.verify(sp)
            let img = ProgImage()
            img.specialised = try MachineStepJIT.build(sp, kernel: kernel, arrays: arrays, keys: keys, image: img)
            image = img
        } else if let sp = loadAttr.steps {
            let img = try ProgImage.build(sp, kernel: kernel, arrays: arrays, keys: keys, jited: attr.jited)
            image = img
            loadAttr.data = img.mainBlock
        }
        // Global functions of a native body: their texts, and the table the body reads.
        var funcImage: ProgImage?
        if attr.machineCode, !attr.functions.isEmpty, let off = loadAttr.functionTableOffset {
            // libxdp's dispatcher, generated: direct calls of placeholders freplace patches.
            let img = ProgImage()
            do { img.specialised = try MachineLibXDP.build(data: &loadAttr.data, functions: attr.functions, tableOffset: off, image: img) } catch {
                img.release(kernel: kernel)  // the slot texts it had allocated
                throw error
            }
            image = img
        } else if !attr.functions.isEmpty, let off = loadAttr.functionTableOffset {
            let img = ProgImage()
            for f in attr.functions {
                let t = img.allocFunction(body: f.body.fn, data: f.data)
                img.functions.append((f.name, t))
                withUnsafeBytes(of: UInt(bitPattern: t)) { loadAttr.data.replaceSubrange(off + 8 * (img.functions.count - 1) ..< off + 8 * img.functions.count, with: $0) }
            }
            funcImage = img
        }

        let prog = BPFProg(kernel: kernel, attr: loadAttr, type: type, body: image?.specialised ?? body, maps: unique)
        prog.stepImage = image
        prog.functionImage = funcImage
        prog.bytecode = bytecode
        prog.compiledVars = varsMap as? ArrayMap
        if let bytecode {
            let tag = bytecodeTag(bytecode.original)
            withUnsafeMutableBytes(of: &prog.raw.pointee.tag) { dst in for i in 0..<8 { dst[i] = tag[i] } }
        }
        prog.functions = [(attr.name, UnsafeMutablePointer(OpaquePointer(prog.raw)))] + ((image ?? funcImage)?.functions ?? [])
        if let main = image?.machineEntries[0] {
            do { try main.bind(data: UnsafeRawPointer(prog.dataBlock)) } catch {
                prog.releaseRecords()
                throw fail(.ENOMEM, "cannot finish the generated entry: \(error)")
            }
        }
        do {
            let id = try kernel.progIDR.alloc(prog)  // bpf_prog_alloc_id: last fallible step
            cbpf_store_release_u32(cbpf_prog_aux_id(prog.aux), id)
        } catch {
            prog.releaseRecords()
            throw error
        }
        for m in unique { m.inc() }  // bpf_prog_put → bpf_free_used_maps balances these
        switch attachTarget {
        case let .prog(target, function)?:
            target.inc()  // dst_prog: moves into the first link, or is put when this program is freed
            prog.dstStorage = target
            prog.dstFunc = function
            prog.savedDstType = target.type
        case let .kernel(kf)?:
            prog.dstKernelFunc = kf
        case nil:
            break
        }
        if let image {
            for (site, key) in image.staticSites { key.key.register(site) }
            if !image.staticSites.isEmpty {
                let sites = image.staticSites
                prog.onFree.append { for (site, key) in sites { key.key.unregister(site) } }
            }
            for (site, key) in image.patchSites { key.key.register(patched: site) }
            if !image.patchSites.isEmpty {
                let sites = image.patchSites
                prog.onFree.append { for (site, key) in sites { key.key.unregister(patched: site) } }
            }
        }
        for case let a as ProgArray in unique { a.claimOwner(type: resolvedType, jited: attr.jited, machine: attr.machineCode, frags: prog.hasFrags) }
        if let image {
            for (desc, arr) in image.pokes { arr.trackPoke(desc, owner: prog) }  // prog_array_map_poke_track
            for (poke, arr) in image.machinePokes { arr.trackPoke(poke, owner: prog) }
            if !image.pokes.isEmpty || !image.machinePokes.isEmpty {
                let arrs = image.pokes.map(\.array) + image.machinePokes.map(\.array)
                prog.onFree.append { for a in arrs { a.untrackPoke(owner: prog) } }
            }
        }
        prog.selfRetain = Unmanaged.passRetained(prog)
        kernel.registerObject(prog.serial, prog)
        kernel.liveProgs.add(1, ordering: .relaxed)
        kernel.log("prog", prog.name, prog.serial, prog.id, .created)
        kernel.log("prog", prog.name, prog.serial, prog.id, .published)
        return prog
    }

    /// bpf_check_attach_target, in brief: what an extension or tracing program may attach
    /// to — a function of a loaded program (`target`), or for tracing programs without
    /// one, a kernel function named by `attachFunc` (attach_btf_id in vmlinux). nil for
    /// other program types. Used at load and when an extension's link names a new target.
    static func checkAttachTarget(kernel: Kernel, type: ProgType, expectedAttachType: UInt32, attachFunc: String?,
                                  target: BPFProg?) throws -> TrampolineTarget? {
        switch type {
        case .ext, .tracing:
            // bpf_check_attach_target: "Can attach to only JITed progs" — a trampoline or an
            // extension patches the target's machine code, which an interpreted program has not.
            if let target, !target.jited {
                throw fail(.EINVAL, "can attach only to JIT-ed programs; '\(target.name)' is interpreted")
            }
            if type == .ext {
                guard let target else {
                    throw fail(.EINVAL, "extension programs need attach_prog_fd (the program whose function they replace)")
                }
                if target.type == .ext {
                    throw fail(.EINVAL, "cannot attach an ext program to another ext program ('\(target.name)')")
                }
                if expectedAttachType != AttachType.unspecified.rawValue {
                    throw fail(.EINVAL, "extension programs take no expected attach type")
                }
                guard let fname = attachFunc else {
                    throw fail(.EINVAL, "an extension names the global function it replaces")
                }
                guard let i = target.functionIndex(fname), i > 0 else {
                    throw fail(.EINVAL, "'\(target.name)' has no global function '\(fname)' to replace")
                }
                return .prog(target, function: i)
            }
            let kinds: [UInt32] = [AttachType.traceFentry.rawValue, AttachType.traceFexit.rawValue, AttachType.modifyReturn.rawValue]
            guard kinds.contains(expectedAttachType) else {
                throw fail(.EINVAL, "tracing programs attach as fentry, fexit or fmod_ret (expected_attach_type \(expectedAttachType))")
            }
            let modifies = expectedAttachType == AttachType.modifyReturn.rawValue
            guard let target else {
                // A kernel function, found by name (the kernel: by BTF id in vmlinux).
                guard let fname = attachFunc else {
                    throw fail(.EINVAL, "tracing programs need attach_prog_fd or a kernel function (attach_btf_id)")
                }
                guard let kf = kernel.kernelFunctions[fname] else {
                    throw fail(.EINVAL, "no kernel function '\(fname)' to attach to (the lab has \(kernel.kernelFunctionNames.joined(separator: ", ")))")
                }
                if modifies && !kf.errorInjectable {
                    throw fail(.EINVAL, "\(fname)() is not modifiable (fmod_ret needs a function marked ALLOW_ERROR_INJECTION)")
                }
                return .kernel(kf)
            }
            if target.type == .tracing {
                throw fail(.EINVAL, "cannot attach a tracing program to another tracing program ('\(target.name)')")
            }
            if modifies {
                throw fail(.EINVAL, "can't modify return codes of BPF programs ('\(target.name)')")
            }
            guard let fname = attachFunc else { return .prog(target, function: 0) }
            guard let i = target.functionIndex(fname) else {
                throw fail(.EINVAL, "'\(target.name)' has no function '\(fname)'")
            }
            return .prog(target, function: i)
        default:
            if target != nil || attachFunc != nil {
                throw fail(.EINVAL, "only extension and tracing programs take attach_prog_fd")
            }
            return nil
        }
    }

    /// The index of function `name` (0 for the main function's own name).
    public func functionIndex(_ name: String) -> Int? {
        functions.firstIndex { $0.name == name }
    }

    /// The program whose hot record is `p`. `p` must be live (the caller holds a
    /// reference or is inside an RCU read-side section).
    public static func fromRaw(_ p: UnsafePointer<cbpf_prog>) -> BPFProg {
        Unmanaged<BPFProg>.fromOpaque(p.pointee.aux.pointee.owner!).takeUnretainedValue()
    }

    // MARK: identity

    /// The published ID, or 0 once unpublished.
    public var id: UInt32 { cbpf_load_acquire_u32(cbpf_prog_aux_id(aux)) }
    var refcount: Refcount64 { Refcount64(cbpf_prog_aux_refcnt(aux)) }
    /// The current reference count (a snapshot; for display and tests).
    public var refcnt: UInt64 {
        ObjectState(rawValue: state.load(ordering: .acquiring)) == .freed ? 0 : refcount.value
    }
    public var objectState: ObjectState { ObjectState(rawValue: state.load(ordering: .acquiring))! }
    /// The tag as bpftool prints it (16 hex digits).
    public var tag: String {
        withUnsafeBytes(of: raw.pointee.tag) { $0.map { String(format2: $0) }.joined() }
    }
    public var hasChainCalls: Bool { flags.contains(.chainCalls) }
    public var hasFrags: Bool { flags.contains(.xdpHasFrags) }
    public var loadTimeNs: UInt64 { aux.pointee.load_time }
    public var description: String { "prog \(id) \(type.name) '\(name)'" }

    // MARK: references

    /// bpf_prog_inc: +1. The caller must already hold a reference. Balance with `put()`.
    public func inc() { add(1) }

    /// bpf_prog_add: +n. Cannot fail. Balance with n `put()`s, or `sub(n)` on an error path.
    public func add(_ n: UInt64) {
        guard objectState != .freed, refcount.addIfHeld(n) else {
            kernel.record(.incrementFromZero(kind: "prog", name: name))
            return
        }
    }

    /// bpf_prog_sub: undoes an `add` on an error path. Must not reach zero (that is a bug,
    /// reported as a violation; the object is then leaked, as the kernel's WARN_ON leaves it).
    public func sub(_ n: UInt64) {
        if refcount.subReturn(n) == 0 {
            kernel.record(.subReachedZero(kind: "prog", name: name))
        }
    }

    /// bpf_prog_inc_not_zero: +1 unless the program is already dying. Used by lookups that
    /// hold no reference yet. Throws ENOENT on a dying program. Balance with `put()`.
    public func incNotZero() throws {
        guard objectState != .freed, refcount.incNotZero() else {
            throw fail(.ENOENT, "program '\(name)' is being freed")
        }
    }

    /// bpf_prog_put: -1; the last put starts the release stages. Consumes one reference.
    public func put() {
        guard objectState != .freed else {
            kernel.record(.putOnDeadObject(kind: "prog", name: name))
            return
        }
        let old = refcount.decFromNonZero()
        if old == 0 {
            kernel.record(.putOnDeadObject(kind: "prog", name: name))
        } else if old == 1 {
            putNoref()
        }
    }

    /// __bpf_prog_put_noref: unpublish the ID, then defer the free behind a grace period.
    private func putNoref() {
        state.store(ObjectState.dying.rawValue, ordering: .releasing)
        let id = self.id
        kernel.log("prog", name, serial, id, .lastPut)
        if id != 0 {
            kernel.forgetLibXDPDispatcher(id: id)  // libxdp's view of it goes with its ID
            kernel.progIDR.remove(id)  // bpf_prog_free_id
            cbpf_store_release_u32(cbpf_prog_aux_id(aux), 0)
            kernel.log("prog", name, serial, id, .unpublished)
        }
        kernel.log("prog", name, serial, id, .deferred)
        kernel.rcu.callRCU { self.putRCU(id: id) }  // call_rcu(&aux->rcu, __bpf_prog_put_rcu)
    }

    /// __bpf_prog_put_rcu: no reader can reach the program any more. Put everything it
    /// held, then free it.
    private func putRCU(id: UInt32) {
        kernel.log("prog", name, serial, id, .afterGracePeriod)
        for i in 0..<Int(CBPF_NUM_CHAIN_SLOTS) {
            if let next = cbpf_prog_chain_xchg(aux, UInt(i), nil) {
                BPFProg.fromRaw(next).put()  // the chain slot's reference (CHAIN_ADD)
            }
        }
        for cb in onFree { cb() }
        onFree.removeAll()
        if let d = dstLock.withLock({ () -> BPFProg? in let d = dstStorage; dstStorage = nil; return d }) {
            d.put()  // the load-time reference on the target, never handed to a link
        }
        for m in usedMaps { m.put() }  // bpf_free_used_maps: balances the inc in load
        kernel.liveProgs.subtract(1, ordering: .releasing)
        state.store(ObjectState.freed.rawValue, ordering: .releasing)
        releaseRecords()
        kernel.log("prog", name, serial, id, .freed)
        kernel.unregisterObject(serial)
        let me = selfRetain
        selfRetain = nil
        me?.release()
    }

    /// bpf_prog_free: release (or, in checked mode, poison and quarantine) the records.
    private func releaseRecords() {
        stepImage?.release(kernel: kernel)
        kernel.freeRecord(UnsafeMutableRawPointer(stats), bytes: MemoryLayout<cbpf_prog_stats>.stride * Int(CBPF_NR_CPUS))
        functionImage?.release(kernel: kernel)
        kernel.freeRecord(textBlock, bytes: textBlockBytes(dataBytes))
        kernel.freeRecord(UnsafeMutableRawPointer(aux), bytes: MemoryLayout<cbpf_prog_aux>.stride)
        kernel.freeRecord(UnsafeMutableRawPointer(raw), bytes: MemoryLayout<cbpf_prog>.stride)
    }

    // MARK: stats

    /// Sum of the per-CPU stats (bpf_prog_get_stats).
    public var runStats: (runCount: UInt64, runTimeNs: UInt64, misses: UInt64) {
        guard objectState != .freed else { return (0, 0, 0) }
        var c: UInt64 = 0, n: UInt64 = 0, m: UInt64 = 0
        for i in 0..<Int(CBPF_NR_CPUS) {
            c &+= cbpf_read_once_u64(&stats[i].cnt)
            n &+= cbpf_read_once_u64(&stats[i].nsecs)
            m &+= cbpf_read_once_u64(&stats[i].misses)
        }
        return (c, n, m)
    }
}

/// bpf_obj_name_cpy: at most 15 bytes of [A-Za-z0-9_.].
func checkObjName(_ name: String) throws {
    if name.utf8.count >= Int(CBPF_OBJ_NAME_LEN) {
        throw fail(.EINVAL, "object name '\(name)' is longer than \(CBPF_OBJ_NAME_LEN - 1) bytes")
    }
    for c in name.utf8 {
        let ok = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x5f || c == 0x2e
        if !ok { throw fail(.EINVAL, "object name '\(name)' may contain only letters, digits, '_' and '.'") }
    }
}

extension String {
    /// Two lower-case hex digits.
    init(format2 b: UInt8) {
        let d = Array("0123456789abcdef")
        self = String([d[Int(b >> 4)], d[Int(b & 15)]])
    }
}

/// Bytes of a data block of `dataBytes` with its text header in front.
func textBlockBytes(_ dataBytes: Int) -> Int { MemoryLayout<cbpf_text_hdr>.size + ((dataBytes + 63) & ~63) }

/// Fills the text header at the start of `block`; returns the data block behind it.
func initTextHeader(_ block: UnsafeMutableRawPointer, orig: cbpf_func_t) -> UnsafeMutableRawPointer {
    let h = block.bindMemory(to: cbpf_text_hdr.self, capacity: 1)
    h.initialize(to: cbpf_text_hdr())
    h.pointee.orig = orig
    h.pointee.magic = CBPF_TEXT_MAGIC
    return block + MemoryLayout<cbpf_text_hdr>.size
}
