// Audit.swift — every reference the lab's objects hold, as a graph, and the auditor that
// checks the refcount rules against it.
//
// Mirrors no kernel file: the kernel cannot list who holds a bpf_prog (refcounts are
// bare counters; kmemleak and the refcount_t warnings find the damage after the fact).
// The lab can: every holder is enumerable — fds and pins (user references), chain slots,
// prog-array slots, used maps, dst_prog, links and their targets, device attachments per
// XDP mode, bpf_dispatcher targets, run-array items, deferred prog-array flushes. The
// auditor checks, at a quiescent point (no call in flight):
//   refcount      each object's refcount equals the references held on it;
//   usercnt       a map's usercnt equals its user holders (fds, pins) and is ≤ its refcnt;
//   ids           IDs are nonzero, unique, and published exactly for live objects;
//   freed         no holder reaches a freed (poisoned) record;
//   cycle         no cycle of strong references that no user action can break (chain
//                 slots, dst_prog and link targets; prog-array slots are broken by the
//                 uref flush, so they do not count).
import CBPFShims

/// What holds a reference.
public enum RefKind: Sendable, Equatable, Hashable, CustomStringConvertible {
    case fd(Int32)
    case pin(String)
    case chainSlot(Int)
    case progArraySlot(UInt32)
    case usedMap
    case dstProg
    case linkProg
    case linkTarget
    case device(String, XDPMode)
    case dispatcher
    case runArray
    case pendingFlush
    /// Not references (drawn, never counted): a function's entry word poked to its
    /// trampoline, and a program in a trampoline image (the link holds it).
    case patchedEntry
    case imageItem(String)

    public var description: String {
        switch self {
        case let .fd(n): return "fd \(n)"
        case let .pin(p): return "pin \(p)"
        case let .chainSlot(k): return "chain slot \(k)"
        case let .progArraySlot(i): return "slot \(i)"
        case .usedMap: return "used map"
        case .dstProg: return "dst_prog"
        case .linkProg: return "link"
        case .linkTarget: return "link target"
        case let .device(d, m): return "\(d) (\(m.name))"
        case .dispatcher: return "bpf_dispatcher"
        case .runArray: return "run array"
        case .pendingFlush: return "deferred flush"
        case .patchedEntry: return "entry poked"
        case let .imageItem(k): return "image: \(k)"
        }
    }

    /// Whether the edge is a held reference (counted in a refcount).
    public var isReference: Bool {
        switch self {
        case .patchedEntry, .imageItem: return false
        default: return true
        }
    }

    /// A reference from user space (a map's usercnt counts these).
    public var isUser: Bool {
        switch self {
        case .fd, .pin: return true
        default: return false
        }
    }

    /// A kernel-internal reference that no user action can drop while its holder lives
    /// (the kinds a leak-forever cycle is made of).
    var isUnbreakable: Bool {
        switch self {
        case .chainSlot, .dstProg, .linkTarget, .linkProg: return true
        default: return false
        }
    }
}

/// A node of the reference graph: an object, or a holder that is not one (an fd, a pin,
/// a device, the dispatcher, a run array).
public struct RefNode: Sendable, Equatable {
    public enum Kind: String, Sendable { case prog, map, link, fd, pin, device, dispatcher, runArray = "run_array", flush, trampoline, kernelFunction = "kernel_function" }
    public let key: String
    public let kind: Kind
    public let label: String
    public let refcnt: UInt64?
    public let usercnt: UInt64?
    /// Waiting for a grace period (its last reference is gone).
    public let dying: Bool
}

/// One held reference: `holder` holds `target` (both node keys).
public struct RefEdge: Sendable, Equatable {
    public let holder: String
    public let target: String
    public let kind: RefKind
}

public struct ReferenceGraph: Sendable {
    public var nodes: [RefNode] = []
    public var edges: [RefEdge] = []
    /// Edges that lie on a strong cycle (see the header).
    public var cycleEdges: [RefEdge] = []
    /// Edges on a program ↔ prog-array cycle (used map one way, a slot the other): a
    /// cycle the uref flush breaks when the array's last user reference goes.
    public var flushCycleEdges: [RefEdge] = []
}

/// A broken rule, with the objects and references involved.
public struct AuditViolation: Sendable, Equatable, CustomStringConvertible {
    public let rule: String
    public let detail: String
    public var description: String { "\(rule): \(detail)" }
}

