// ScenarioState.swift — what a step leaves behind, in terms both backends can observe, so
// `bpflab run FILE --on both` compares more than each call's answer: which of the objects
// the run created still exist (BPF_*_GET_FD_BY_ID would find them), the relative order and
// uniqueness of their IDs, what is attached to each device in which XDP mode, and which
// program each link holds and whether it is still attached.
//
// Mirrors: the user-visible state of kernel/bpf/syscall.c's ID tables (prog_idr, map_idr,
// link_idr: an ID is unpublished at the last put), net/core/dev.c's dev->xdp_state as
// rtnl_xdp_fill reports it, and bpf_xdp_link_fill_link_info.
//
// Objects are named by the scenario name they were created under, with a generation when a
// name is reused ("p", then "p#2" after `close: p` and a second `load: p`); a name bound
// later to an existing object (obj_get, get_fd_by_id) names no new object.

/// The objects a run created, in creation order, with the ID each side gave them.
public struct ObjectLedger: Sendable {
    public struct Entry: Sendable, Equatable {
        public var label: String
        public var name: String
        /// "prog", "map" or "link" (the ID table it lives in).
        public var kind: String
        public var id: UInt32
    }
    public private(set) var entries: [Entry] = []
    private var generations: [String: Int] = [:]

    public init() {}

    public mutating func created(_ name: String, kind: String, id: UInt32) {
        let g = (generations[name] ?? 0) + 1
        generations[name] = g
        entries.append(Entry(label: g == 1 ? name : "\(name)#\(g)", name: name, kind: kind, id: id))
    }

    /// The label of the object of `kind` the run created with `id` (the most recent one).
    public func label(kind: String, id: UInt32) -> String {
        entries.last { $0.kind == kind && $0.id == id }?.label ?? "id \(id)"
    }
}

/// One side's state after a step.
public struct ObservedState: Sendable, Equatable {
    public struct Object: Sendable, Equatable {
        public var label: String
        public var name: String
        public var kind: String
        public var id: UInt32
        public var alive: Bool
    }
    public var objects: [Object] = []
    /// Device → XDP mode (skb, drv, hw) → the label of the attached program.
    public var xdp: [String: [String: String]] = [:]
    /// Link label → "prog P on DEVICE" or "prog P, detached" (alive links only).
    public var links: [String: String] = [:]
    /// Prog array label → its filled slots, "0 p1, 2 p3" or "empty" (arrays the run still
    /// holds an fd of: reading one by ID would take a user reference and change it).
    public var slots: [String: String] = [:]

    public init() {}

    public init(ledger: ObjectLedger, alive: (ObjectLedger.Entry) -> Bool) {
        objects = ledger.entries.map { Object(label: $0.label, name: $0.name, kind: $0.kind, id: $0.id, alive: alive($0)) }
    }

    /// The state as comparable lines, leaving out objects named in `excluding` (the names
    /// one backend does not have: lab only, or refused by this kernel).
    public func rendered(excluding: Set<String> = []) -> [String: String] {
        var out: [String: String] = [:]
        let kept = objects.filter { !excluding.contains($0.name) }
        for o in kept { out["alive \(o.label)"] = o.alive ? "yes" : "no" }
        for kind in ["prog", "map", "link"] {
            let live = kept.filter { $0.kind == kind && $0.alive }.sorted { $0.id < $1.id }
            guard live.count >= 2 else { continue }
            let distinct = Set(live.map(\.id)).count == live.count
            out["ids \(kind)"] = live.map(\.label).joined(separator: " < ") + (distinct ? "" : " (IDs repeat)")
        }
        let excludedLabels = Set(objects.filter { excluding.contains($0.name) }.map(\.label))
        for (device, modes) in xdp where !modes.isEmpty && modes.values.allSatisfy({ !excludedLabels.contains($0) }) {
            out["xdp \(device)"] = modes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        }
        for (link, text) in links where !excludedLabels.contains(link) { out["link \(link)"] = text }
        for (array, text) in slots where !excludedLabels.contains(array) { out["slots \(array)"] = text }
        return out
    }

    /// The lines on which `self` (the lab) and `kernel` differ, as "key: lab A, kernel B".
    public static func differences(lab: [String: String], kernel: [String: String]) -> [String] {
        Set(lab.keys).union(kernel.keys).sorted().compactMap { k in
            lab[k] == kernel[k] ? nil : "\(k): lab \(lab[k] ?? "—"), kernel \(kernel[k] ?? "—")"
        }
    }

    /// A prog array's slots (index → program label) as one line.
    static func slotsText(_ filled: [(UInt32, String)]) -> String {
        filled.isEmpty ? "empty" : filled.map { "\($0.0) \($0.1)" }.joined(separator: ", ")
    }

    /// The most slots of one prog array a state shows.
    static let slotLimit: UInt32 = 64

    static func linkText(prog: String, device: String?) -> String {
        device.map { "prog \(prog) on \($0)" } ?? "prog \(prog), detached"
    }
}
