// StepProgram.swift — programs described by steps instead of C: the lab's stand-in for
// small BPF programs, and the three tail-call engines.
//
// Mirrors: what the verifier checks of a program's shape (kernel/bpf/verifier.c:
// check_subprogs — every function ends in an exit; check_cfg — no recursion; map fds in
// ld_imm64 resolved into used_maps; check_map_prog_compatibility for prog arrays;
// the poke descriptors of constant-key tail calls, bpf_jit_add_poke_descriptor), and
// kernel/bpf/core.c's interpreter vs the x86 JIT for bpf_tail_call.
//
// The mechanism, its rules and why: BPFKernel.docc/step-programs-and-the-tail-call-engines.md (the DocC article "Step programs and the tail-call engines").
import CBPFShims
import BPFMachineCode
import BPFPrograms
import Synchronization

/// One step of a step program.
public enum Step: Sendable, Equatable {
    /// counters[name] += 1 (kernel-wide named counter; see `Kernel.counter(_:)`).
    case count(String)
    /// bpf_tail_call(ctx, array, index); falls through on failure.
    case tailCall(arrayFD: Int32, index: TailIndex)
    /// Call subprogram n (bpf-to-bpf call); its return value becomes "the last value".
    case call(Int)
    /// vars[n] = value.
    case setVar(Int, UInt64)
    /// Return a constant.
    case returnConst(UInt32)
    /// Return the last call's value.
    case returnLast
    /// Return (u32)vars[n].
    case returnVar(Int)
    /// A NULL-checked indirect call through a prog array used as a function table (the
    /// review's "debugpoints"): if the slot holds a program, call it; its value becomes
    /// "the last value". Control comes back, unlike a tail call.
    case indirectCall(arrayFD: Int32, index: TailIndex)
    /// if (static_branch_unlikely(key)) last = subprogram n — a branch site of the static
    /// key behind `keyFD` (a static-key map).
    case staticBranch(keyFD: Int32, call: Int)
    /// The kfunc that flips a static key from a program (the program's one counted enable).
    case staticKeySet(keyFD: Int32, on: Bool)
    /// vars[n] = bpf_get_attach_cookie(ctx).
    case storeCookie(Int)
    /// vars[n] = the traced function's return value (an fexit program's view).
    case storeFuncRet(Int)

    /// The subprogram this step may call.
    var callee: Int? {
        switch self {
        case let .call(n), let .staticBranch(_, n): return n
        default: return nil
        }
    }

    var isReturn: Bool {
        switch self {
        case .returnConst, .returnLast, .returnVar: return true
        default: return false
        }
    }
}

/// A tail call's index: a constant (64-bit, truncated to the helper's u32 like any value
/// passed to bpf_tail_call) or read from a variable at run time.
public enum TailIndex: Sendable, Equatable {
    case constant(UInt64)
    case variable(Int)
}

/// A program made of steps.
public struct StepProgram: Sendable, Equatable {
    public var main: [Step]
    public var subprogs: [[Step]]
    /// Number of u64 variables.
    public var vars: Int
    /// Constant-index tail calls become direct jumps (JIT only).
    public var directTailCalls: Bool
    /// Names of the subprograms (all are global functions: extensions and trampolines
    /// can attach to them). Default "sub0", "sub1", …
    public var subprogNames: [String]

    public init(_ main: [Step], subprogs: [[Step]] = [], vars: Int = 8, directTailCalls: Bool = false,
                subprogNames: [String] = []) {
        self.main = main
        self.subprogs = subprogs
        self.vars = vars
        self.directTailCalls = directTailCalls
        self.subprogNames = subprogNames
    }

    /// The name of subprogram `i`.
    public func subprogName(_ i: Int) -> String { i < subprogNames.count ? subprogNames[i] : "sub\(i)" }

    private var allSteps: [Step] { main + subprogs.flatMap { $0 } }