extension Kernel {
    private static func key(_ o: AnyObject) -> String {
        switch o {
        case let p as BPFProg: return "prog#\(p.serial)"
        case let m as BPFMap: return "map#\(m.serial)"
        case let l as BPFLink: return "link#\(l.serial)"
        default: return "obj#\(ObjectIdentifier(o).hashValue)"
        }
    }

    /// The reference graph now. Call it at a quiescent point (no facade call in flight).
    public func referenceGraph() -> ReferenceGraph {
        var g = ReferenceGraph()
        let objs = allObjects
        func add(_ holder: String, _ target: AnyObject, _ kind: RefKind) {
            g.edges.append(RefEdge(holder: holder, target: Kernel.key(target), kind: kind))
        }
        for o in objs {
            switch o {
            case let p as BPFProg:
                let st = p.objectState
                g.nodes.append(RefNode(key: Kernel.key(p), kind: .prog, label: "prog \(p.id) '\(p.name)' (\(p.type.name))",
                                       refcnt: p.refcnt, usercnt: nil, dying: st != .live))
                if st == .freed { continue }
                for i in 0..<Int(CBPF_NUM_CHAIN_SLOTS) {
                    guard let raw = cbpf_prog_chain_slot(p.raw, UInt(i)) else { continue }
                    if !cbpf_prog_is_live(raw) {
                        g.edges.append(RefEdge(holder: Kernel.key(p), target: "freed", kind: .chainSlot(i)))
                        continue
                    }
                    add(Kernel.key(p), BPFProg.fromRaw(raw), .chainSlot(i))
                }
                for m in p.usedMaps { add(Kernel.key(p), m, .usedMap) }
                if let d = p.dstProg { add(Kernel.key(p), d, .dstProg) }
            case let m as BPFMap:
                g.nodes.append(RefNode(key: Kernel.key(m), kind: .map, label: "map \(m.id) '\(m.name)' (\(m.type.name))",
                                       refcnt: m.refcnt, usercnt: m.usercnt, dying: m.objectState != .live))
                if let a = m as? ProgArray, m.objectState != .freed {
                    for (i, p) in a.members.sorted(by: { $0.key < $1.key }) { add(Kernel.key(m), p, .progArraySlot(i)) }
                    for _ in 0..<a.pendingFlushes.load(ordering: .relaxed) {
                        g.edges.append(RefEdge(holder: "flush", target: Kernel.key(m), kind: .pendingFlush))
                    }
                }
            case let l as BPFLink:
                g.nodes.append(RefNode(key: Kernel.key(l), kind: .link, label: "link \(l.id) (\(l.type.name))",
                                       refcnt: l.refcountValue, usercnt: nil, dying: false))
                if let p = l.prog { add(Kernel.key(l), p, .linkProg) }
                if let t = (l as? TracingLink)?.heldTarget { add(Kernel.key(l), t, .linkTarget) }
            default:
                break
            }
        }
        for h in allHolders {
            switch h {
            case let b as BPF:
                for (fd, o) in b.fds.entries {
                    let k = "fd#\(b.pid)-\(fd)"
                    g.nodes.append(RefNode(key: k, kind: .fd, label: "fd \(fd)", refcnt: nil, usercnt: nil, dying: false))
                    switch o {
                    case let .prog(p): add(k, p, .fd(fd))
                    case let .map(m): add(k, m, .fd(fd))
                    case let .link(l): add(k, l, .fd(fd))
                    case .stats: break
                    }
                }
            case let d as NetDevice:
                let k = "dev#\(d.name)"
                let at = d.attachments
                if !at.isEmpty { g.nodes.append(RefNode(key: k, kind: .device, label: "device \(d.name)", refcnt: nil, usercnt: nil, dying: false)) }
                for (mode, p) in at { add(k, p, .device(d.name, mode)) }
            case let r as RunArray:
                let ps = r.programs
                let k = "runarray#\(r.serial)"
                if !ps.isEmpty { g.nodes.append(RefNode(key: k, kind: .runArray, label: "run array", refcnt: nil, usercnt: nil, dying: false)) }
                for p in ps { add(k, p, .runArray) }
            default:
                break
            }
        }
        for (path, o) in pinTable.lock.withLock({ pinTable.pins.sorted { $0.key < $1.key } }) {
            let k = "pin#\(path)"
            g.nodes.append(RefNode(key: k, kind: .pin, label: path, refcnt: nil, usercnt: nil, dying: false))
            switch o {
            case let .prog(p): add(k, p, .pin(path))
            case let .map(m): add(k, m, .pin(path))
            case let .link(l): add(k, l, .pin(path))
            case .stats: break
            }
        }
        for (i, d) in ([xdpDispatcher!] + otherDispatchers).enumerated() {
            let targets = d.knownTargets
            guard !targets.isEmpty else { continue }
            let k = i == 0 ? "dispatcher" : "dispatcher#\(i)"
            g.nodes.append(RefNode(key: k, kind: .dispatcher, label: "bpf_dispatcher \(d.name)", refcnt: nil, usercnt: nil, dying: false))
            for p in targets { add(k, p, .dispatcher) }
        }
        // Trampolines: drawn with the entry they patch and the programs in their image
        // (none of these are references: the links hold the programs and the targets).
        let trs: [(TrampolineTarget, [(kind: TrampolineKind, prog: BPFProg)], (fentry: Int, modifyReturn: Int, fexit: Int, ext: Bool))] =
            trampolineLock.withLock { trampolines.values.map { ($0.target, $0.imagePrograms, $0.shape) } }
        for (i, (target, items, shape)) in trs.sorted(by: { $0.0.name < $1.0.name }).enumerated() {
            let k = "tramp#\(i)"
            var label = "trampoline: \(target.name)\n\(shape.fentry) fentry, \(shape.modifyReturn) fmod_ret, \(shape.fexit) fexit"
            if shape.ext { label = "extension entry: \(target.name)" }
            g.nodes.append(RefNode(key: k, kind: .trampoline, label: label, refcnt: nil, usercnt: nil, dying: false))
            switch target {
            case let .prog(p, _): g.edges.append(RefEdge(holder: Kernel.key(p), target: k, kind: .patchedEntry))
            case let .kernel(f):
                let fk = "kfunc#\(f.name)"
                if !g.nodes.contains(where: { $0.key == fk }) {
                    g.nodes.append(RefNode(key: fk, kind: .kernelFunction, label: "kernel function \(f.name)", refcnt: nil, usercnt: nil, dying: false))
                }
                g.edges.append(RefEdge(holder: fk, target: k, kind: .patchedEntry))
            }
            for (kind, p) in items {
                let name = ["fentry", "fmod_ret", "fexit", "freplace"][kind.rawValue]
                g.edges.append(RefEdge(holder: k, target: Kernel.key(p), kind: .imageItem(name)))
            }
        }
        if g.edges.contains(where: { $0.kind == .pendingFlush }) {
            g.nodes.append(RefNode(key: "flush", kind: .flush, label: "deferred flush", refcnt: nil, usercnt: nil, dying: false))
        }
        g.cycleEdges = Kernel.cycleEdges(g.edges.filter { $0.kind.isUnbreakable })
        let withSlots = Kernel.cycleEdges(g.edges.filter { e in
            if case .progArraySlot = e.kind { return true }
            return e.kind == .usedMap || e.kind.isUnbreakable
        })
        g.flushCycleEdges = withSlots.filter { !g.cycleEdges.contains($0) }
        return g
    }

