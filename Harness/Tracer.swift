// Tracer.swift — one packet walked through what the lab would run for it, step by step.
//
// The tracer reads the same records the per-packet code reads (program records, chain
// slots, prog arrays and poke descriptors, entry words, trampoline images, libxdp's
// dispatcher config, bpf_dispatcher halves, static-branch sites, run arrays) and follows
// them with the same rules as the C bodies and BPF_PROG_RUN, saying at each point what
// it found and why it went where it went. It runs beside the measured code, never inside
// it: no per-packet path carries a trace hook, so tracing costs nothing when off (the
// bench runs the same binaries either way). It changes no state — counters are reported,
// not counted; variables are read, and set_var is applied to a private copy — and leaf
// bodies (builtins, constants) are called for their value. A test checks that the
// traced verdict equals the real run's for every design and every scenario packet step.
import BPFKernel
import BPFPrograms
import CBPFShims

public struct TraceLine: Sendable, Codable, Equatable {
    public var depth: Int
    public var text: String
}

public final class PacketTracer {
    public private(set) var lines: [TraceLine] = []
    private var depth = 0
    private var tailCalls: UInt32 = 0
    private var callDepth: UInt32 = 0
    /// The run went past MAX_CALL_FRAMES: every frame returns XDP_ABORTED.
    private var faulted = false
    /// The generic-XDP program do_xdp_generic runs, and the kernel it belongs to.
    private var genericProg: UnsafePointer<cbpf_prog>?
    private weak var kernelForGeneric: Kernel?
    /// Whether values are XDP verdicts (false in a tracing program's test run).
    private var valuesAreVerdicts = true
    private var cookie: UInt64 = 0
    private var funcRet: UInt64 = 0
    /// Variables set by set_var during the walk (step block → index → value); any other
    /// is read from the program when used (only indices the load-time check allowed).
    private var varWrites: [UInt: [Int: UInt64]] = [:]
    private let counterNames: [UInt32: String]
    private var ctx: cbpf_xdp_md

    /// `frame` is the packet; `ctx` is built around a copy of it.
    public init(kernel: Kernel, frame: [UInt8], ifindex: UInt32 = 1) {
        counterNames = kernel.counterSlotNames
        ctx = cbpf_xdp_md()
        ctx.ingress_ifindex = ifindex
        buffer = frame
        kernelForGeneric = kernel
    }

    private var buffer: [UInt8]

    private func say(_ s: String) { lines.append(TraceLine(depth: depth, text: s)) }
    private func nested<T>(_ body: () -> T) -> T { depth += 1; defer { depth -= 1 }; return body() }

    public var text: String { lines.map { String(repeating: "  ", count: $0.depth) + $0.text }.joined(separator: "\n") }

    // MARK: entry points

    /// A packet through a device's XDP hook (the driver's rcu_dereference of the program).
    public func traceDevice(_ dev: NetDevice, runner: RunnerKind = .patched) -> UInt32 {
        guard let p = dev.currentProg else {
            say("\(dev.name): no XDP program attached → XDP_PASS")
            return UInt32(CBPF_XDP_PASS)
        }
        if case .patched = runner, let g = dev.program(mode: .skb), let f = kernelForGeneric?.kernelFunction("do_xdp_generic") {
            say("\(dev.name): generic XDP (skb mode): the receive path calls do_xdp_generic")
            return nested { () -> UInt32 in
                genericProg = UnsafePointer(g.raw)
                return callText(f.entry, what: "do_xdp_generic's entry")
            }
        }
        say("\(dev.name): driver runs the attached program")
        switch runner {
        case .patched: return nested { progRun(p, chainLoop: true) }
        case .unpatched: return nested { progRun(p, chainLoop: false) }
        case let .dispatched(d): return nested { dispatched(d, p) }
        case let .machineDispatched(d):
            say("bpf_dispatcher (machine engine): the generated image compares the program against its targets — a hit jumps directly, a miss jumps through bpf_func (retpolined when retpolines are on)")
            return nested { dispatched(d, p) }
        case let .runArray(slot): return nested { runArray(slot) }
        }
    }

    /// BPF_PROG_RUN of one program (a test run).
    public func traceProgram(_ p: UnsafePointer<cbpf_prog>) -> UInt32 { progRun(p, chainLoop: true) }