    /// The prog-array fds its tail calls and indirect calls use.
    var arrayFDs: [Int32] {
        allSteps.compactMap {
            switch $0 {
            case let .tailCall(fd, _), let .indirectCall(fd, _): return fd
            default: return nil
            }
        }
    }

    /// Whether any step tail-calls.
    var hasTailCall: Bool { allSteps.contains { if case .tailCall = $0 { return true } else { return false } } }
    /// Whether it makes bpf-to-bpf calls (a `call` or a static branch into a subprogram).
    var hasBPFToBPFCall: Bool {
        allSteps.contains {
            switch $0 {
            case .call, .staticBranch: return true
            default: return false
            }
        }
    }

    /// The static-key map fds it uses.
    var keyFDs: [Int32] {
        allSteps.compactMap {
            switch $0 {
            case let .staticBranch(fd, _), let .staticKeySet(fd, _): return fd
            default: return nil
            }
        }
    }
}

/// Largest step program: the kernel's BPF_COMPLEXITY_LIMIT_INSNS-scale cap, scaled down.
public let stepProgramMaxSteps = 4096
/// At most this many subprograms (the kernel's BPF_MAX_SUBPROGS is 256).
public let stepProgramMaxSubprogs = 256

/// The memory a step program's body reads: blocks, variables, pokes. Freed with the program.
final class ProgImage: @unchecked Sendable {
    var allocations: [(UnsafeMutableRawPointer, Int)] = []
    var mainBlock: [UInt8] = []
    var vars: UnsafeMutablePointer<UInt64>!
    var varCount = 0
    /// Direct tail calls to register with their arrays once the program is published.
    var pokes: [(desc: UnsafeMutablePointer<bpfp_poke_desc>, array: ProgArray)] = []
    /// Static branch sites to register with their keys once the program is published.
    var staticSites: [(site: UnsafeMutablePointer<cbpf_static_site>, key: StaticKeyMap)] = []
    /// The global functions' texts (name, entry record), in order.
    var functions: [(name: String, text: UnsafeMutablePointer<cbpf_text>)] = []
    /// A specialised native body the "JIT" chose for this program, if any.
    var specialised: ProgBody?
    /// Generated machine code (the machine engine), freed with the program's records —
    /// after its grace period, as bpf_jit_binary_free.
    var machineCode: CodeBlock?
    /// Its static-branch sites, registered with their keys once the program is published.
    var patchSites: [(site: PatchSite, key: StaticKeyMap)] = []
    /// Its direct tail calls' poke descriptors, tracked by their arrays once published.
    var machinePokes: [(poke: MachineTailPoke, array: ProgArray)] = []
    /// The patchable entries of its generated functions, by function index (0: main).
    var machineEntries: [Int: MachineEntry] = [:]

    func alloc(_ bytes: Int) -> UnsafeMutableRawPointer {
        let n = max(64, (bytes + 63) & ~63)
        let p = allocRecord(bytes: n)
        allocations.append((p, n))
        return p
    }

    /// A function's text: a data block with its text header in front, and the entry record
    /// callers go through.
    func allocFunction(body: cbpf_func_t, data: [UInt8]) -> UnsafeMutablePointer<cbpf_text> {
        let block = alloc(textBlockBytes(max(16, data.count)))
        let d = initTextHeader(block, orig: body)
        data.withUnsafeBytes { if let b = $0.baseAddress { d.copyMemory(from: b, byteCount: data.count) } }
        let t = alloc(MemoryLayout<cbpf_text>.size).bindMemory(to: cbpf_text.self, capacity: 1)
        t.initialize(to: cbpf_text(func: body, data: UnsafeRawPointer(d)))
        return t
    }

    /// Frees the image with the program (poisoned and quarantined in checked mode).
    func release(kernel: Kernel) {
        for (p, n) in allocations { kernel.freeRecord(p, bytes: n) }
        allocations.removeAll()
        pokes.removeAll()
        if let b = machineCode { CodeRegion.shared?.free(b) }
        machineCode = nil
        patchSites.removeAll()
        machinePokes.removeAll()
        machineEntries.removeAll()
    }

