// DesignRegistry.swift — every design the harness can measure, family by family, in the
// order the table shows them. The verdict cross-check, the every-design tests, `--list`,
// the help text and sweeps all iterate this list. A new family is a file beside this one
// and its name here.
import BPFKernel

public enum DesignRegistry {
    public static let all: [Design] = BaselineDesigns.all + ChainCallDesigns.all + TailCallDesigns.all
        + ExtensionDesigns.all + LibXDPDesigns.all + DispatcherDesigns.all + StaticKeyDesigns.all
        + CallTableDesigns.all + MachineCodeDesigns.all + MachineDispatcherDesigns.all + BytecodeDesigns.all + AttachDataDesigns.all

    private static let byID: [DesignID: Design] = Dictionary(uniqueKeysWithValues: all.map { ($0.id, $0) })

    public static func design(_ id: DesignID) -> Design? { byID[id] ?? user.withLock { $0[id] } }

    /// Designs a user brought at run time (`bench --scenario FILE`): found by ID like the
    /// built-in ones, never listed with them.
    private static let user = Mutex<[DesignID: Design]>([:])

    /// Adds a user's design; its ID must not be taken.
    public static func addUserDesign(_ d: Design) throws {
        if byID[d.id] != nil { throw HarnessError("'\(d.id)' is a built-in design's name") }
        try user.withLock { table in
            if table[d.id] != nil { throw HarnessError("a design named '\(d.id)' was already given") }
            table[d.id] = d
        }
    }

    /// The designs of a group, in registry order.
    public static func group(_ g: DesignGroup) -> [DesignID] { all.filter { $0.groups.contains(g) }.map(\.id) }

    /// Designs a sweep can vary.
    public static var sweepable: [Design] { all.filter { $0.parameter != nil } }

    public static func named(_ name: String) throws -> Design {
        if let d = design(DesignID(name)) ?? design(DesignID(name.replacingOccurrences(of: "_", with: "-"))) { return d }
        throw HarnessError(unknownMessage("design", name, all.map(\.id.rawValue)))
    }

    public static func parseList(_ s: String) throws -> [DesignID] {
        let trimmed = s.trimmingCharacters(in: .whitespaces)
        if trimmed == "all" { return all.map(\.id) }
        if let g = DesignGroup(rawValue: trimmed) { return group(g) }
        var out: [DesignID] = []
        for raw in s.split(separator: ",") {
            let part = raw.trimmingCharacters(in: .whitespaces)  // "a, b" as well as "a,b"
            if part.isEmpty { continue }
            // A group's name stands for its designs ("seed,attach").
            let ds = try part == "all" ? all.map(\.id) : DesignGroup(rawValue: part).map(group) ?? [named(part).id]
            for d in ds where !out.contains(d) { out.append(d) }
        }
        if out.isEmpty { throw HarnessError("--designs is empty") }
        if !out.contains(.baseline) { out.insert(.baseline, at: out.first == .beforePatch ? 1 : 0) }
        return out
    }

    /// Names for help texts: every design, then the groups.
    public static var helpList: String {
        all.map(\.id.rawValue).joined(separator: ", ") + "; groups: all, " + DesignGroup.allCases.map(\.rawValue).joined(separator: ", ")
    }
}

import Foundation
import Synchronization