    /// A tracing program's test run: bpf_prog_test_run_tracing calls the kernel function
    /// the program's attach type is meant for (KernelFunction.swift); the trampoline on it
    /// runs whatever is attached.
    public func traceTracingTestRun(_ prog: BPFProg, kernel: Kernel) -> UInt32 {
        valuesAreVerdicts = false
        if prog.expectedAttachType == AttachType.modifyReturn.rawValue, let f = kernel.kernelFunction("bpf_modify_return_test") {
            var b: Int32 = 2
            let ret = withUnsafeMutablePointer(to: &b) { bp -> UInt32 in
                ctx.kargs = (1, UInt64(UInt(bitPattern: bp)))
                say("bpf_prog_test_run_tracing: b = 2; ret = bpf_modify_return_test(1, &b)")
                return nested { callText(f.entry, what: "bpf_modify_return_test's entry") }
            }
            let side: UInt32 = b != 2 ? 1 : 0
            say("b is \(b): side effect \(side) (\(side == 1 ? "the function ran" : "an fmod_ret program replaced it")); retval = \(side) << 16 | \(ret) = \(side << 16 | ret)")
            return side << 16 | ret
        }
        guard let f = kernel.kernelFunction("bpf_fentry_test1") else { return 0 }
        ctx.kargs = (1, 0)
        say("bpf_prog_test_run_tracing: bpf_fentry_test1(1)")
        let r = nested { callText(f.entry, what: "bpf_fentry_test1's entry") }
        say("returned \(r) (2 expected); retval 0")
        return 0
    }

    // MARK: BPF_PROG_RUN and the chain loop

    private func progName(_ p: UnsafePointer<cbpf_prog>) -> String {
        guard cbpf_prog_is_live(p) else { return "a freed program (poisoned record)" }
        let b = BPFProg.fromRaw(p)
        let engine = p.pointee.flags & UInt32(CBPF_PROG_F_JITED) != 0 ? "jit" : "interpreter"
        return "prog \(b.id) '\(b.name)' (\(b.type.name), \(engine))"
    }

    private func progRun(_ p: UnsafePointer<cbpf_prog>, chainLoop: Bool) -> UInt32 {
        tailCalls = 0
        callDepth = 0
        faulted = false
        if cbpf_bpf_stats_enabled() { say("BPF_PROG_RUN: stats are on (bpf_stats_enabled_key): each run is timed and counted") }
        guard chainLoop, p.pointee.flags & UInt32(CBPF_PROG_F_CHAIN_CALLS) != 0 else {
            say((chainLoop ? "BPF_PROG_RUN → " : "BPF_PROG_RUN (before the RFC: no chain_calls test) → ") + progName(p))
            return nested { callProg(p) }
        }
        say("BPF_PROG_RUN: \(progName(p)) has BPF_F_CHAIN_CALLS → do_chain_calls")
        var prog = p
        var ret: UInt32 = 0
        for n in 1...Int(CBPF_MAX_CHAIN_CALLS) {
            tailCalls = 0
            callDepth = 0
            faulted = false
            say("chain program \(n): \(progName(prog))")
            ret = nested { callProg(prog) }
            let idx = ret &+ 1
            let slot: UnsafeMutablePointer<cbpf_prog>?
            if idx >= UInt32(CBPF_NUM_CHAIN_SLOTS) {
                slot = cbpf_prog_chain_slot(prog, 0)
                say("returned \(verdict(ret)): slot \(idx) is past the 8 slots → the wildcard slot 0: " + (slot == nil ? "empty, the chain ends" : "holds the next program"))
            } else if let s = cbpf_prog_chain_slot(prog, UInt(idx)) {
                slot = s
                say("returned \(verdict(ret)): chain slot \(idx) (retcode + 1) holds the next program")
            } else {
                slot = cbpf_prog_chain_slot(prog, 0)
                say("returned \(verdict(ret)): chain slot \(idx) is empty → the wildcard slot 0: " + (slot == nil ? "empty, the chain ends" : "holds the next program"))
            }
            guard let next = slot else { return ret }
            if n == Int(CBPF_MAX_CHAIN_CALLS) { say("\(CBPF_MAX_CHAIN_CALLS) programs have run: the chain stops here") }
            prog = UnsafePointer(next)
        }
        return ret
    }