    /// Verifies and builds. `arrays` maps each tail-call fd to its (resolved) prog array.
    static func build(_ sp: StepProgram, kernel: Kernel, arrays: [Int32: ProgArray], keys: [Int32: StaticKeyMap] = [:],
                      jited: Bool) throws -> ProgImage {
        try verify(sp)
        let img = ProgImage()
        img.varCount = max(1, sp.vars)
        img.vars = img.alloc(img.varCount * 8).bindMemory(to: UInt64.self, capacity: img.varCount)
        img.vars.initialize(repeating: 0, count: img.varCount)
        var counterIDs: [String: UInt32] = [:]
        for s in sp.main + sp.subprogs.flatMap({ $0 }) {
            if case let .count(name) = s, counterIDs[name] == nil { counterIDs[name] = try kernel.counterIndex(name) }
        }
        // Subprogram texts first, so the pointer table can be filled in.
        let table = img.alloc(max(1, sp.subprogs.count) * 8).bindMemory(to: UnsafeRawPointer?.self, capacity: max(1, sp.subprogs.count))
        let engine: cbpf_func_t = jited ? bpfp_step_jit : bpfp_step_interp
        let enc = Encoder(kernel: kernel, counters: counterIDs, arrays: arrays, keys: keys, jited: jited,
                          direct: sp.directTailCalls, table: table, nsub: sp.subprogs.count)
        for (i, steps) in sp.subprogs.enumerated() {
            let t = img.allocFunction(body: engine, data: try img.encode(steps, enc))
            img.functions.append((sp.subprogName(i), t))
            table[i] = UnsafeRawPointer(t)
        }
        img.mainBlock = try img.encode(sp.main, enc)
        // What a JIT emits for "bpf_tail_call(ctx, array, K); return R": no step loop, just
        // the tail-call sequence (indirect, or through the patched jump).
        if jited, sp.subprogs.isEmpty, sp.main.count == 2,
           case let .tailCall(fd, .constant(k)) = sp.main[0], case let .returnConst(r) = sp.main[1],
           let arr = arrays[fd] {
            var d = bpfp_tc_data()
            d.array = UnsafePointer(arr.array)
            d.index = UInt32(truncatingIfNeeded: k)
            d.fallback = r
            if sp.directTailCalls {
                d.poke = img.pokes.last!.desc
                img.specialised = ProgBody(symbol: "bpfp_tc_direct", fn: bpfp_tc_direct)
            } else {
                img.specialised = ProgBody(symbol: "bpfp_tc_jit", fn: bpfp_tc_jit)
            }
            img.mainBlock = withUnsafeBytes(of: &d) { Array($0) }
        }
        // The other two-step shapes a JIT turns into straight-line code.
        if jited, sp.main.count == 2 {
            var d = bpfp_small_data()
            d.counters = kernel.counters
            var body: ProgBody?
            switch (sp.main[0], sp.main[1]) {
            case let (.call(n), .returnLast):
                d.callee = UnsafePointer(img.functions[n].text)
                body = ProgBody(symbol: "bpfp_call_ret", fn: bpfp_call_ret)
            case let (.staticBranch(_, n), .returnConst(r)):
                d.callee = UnsafePointer(img.functions[n].text)
                d.site = UnsafePointer(img.staticSites.last!.site)
                d.fallback = r
                body = ProgBody(symbol: "bpfp_static_branch_ret", fn: bpfp_static_branch_ret)
            case let (.indirectCall(fd, .constant(k)), .returnConst(r)):
                d.array = UnsafePointer(arrays[fd]!.array)
                d.index = UInt32(truncatingIfNeeded: k)
                d.fallback = r
                body = ProgBody(symbol: "bpfp_indirect_call_ret", fn: bpfp_indirect_call_ret)
            default:
                break
            }
            if let body {
                img.specialised = body
                img.mainBlock = withUnsafeBytes(of: &d) { Array($0) }
            }
        }
        return img
    }