    /// Edges of `strong` that lie on a cycle made of them: an edge is on one when its holder
    /// can be reached again from its target (a DFS per edge; the lab's graphs are small).
    private static func cycleEdges(_ strong: [RefEdge]) -> [RefEdge] {
        var adj: [String: [RefEdge]] = [:]
        for e in strong { adj[e.holder, default: []].append(e) }
        return strong.filter { e in
            var seen: Set<String> = [e.target]
            var stack = [e.target]
            if e.target == e.holder { return true }
            while let n = stack.popLast() {
                for x in adj[n] ?? [] {
                    if x.target == e.holder { return true }
                    if seen.insert(x.target).inserted { stack.append(x.target) }
                }
            }
            return false
        }
    }

    /// The auditor (see the header). Empty when every rule holds. Call it at a quiescent
    /// point; objects waiting for their grace period are checked too.
    public func audit() -> [AuditViolation] {
        let g = referenceGraph()
        var v: [AuditViolation] = []
        var held: [String: [RefEdge]] = [:]
        for e in g.edges where e.kind.isReference { held[e.target, default: []].append(e) }
        let byKey = Dictionary(g.nodes.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        for n in g.nodes where n.kind == .prog || n.kind == .map || n.kind == .link {
            let hs = held[n.key] ?? []
            func names(_ es: [RefEdge]) -> String {
                es.isEmpty ? "no holder" : es.map { e in "\(e.kind)" + (byKey[e.holder].map { $0.kind == .fd || $0.kind == .pin ? "" : " of \($0.label)" } ?? "") }.joined(separator: ", ")
            }
            if let r = n.refcnt, r != UInt64(hs.count) {
                v.append(AuditViolation(rule: "refcount", detail: "\(n.label) has refcount \(r) but \(hs.count) holder\(hs.count == 1 ? "" : "s"): \(names(hs))"))
            }
            if let u = n.usercnt {
                let users = hs.filter { $0.kind.isUser }
                if u != UInt64(users.count) {
                    v.append(AuditViolation(rule: "usercnt", detail: "\(n.label) has usercnt \(u) but \(users.count) user holder\(users.count == 1 ? "" : "s"): \(names(users))"))
                }
                if let r = n.refcnt, u > r { v.append(AuditViolation(rule: "usercnt", detail: "\(n.label): usercnt \(u) > refcnt \(r)")) }
            }
        }
        for e in g.edges where e.target == "freed" {
            v.append(AuditViolation(rule: "freed", detail: "\(byKey[e.holder]?.label ?? e.holder)'s \(e.kind) reaches a freed record"))
        }
        // IDs: published exactly for live objects, unique, nonzero.
        let objs = allObjects
        var seenIDs: [String: Set<UInt32>] = [:]
        for o in objs {
            let (kind, id, live, label): (String, UInt32, Bool, String)
            switch o {
            case let p as BPFProg: (kind, id, live, label) = ("prog", p.id, p.objectState == .live, "prog '\(p.name)'")
            case let m as BPFMap: (kind, id, live, label) = ("map", m.id, m.objectState == .live, "map '\(m.name)'")
            case let l as BPFLink: (kind, id, live, label) = ("link", l.id, true, "link \(l.serial)")
            default: continue
            }
            if live && id == 0 { v.append(AuditViolation(rule: "ids", detail: "live \(label) has ID 0")) }
            if !live && id != 0 { v.append(AuditViolation(rule: "ids", detail: "dying \(label) still publishes ID \(id)")) }
            if id != 0 && !seenIDs[kind, default: []].insert(id).inserted {
                v.append(AuditViolation(rule: "ids", detail: "two \(kind)s share ID \(id)"))
            }
        }
        for id in progIDR.ids where !seenIDs["prog", default: []].contains(id) {
            v.append(AuditViolation(rule: "ids", detail: "program ID \(id) is published for no live program"))
        }
        for id in mapIDR.ids where !seenIDs["map", default: []].contains(id) {
            v.append(AuditViolation(rule: "ids", detail: "map ID \(id) is published for no live map"))
        }
        // Generated code: every patch a site needed happened (text_poke_bp refuses only when the
        // core sync does, so a count here means code that no longer matches its object).
        for o in objs {
            switch o {
            case let p as BPFProg:
                let n = (p.stepImage?.machineEntries.values.reduce(0) { $0 + $1.failures }) ?? 0
                if n > 0 { v.append(AuditViolation(rule: "text", detail: "prog '\(p.name)': \(n) patch\(n == 1 ? "" : "es") of its generated entries failed")) }
            case let a as ProgArray where a.pokeFailures > 0:
                v.append(AuditViolation(rule: "text", detail: "map '\(a.name)': \(a.pokeFailures) direct tail-call patch\(a.pokeFailures == 1 ? "" : "es") failed"))
            case let k as StaticKeyMap where k.key.patchFailures > 0:
                v.append(AuditViolation(rule: "text", detail: "map '\(k.name)': \(k.key.patchFailures) static-branch patch\(k.key.patchFailures == 1 ? "" : "es") failed"))
            default:
                continue
            }
        }
        if !g.cycleEdges.isEmpty {
            let desc = g.cycleEdges.map { "\(byKey[$0.holder]?.label ?? $0.holder) → \(byKey[$0.target]?.label ?? $0.target) (\($0.kind))" }
            v.append(AuditViolation(rule: "cycle", detail: "strong references no user action can break: " + desc.joined(separator: "; ")))
        }
        return v
    }
}