    private func dispatched(_ d: UnsafePointer<cbpf_dispatcher>, _ p: UnsafePointer<cbpf_prog>) -> UInt32 {
        tailCalls = 0
        callDepth = 0
        faulted = false
        let h = cbpf_rcu_dereference(UnsafeRawPointer(d).assumingMemoryBound(to: UnsafeMutableRawPointer?.self))
            .map { UnsafePointer($0.assumingMemoryBound(to: cbpf_dispatcher_half.self)) }
        var hit = false
        if let h {
            let n = Int(h.pointee.num)
            hit = withUnsafeBytes(of: h.pointee.progs) { b in
                b.bindMemory(to: UnsafePointer<cbpf_prog>?.self).prefix(n).contains { $0 == p }
            }
            say("bpf_dispatcher: \(n) known target\(n == 1 ? "" : "s"); " + (hit ? "hit → a direct call" : "miss → the indirect call (retpolined in the kernel)"))
        } else {
            say("bpf_dispatcher: no image yet → the indirect call")
        }
        return nested { say(progName(p)); return nested { callProg(p) } }
    }

    private func runArray(_ slot: UnsafePointer<UnsafeMutableRawPointer?>) -> UInt32 {
        guard let a = cbpf_rcu_dereference(UnsafeRawPointer(slot).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)) else {
            say("BPF_PROG_RUN_ARRAY: empty → XDP_PASS")
            return UInt32(CBPF_XDP_PASS)
        }
        let arr = UnsafePointer(a.assumingMemoryBound(to: cbpf_run_array.self))
        let items = UnsafeRawPointer(arr).advanced(by: MemoryLayout<cbpf_run_array>.size).assumingMemoryBound(to: cbpf_tramp_item.self)
        say("BPF_PROG_RUN_ARRAY: \(arr.pointee.count) programs, all run; the first verdict that is not XDP_PASS wins")
        var v = UInt32(CBPF_XDP_PASS)
        for i in 0..<Int(arr.pointee.count) {
            let saved = cookie
            cookie = items[i].cookie
            tailCalls = 0
            let r = nested { () -> UInt32 in say("\(progName(items[i].prog)) with cookie \(items[i].cookie)"); return nested { callProg(items[i].prog) } }
            cookie = saved
            if v == UInt32(CBPF_XDP_PASS) { v = r }
        }
        say("→ \(verdict(v))")
        return v
    }

    // MARK: calls through entry words

    private func callProg(_ p: UnsafePointer<cbpf_prog>) -> UInt32 {
        callText(cbpf_prog_text(p), what: "its entry")
    }

    private func same(_ a: cbpf_func_t?, _ b: cbpf_func_t) -> Bool {
        unsafeBitCast(a, to: UInt.self) == unsafeBitCast(b, to: UInt.self)
    }

    /// A call through an entry word: a trampoline or an extension may have been poked in.
    private func callText(_ t: UnsafePointer<cbpf_text>, what: String) -> UInt32 {
        let f = cbpf_text_func(t)
        let data = t.pointee.data!
        if same(f, bpfp_tramp_entry) { return trampoline(data, what: what) }
        if same(f, bpfp_ext_entry) {
            let h = cbpf_text_hdr_of(data)!
            if let im = cbpf_rcu_dereference(UnsafeRawPointer(h).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)),
               let e = im.assumingMemoryBound(to: cbpf_tramp_image.self).pointee.ext {
                say("\(what) is poked to a jump into an extension (freplace): \(progName(e))")
                return nested { body(cbpf_text_func(cbpf_prog_text(e)), e.pointee.insnsi) }
            }
            say("\(what) is poked for an extension, but its image is gone: the function's own body")
        }
        return body(f, data)
    }

    private func trampoline(_ data: UnsafeRawPointer, what: String) -> UInt32 {
        let h = cbpf_text_hdr_of(data)!
        guard let raw = cbpf_rcu_dereference(UnsafeRawPointer(h).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)) else {
            say("\(what) enters a trampoline with no image: the function runs")
            return body(h.pointee.orig, data)
        }
        let im = UnsafePointer(raw.assumingMemoryBound(to: cbpf_tramp_image.self))
        let (ne, nm, nx) = (Int(im.pointee.nfentry), Int(im.pointee.nmodret), Int(im.pointee.nfexit))
        let items = UnsafeRawPointer(im).advanced(by: MemoryLayout<cbpf_tramp_image>.size).assumingMemoryBound(to: cbpf_tramp_item.self)
        say("\(what) is poked to a trampoline: \(ne) fentry, \(nm) fmod_ret, \(nx) fexit")
        return nested {
            func attached(_ i: Int, _ kind: String) -> UInt32 {
                let it = items[i]
                let savedCookie = cookie, savedTC = tailCalls
                cookie = it.cookie
                tailCalls = 0
                say("\(kind) \(progName(it.prog)) (recursion guard taken; cookie \(it.cookie); its own tail-call counter)")
                let r = nested { callProg(it.prog) }
                cookie = savedCookie
                tailCalls = savedTC
                return r
            }
            for i in 0..<ne { _ = attached(i, "fentry") }
            var ret: UInt32 = 0
            var skipped = false
            for i in ne..<(ne + nm) {
                let r = attached(i, "fmod_ret")
                if r != 0 { say("fmod_ret returned \(r): it replaces the function's value; the function is skipped"); ret = r; skipped = true; break }
            }
            if !skipped {
                say("the function itself (its counter restored)")
                ret = nested { body(h.pointee.orig, data) }
            }
            let saved = funcRet
            funcRet = UInt64(ret)
            for i in (ne + nm)..<(ne + nm + nx) { _ = attached(i, "fexit (sees \(ret))") }
            funcRet = saved
            return ret
        }
    }

    // MARK: bodies

    private func body(_ f: cbpf_func_t?, _ data: UnsafeRawPointer) -> UInt32 {
        guard let f else { say("no body (NULL entry)"); return UInt32(CBPF_XDP_ABORTED) }
        if same(f, bpfp_step_jit) { return steps(data, jited: true) }
        if same(f, bpfp_step_interp) { return steps(data, jited: false) }
        if same(f, bpfp_tc_jit) || same(f, bpfp_tc_direct) { return tcBody(data, direct: same(f, bpfp_tc_direct)) }
        if same(f, bpfp_call_ret) {
            let d = data.assumingMemoryBound(to: bpfp_small_data.self)
            say("call a subprogram, return its value")
            return nested { callText(d.pointee.callee, what: "the subprogram's entry") }
        }
        if same(f, bpfp_static_branch_ret) {
            let d = data.assumingMemoryBound(to: bpfp_small_data.self)
            let on = cbpf_static_branch_unlikely(d.pointee.site)
            say("static branch: the site is \(on ? "on (a jmp): the hook runs" : "off (a NOP): nothing runs")")
            if on { _ = nested { callText(d.pointee.callee, what: "the hook's entry") } }
            say("return \(verdict(d.pointee.fallback))")
            return d.pointee.fallback
        }
        if same(f, bpfp_indirect_call_ret) {
            let d = data.assumingMemoryBound(to: bpfp_small_data.self)
            _ = indirect(d.pointee.array, UInt64(d.pointee.index))
            if faulted { say("the run has faulted → XDP_ABORTED"); return UInt32(CBPF_XDP_ABORTED) }
            say("return \(verdict(d.pointee.fallback))")
            return d.pointee.fallback
        }
        if same(f, bpfp_xdp_dispatcher) { return libxdp(data) }
        if same(f, bpfp_kfn_do_xdp_generic), let p = genericProg {
            say("do_xdp_generic: BPF_PROG_RUN of the skb-mode program")
            return nested { progRun(p, chainLoop: true) }
        }
        if same(f, bpfp_xdp_dispatcher_stub) {
            say("an empty placeholder: returns 31 (XDP_DISPATCHER_RETVAL), which every mask lets through")
            return UInt32(BPFP_XDP_DISPATCHER_RETVAL)
        }
        // A leaf body (a builtin, a constant, a helper call): run it for its value.
        let r = buffer.withUnsafeMutableBufferPointer { b -> UInt32 in
            var md = ctx
            md.data = b.baseAddress
            md.data_meta = b.baseAddress
            md.data_hard_start = b.baseAddress
            md.data_end = b.baseAddress.map { $0 + b.count }
            md.bpf_cookie = cookie
            md.func_ret = funcRet
            md.tail_call_cnt = tailCalls
            md.kargs = ctx.kargs
            return f(&md, data)
        }
        say("body returns \(verdict(r))")
        return r
    }

    private func verdict(_ v: UInt32) -> String {
        if !valuesAreVerdicts { return "\(Int32(bitPattern: v))" }
        return v < 5 ? "XDP_" + ScenarioVocabulary.verdictNames[Int(v)] : (v == 0xffff_ffff ? "~0" : "\(v) (not an XDP action)")
    }

    /// The specialised "tail call K; return R" bodies.
    private func tcBody(_ data: UnsafeRawPointer, direct: Bool) -> UInt32 {
        let d = data.assumingMemoryBound(to: bpfp_tc_data.self).pointee
        say(direct ? "JIT: tail call through a patched direct jump, else return \(verdict(d.fallback))" : "JIT: tail call (indirect sequence), else return \(verdict(d.fallback))")
        if let r = nested({ tailCall(array: d.array, index: UInt64(d.index), poke: direct ? d.poke : nil, interp: false) }) { return r }
        say("fell through: return \(verdict(d.fallback))")
        return d.fallback
    }

    /// bpf_tail_call with the engine's counting rule; nil when it falls through.
    private func tailCall(array: UnsafePointer<cbpf_array>, index: UInt64, poke: UnsafeMutablePointer<bpfp_poke_desc>?, interp: Bool) -> UInt32? {
        let before = tailCalls
        if let poke {
            if cbpf_load_acquire_u32(&poke.pointee.bypass) != 0 {
                say("direct tail call, slot \(poke.pointee.key): the patched bypass is taken (the slot is empty) before the counter — not counted (\(before))")
                return nil
            }
            if before >= UInt32(CBPF_MAX_TAIL_CALL_CNT) { say("direct tail call: the counter is at 33 (MAX_TAIL_CALL_CNT) → falls through"); return nil }
            guard let t = poke.pointee.target else { say("direct tail call: no target → falls through"); return nil }
            tailCalls += 1
            say("direct tail call, slot \(poke.pointee.key): counter \(before) → \(tailCalls), jump to \(progName(t)) — this frame is replaced")
            return body(cbpf_text_hdr_of(t.pointee.insnsi)!.pointee.orig, t.pointee.insnsi)
        }
        let i = UInt32(truncatingIfNeeded: index)
        let max = array.pointee.max_entries
        if i >= max { say("tail call, index \(i): not below max_entries \(max) → falls through (not counted)"); return nil }
        if before >= UInt32(CBPF_MAX_TAIL_CALL_CNT) { say("tail call, index \(i): the counter is at 33 (MAX_TAIL_CALL_CNT) → falls through"); return nil }
        if interp { tailCalls += 1 }
        guard let t = cbpf_array_slot(array, i) else {
            say("tail call, index \(i): empty slot → falls through" + (interp ? " (the interpreter counted it: \(before) → \(tailCalls))" : " (the JIT counts only after the NULL check: \(before))"))
            return nil
        }
        if !interp { tailCalls += 1 }
        say("tail call, index \(i): counter \(before) → \(tailCalls); jump past the entry of \(progName(t)) (no trampoline runs for a tail call) — this frame is replaced")
        return body(cbpf_text_hdr_of(t.pointee.insnsi)!.pointee.orig, t.pointee.insnsi)
    }

    private func indirect(_ array: UnsafePointer<cbpf_array>, _ index: UInt64) -> UInt32? {
        let i = UInt32(truncatingIfNeeded: index)
        guard i < array.pointee.max_entries, let p = cbpf_array_slot(array, i) else {
            say("indirect call, slot \(i): empty or out of range → skipped")
            return nil
        }
        if callDepth >= UInt32(CBPF_MAX_CALL_FRAMES) - 1 {
            say("indirect call, slot \(i): \(callDepth + 1) frames already — the call that would open frame \(CBPF_MAX_CALL_FRAMES + 1) faults the run (fault.call_depth): every frame returns XDP_ABORTED")
            faulted = true
            return nil
        }
        callDepth += 1
        defer { callDepth -= 1 }
        say("indirect call, slot \(i) (frame \(callDepth + 1)) → \(progName(p))")
        let r = nested { callProg(p) }
        return faulted ? nil : r
    }

    private func libxdp(_ data: UnsafeRawPointer) -> UInt32 {
        let c = data.assumingMemoryBound(to: bpfp_xdp_dispatcher_config.self).pointee
        let n = Int(min(c.num_progs_enabled, UInt32(BPFP_XDP_DISPATCHER_SLOTS)))
        say("libxdp dispatcher: \(n) slot\(n == 1 ? "" : "s") enabled")
        return nested {
            let masks = withUnsafeBytes(of: c.chain_call_actions) { Array($0.bindMemory(to: UInt32.self)) }
            let prios = withUnsafeBytes(of: c.run_prios) { Array($0.bindMemory(to: UInt32.self)) }
            let slots = withUnsafeBytes(of: c.slots) { Array($0.bindMemory(to: UnsafePointer<cbpf_text>?.self)) }
            for i in 0..<n {
                let actions = (0..<5).filter { masks[i] & (1 << $0) != 0 }.map { ScenarioVocabulary.verdictNames[$0] }.joined(separator: ",")
                say("slot prog\(i) (run_prio \(prios[i]), chain_call_actions \(actions)+31)")
                let r = nested { callText(slots[i]!, what: "placeholder prog\(i)'s entry") }
                if r >= 32 || masks[i] & (1 << r) == 0 {
                    say("\(verdict(r)) is not in the slot's mask → the dispatcher returns it")
                    return r
                }
                say("\(r == 31 ? "31" : verdict(r)) is in the mask → next slot")
            }
            say("after the last slot → XDP_PASS")
            return UInt32(CBPF_XDP_PASS)
        }
    }

    /// A step program, as bpfp_step_jit / bpfp_step_interp run it.
    private func steps(_ data: UnsafeRawPointer, jited: Bool) -> UInt32 {
        let blk = data.assumingMemoryBound(to: bpfp_step_block.self)
        let key = UInt(bitPattern: blk)
        let n = Int(blk.pointee.nsteps)
        let stepsPtr = UnsafeRawPointer(blk).advanced(by: MemoryLayout<bpfp_step_block>.size).assumingMemoryBound(to: bpfp_step.self)
        func getVar(_ i: Int) -> UInt64 { varWrites[key]?[i] ?? cbpf_read_once_u64(blk.pointee.vars + i) }
        func setVar(_ i: Int, _ v: UInt64) { varWrites[key, default: [:]][i] = v }
        var last: UInt32 = 0
        var pc = 0
        while pc < n {
            let s = stepsPtr[pc]
            pc += 1
            switch Int(s.op) {
            case BPFP_OP_RET_CONST: say("return \(verdict(s.a))"); return s.a
            case BPFP_OP_RET_LAST: say("return the last value, \(verdict(last))"); return last
            case BPFP_OP_RET_VAR: let v = UInt32(truncatingIfNeeded: getVar(Int(s.a))); say("return variable \(s.a) = \(verdict(v))"); return v
            case BPFP_OP_COUNT: say("count '\(counterNames[s.a] ?? "#\(s.a)")' (+1)")
            case BPFP_OP_SET_VAR: setVar(Int(s.a), s.b); say("variable \(s.a) = \(s.b)")
            case BPFP_OP_CALL:
                say("call subprogram \(s.a) (bpf-to-bpf: shares the tail-call counter)")
                let subs = blk.pointee.subprogs!
                last = nested { callText(subs[Int(s.a)]!, what: "subprogram \(s.a)'s entry") }
            case BPFP_OP_RUN_PROG:
                last = nested { callProg(UnsafeRawPointer(s.array)!.assumingMemoryBound(to: cbpf_prog.self)) }
            case BPFP_OP_INDIRECT_CALL:
                let idx = s.flags & BPFP_STEP_F_INDEX_FROM_VAR != 0 ? getVar(Int(s.b)) : s.b
                if let r = indirect(s.array, idx) { last = r }
                if faulted { say("the run has faulted → XDP_ABORTED"); return UInt32(CBPF_XDP_ABORTED) }
            case BPFP_OP_STATIC_BRANCH:
                let on = cbpf_static_branch_unlikely(UnsafeRawPointer(s.ptr)!.assumingMemoryBound(to: cbpf_static_site.self))
                say("static branch: the site is \(on ? "on (a jmp): call subprogram \(s.a)" : "off (a NOP): nothing runs")")
                if on {
                    let subs = blk.pointee.subprogs!
                    last = nested { callText(subs[Int(s.a)]!, what: "the hook's entry") }
                }
            case BPFP_OP_KFUNC: say("kfunc call (not run by the tracer: it changes state)")
            case BPFP_OP_STORE_COOKIE: setVar(Int(s.a), cookie); say("variable \(s.a) = bpf_get_attach_cookie() = \(cookie)")
            case BPFP_OP_STORE_FUNC_RET: setVar(Int(s.a), funcRet); say("variable \(s.a) = the traced function's return = \(funcRet)")
            case BPFP_OP_TAIL_CALL:
                let idx = s.flags & BPFP_STEP_F_INDEX_FROM_VAR != 0 ? getVar(Int(s.b)) : s.b
                if let r = tailCall(array: s.array, index: idx, poke: jited ? s.poke : nil, interp: !jited) { return r }
            default:
                say("unknown step \(s.op) → XDP_ABORTED")
                return UInt32(CBPF_XDP_ABORTED)
            }
        }
        say("end of steps: the last value, \(verdict(last))")
        return last
    }
}
