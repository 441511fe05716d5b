// ChainCalls.swift — the 2019 "XDP chain calls" RFC (v3), with its review fixes.
//
// Mirrors: seed 001 patch 1 (include/linux/filter.h do_chain_calls — see ProgRun.swift —
// and kernel/bpf/core.c's put of chain_progs in __bpf_prog_free) and patch 2
// (kernel/bpf/syscall.c bpf_prog_chain: BPF_PROG_CHAIN_ADD / DEL / GET).
//
// The mechanism, its rules and why: BPFKernel.docc/the-chain-call-rfc.md (the DocC article "The chain-call RFC").
import CBPFShims

/// The wildcard return code (~0 as u32), which selects slot 0.
public let chainWildcard: UInt32 = 0xffff_ffff

/// The BPF_PROG_CHAIN_* attribute block of the RFC (prev_prog_fd, next_prog_fd, retcode,
/// next_prog_id) plus the rest of union bpf_attr, which must be zero.
public struct ChainAttr: Sendable {
    public var prevProgFD: UInt32
    public var nextProgFD: UInt32
    public var retcode: UInt32
    /// Output of GET.
    public var nextProgID: UInt32 = 0
    /// Bytes of union bpf_attr after next_prog_id (CHECK_ATTR requires zeros).
    public var trailing: [UInt8] = []

    public init(prev: Int32, next: Int32 = 0, retcode: UInt32) {
        self.prevProgFD = UInt32(bitPattern: prev)
        self.nextProgFD = UInt32(bitPattern: next)
        self.retcode = retcode
    }
}

/// The chain slot index of a return code (0 = wildcard).
public func chainSlotIndex(retcode: UInt32) -> UInt32 {
    retcode == chainWildcard ? 0 : retcode &+ 1
}

extension BPFProg {
    /// The program in chain slot `index`, if any (no reference taken).
    public func chainSlot(_ index: Int) -> BPFProg? {
        cbpf_prog_chain_slot(raw, UInt(index)).map { BPFProg.fromRaw($0) }
    }

    /// The programs this one holds a reference on that no user action can drop while it
    /// lives: its chain slots and its `dst_prog` (an extension's or tracing program's
    /// target). Prog-array members are not among them: the uref flush breaks those.
    func strongProgRefs() -> [BPFProg] {
        var out: [BPFProg] = []
        for i in 0..<Int(CBPF_NUM_CHAIN_SLOTS) { if let n = chainSlot(i) { out.append(n) } }
        if let d = dstProg { out.append(d) }  // read under dst_mutex: a link may be taking it
        return out
    }

    /// Every program reachable from this one through strong program references (chain
    /// slots, dst_prog), this one included.
    func chainReachable() -> [BPFProg] {
        var seen: [ObjectIdentifier: BPFProg] = [ObjectIdentifier(self): self]
        var stack = [self]
        while let p = stack.popLast() {
            for n in p.strongProgRefs() where seen[ObjectIdentifier(n)] == nil {
                seen[ObjectIdentifier(n)] = n
                stack.append(n)
            }
        }
        return Array(seen.values)
    }
}

extension Kernel {
    /// Inserts `next` into `prev`'s slot `index`, taking over the caller's reference on
    /// `next`. Refuses (ELOOP) if `prev` is reachable from `next`. The old occupant is
    /// returned so the caller can put it after the exchange.
    func chainExchange(prev: BPFProg, index: UInt32, next: BPFProg?) throws -> BPFProg? {
        try chainLock.withLock {
            if let next {
                if next.chainReachable().contains(where: { $0 === prev }) {
                    let how = next === prev ? "to itself" : "back to '\(prev.name)' through '\(next.name)'"
                    throw fail(.ELOOP, "adding '\(next.name)' after '\(prev.name)' would close a chain cycle \(how); a cycle would never be freed")
                }
            }
            let old = cbpf_prog_chain_xchg(prev.aux, UInt(index), next?.raw)
            return old.map { BPFProg.fromRaw($0) }
        }
    }
}

extension BPF {
    /// bpf_prog_chain: BPF_PROG_CHAIN_ADD, _DEL and _GET over the raw attribute block.
    public enum ChainCommand: Sendable { case add, del, get }

    public func progChain(_ cmd: ChainCommand, _ attr: inout ChainAttr) throws {
        if attr.trailing.contains(where: { $0 != 0 }) {
            throw fail(.EINVAL, "attribute bytes after next_prog_id must be zero")
        }
        let index = chainSlotIndex(retcode: attr.retcode)
        if index >= UInt32(CBPF_NUM_CHAIN_SLOTS) {
            throw fail(.E2BIG, "retcode \(attr.retcode) selects chain slot \(index); programs have \(CBPF_NUM_CHAIN_SLOTS) (retcodes 0–6 and the wildcard ~0)")
        }
        let prev = try fds.getProg(Int32(bitPattern: attr.prevProgFD))
        defer { prev.put() }  // getProg
        guard prev.hasChainCalls else {
            throw fail(.EOPNOTSUPP, "'\(prev.name)' was not loaded with BPF_F_CHAIN_CALLS")
        }
        switch cmd {
        case .add:
            let next = try fds.getProg(Int32(bitPattern: attr.nextProgFD))  // the slot's reference
            let old: BPFProg?
            do {
                // The lab's fix beside ELOOP: the RFC's ADD took any program (bpf_prog_get,
                // no type check), so a tracing program on `prev` could be chained after it —
                // a cycle through dst_prog the slot-only check never saw. A chained program
                // runs on the same context as `prev`: it must be of the same type.
                if next.type != prev.type {
                    throw fail(.EINVAL, "'\(next.name)' is a \(next.type.name) program; the chain of '\(prev.name)' runs \(prev.type.name) programs")
                }
                old = try kernel.chainExchange(prev: prev, index: index, next: next)
            } catch {
                next.put()  // getProg: refused, nothing changed
                throw error
            }
            old?.put()  // the old slot's reference, after the exchange
        case .del:
            guard let old = try kernel.chainExchange(prev: prev, index: index, next: nil) else {
                throw fail(.ENOENT, "chain slot \(index) of '\(prev.name)' is empty")
            }
            old.put()  // the slot's reference
        case .get:
            // Under the chain lock the slot cannot be emptied, so its program is alive.
            attr.nextProgID = try kernel.chainLock.withLock {
                guard let p = cbpf_prog_chain_slot(prev.raw, UInt(index)) else {
                    throw fail(.ENOENT, "chain slot \(index) of '\(prev.name)' is empty")
                }
                return cbpf_load_acquire_u32(cbpf_prog_aux_id(p.pointee.aux))
            }
        }
    }

    /// libbpf's bpf_prog_chain_add: run `next` after `prev` returns `retcode`
    /// (`chainWildcard` for any code).
    public func progChainAdd(prev: Int32, retcode: UInt32, next: Int32) throws {
        var a = ChainAttr(prev: prev, next: next, retcode: retcode)
        try progChain(.add, &a)
    }

    /// libbpf's bpf_prog_chain_del.
    public func progChainDel(prev: Int32, retcode: UInt32) throws {
        var a = ChainAttr(prev: prev, retcode: retcode)
        try progChain(.del, &a)
    }

    /// libbpf's bpf_prog_chain_get: the ID of the program in the slot.
    public func progChainGet(prev: Int32, retcode: UInt32) throws -> UInt32 {
        var a = ChainAttr(prev: prev, retcode: retcode)
        try progChain(.get, &a)
        return a.nextProgID
    }
}