    /// check_subprogs / check_cfg, in the verifier's spirit: EINVAL with the reason.
    static func verify(_ sp: StepProgram) throws {
        if sp.main.isEmpty { throw fail(.EINVAL, "program has no steps") }
        if sp.subprogs.count > stepProgramMaxSubprogs {
            throw fail(.E2BIG, "\(sp.subprogs.count) subprograms; at most \(stepProgramMaxSubprogs)")
        }
        let total = sp.main.count + sp.subprogs.reduce(0) { $0 + $1.count }
        if total > stepProgramMaxSteps { throw fail(.E2BIG, "\(total) steps; at most \(stepProgramMaxSteps)") }
        if sp.vars < 0 || sp.vars > 64 { throw fail(.EINVAL, "\(sp.vars) variables; between 0 and 64") }
        for (name, steps) in [("main", sp.main)] + sp.subprogs.enumerated().map({ ("subprogram \($0.offset)", $0.element) }) {
            guard let last = steps.last, last.isReturn else {
                throw fail(.EINVAL, "\(name) does not end in a return (last insn is not an exit)")
            }
            for s in steps {
                switch s {
                case let .call(n) where n < 0 || n >= sp.subprogs.count:
                    throw fail(.EINVAL, "\(name) calls subprogram \(n), which does not exist")
                case let .setVar(n, _) where n < 0 || n >= sp.vars,
                     let .returnVar(n) where n < 0 || n >= sp.vars,
                     let .tailCall(_, .variable(n)) where n < 0 || n >= sp.vars:
                    throw fail(.EINVAL, "\(name) uses variable \(n); the program has \(sp.vars)")
                case let .count(c) where c.isEmpty || c.utf8.count > 63:
                    throw fail(.EINVAL, "counter name '\(c)' must be 1 to 63 bytes")
                case let .staticBranch(_, n) where n < 0 || n >= sp.subprogs.count:
                    throw fail(.EINVAL, "\(name)'s static branch calls subprogram \(n), which does not exist")
                case let .storeCookie(n) where n < 0 || n >= sp.vars,
                     let .storeFuncRet(n) where n < 0 || n >= sp.vars,
                     let .indirectCall(_, .variable(n)) where n < 0 || n >= sp.vars:
                    throw fail(.EINVAL, "\(name) uses variable \(n); the program has \(sp.vars)")
                default: break
                }
            }
        }
        // No recursion: the call graph must be acyclic (check_cfg's back-edge test).
        var state = [Int](repeating: 0, count: sp.subprogs.count)  // 0 new, 1 on stack, 2 done
        func visit(_ i: Int) throws {
            if state[i] == 1 { throw fail(.EINVAL, "recursive call to subprogram \(i)") }
            if state[i] == 2 { return }
            state[i] = 1
            for s in sp.subprogs[i] { if let n = s.callee { try visit(n) } }
            state[i] = 2
        }
        for s in sp.main { if let n = s.callee { try visit(n) } }
        let names = (0..<sp.subprogs.count).map(sp.subprogName)
        for n in names { try checkObjName(n) }
        if Set(names).count != names.count { throw fail(.EINVAL, "two subprograms share a name") }
    }

    /// What encoding a block needs to know.
    struct Encoder {
        let kernel: Kernel
        let counters: [String: UInt32]
        let arrays: [Int32: ProgArray]
        let keys: [Int32: StaticKeyMap]
        let jited: Bool
        let direct: Bool
        let table: UnsafeMutablePointer<UnsafeRawPointer?>
        let nsub: Int
    }

    private func encode(_ steps: [Step], _ x: Encoder) throws -> [UInt8] {
        let (kernel, counters, arrays, jited, direct, table, nsub) = (x.kernel, x.counters, x.arrays, x.jited, x.direct, x.table, x.nsub)
        let header = MemoryLayout<bpfp_step_block>.size
        let stride = MemoryLayout<bpfp_step>.stride
        var bytes = [UInt8](repeating: 0, count: header + stride * steps.count)
        bytes.withUnsafeMutableBytes { raw in
            let blk = raw.baseAddress!.assumingMemoryBound(to: bpfp_step_block.self)
            blk.pointee.counters = kernel.counters
            blk.pointee.vars = vars
            blk.pointee.subprogs = UnsafePointer(OpaquePointer(table))
            blk.pointee.nsubprogs = UInt32(nsub)
            blk.pointee.nsteps = UInt32(steps.count)
            let st = (raw.baseAddress! + header).assumingMemoryBound(to: bpfp_step.self)
            for (i, s) in steps.enumerated() {
                var e = bpfp_step()
                switch s {
                case let .count(name):
                    e.op = UInt32(BPFP_OP_COUNT); e.a = counters[name]!
                case let .tailCall(fd, idx):
                    e.op = UInt32(BPFP_OP_TAIL_CALL)
                    let arr = arrays[fd]!
                    e.array = UnsafePointer(arr.array)
                    switch idx {
                    case let .constant(v):
                        e.b = v
                        if direct && jited {
                            let d = alloc(MemoryLayout<bpfp_poke_desc>.size).bindMemory(to: bpfp_poke_desc.self, capacity: 1)
                            d.pointee.key = UInt32(truncatingIfNeeded: v)
                            d.pointee.bypass = 1
                            d.pointee.array = UnsafePointer(arr.array)
                            e.poke = d
                            pokes.append((d, arr))
                        }
                    case let .variable(n):
                        e.b = UInt64(n); e.flags = BPFP_STEP_F_INDEX_FROM_VAR
                    }
                case let .call(n):
                    e.op = UInt32(BPFP_OP_CALL); e.a = UInt32(n)
                case let .setVar(n, v):
                    e.op = UInt32(BPFP_OP_SET_VAR); e.a = UInt32(n); e.b = v
                case let .returnConst(v):
                    e.op = UInt32(BPFP_OP_RET_CONST); e.a = v
                case .returnLast:
                    e.op = UInt32(BPFP_OP_RET_LAST)
                case let .returnVar(n):
                    e.op = UInt32(BPFP_OP_RET_VAR); e.a = UInt32(n)
                case let .indirectCall(fd, idx):
                    e.op = UInt32(BPFP_OP_INDIRECT_CALL)
                    e.array = UnsafePointer(arrays[fd]!.array)
                    switch idx {
                    case let .constant(v): e.b = v
                    case let .variable(n): e.b = UInt64(n); e.flags = BPFP_STEP_F_INDEX_FROM_VAR
                    }
                case let .staticBranch(fd, n):
                    e.op = UInt32(BPFP_OP_STATIC_BRANCH); e.a = UInt32(n)
                    let site = alloc(MemoryLayout<cbpf_static_site>.size).bindMemory(to: cbpf_static_site.self, capacity: 1)
                    site.initialize(to: cbpf_static_site(enabled: 0))
                    e.ptr = UnsafeRawPointer(site)
                    staticSites.append((site, x.keys[fd]!))
                case let .staticKeySet(fd, on):
                    e.op = UInt32(BPFP_OP_KFUNC)
                    e.ptr = unsafeBitCast(staticKeySetKfunc, to: UnsafeRawPointer.self)
                    let arg = alloc(16).bindMemory(to: UInt.self, capacity: 2)
                    arg[0] = UInt(bitPattern: Unmanaged.passUnretained(x.keys[fd]!).toOpaque())
                    arg[1] = on ? 1 : 0
                    e.arg = UnsafeMutableRawPointer(arg)
                case let .storeCookie(n):
                    e.op = UInt32(BPFP_OP_STORE_COOKIE); e.a = UInt32(n)
                case let .storeFuncRet(n):
                    e.op = UInt32(BPFP_OP_STORE_FUNC_RET); e.a = UInt32(n)
                }
                st[i] = e
            }
        }
        return bytes
    }
}

/// Kernel-wide named counters that step programs count into (a stand-in for a global
/// array map of counters).
public let kernelCounterSlots = 1024

extension Kernel {
    /// The slot of counter `name`, allocated on first use. E2BIG when all are taken.
    func counterIndex(_ name: String) throws -> UInt32 {
        try bookLockCounters.withLock {
            if let i = counterNames[name] { return i }
            guard counterNames.count < kernelCounterSlots else {
                throw fail(.E2BIG, "all \(kernelCounterSlots) counters are named")
            }
            let i = UInt32(counterNames.count)
            counterNames[name] = i
            return i
        }
    }

    /// The current value of counter `name` (0 if no program counts into it).
    public func counter(_ name: String) -> UInt64 {
        guard let i = bookLockCounters.withLock({ counterNames[name] }) else { return 0 }
        return cbpf_read_once_u64(counters + Int(i))
    }

    /// Counter names by slot (what a step program's count step names).
    public var counterSlotNames: [UInt32: String] {
        bookLockCounters.withLock { Dictionary(counterNames.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a }) }
    }

    /// Resets every counter to 0.
    public func resetCounters() {
        for i in 0..<kernelCounterSlots { cbpf_write_once_u64(counters + i, 0) }
    }

    /// Every named counter and its value.
    public var counterValues: [String: UInt64] {
        let names = bookLockCounters.withLock { counterNames }
        return names.mapValues { cbpf_read_once_u64(counters + Int($0)) }
    }
}

extension BPFProg {
    /// Writes variable `index` of a step program (like updating its .data map).
    public func setVar(_ index: Int, _ value: UInt64) throws {
        if let m = compiledVars {
            guard index >= 0 && index < Int(m.valueSize) / 8 else {
                throw fail(.E2BIG, "variable \(index) is out of range; '\(name)' has \(m.valueSize / 8)")
            }
            cbpf_write_once_u64(m.valueAddress(0, offset: UInt32(index * 8)).assumingMemoryBound(to: UInt64.self), value)
            return
        }
        guard let img = stepImage else { throw fail(.EINVAL, "'\(name)' is not a step program; it has no variables") }
        guard index >= 0 && index < img.varCount else {
            throw fail(.E2BIG, "variable \(index) is out of range; '\(name)' has \(img.varCount)")
        }
        cbpf_write_once_u64(img.vars + index, value)
    }

    /// Reads variable `index` of a step program.
    public func getVar(_ index: Int) throws -> UInt64 {
        if let m = compiledVars {
            guard index >= 0 && index < Int(m.valueSize) / 8 else {
                throw fail(.E2BIG, "variable \(index) is out of range; '\(name)' has \(m.valueSize / 8)")
            }
            return cbpf_read_once_u64(m.valueAddress(0, offset: UInt32(index * 8)).assumingMemoryBound(to: UInt64.self))
        }
        guard let img = stepImage else { throw fail(.EINVAL, "'\(name)' is not a step program; it has no variables") }
        guard index >= 0 && index < img.varCount else {
            throw fail(.E2BIG, "variable \(index) is out of range; '\(name)' has \(img.varCount)")
        }
        return cbpf_read_once_u64(img.vars + index)
    }
}

extension BPF {
    /// Sets a step program's variable (the lab's "update the program's .data").
    public func progSetVar(_ fd: Int32, index: Int, value: UInt64) throws {
        let p = try fds.getProg(fd)
        defer { p.put() }  // getProg
        try p.setVar(index, value)
    }
}
