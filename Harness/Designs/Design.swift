// Design.swift — what a dispatch design is to the harness: one value with its name, its
// words, the groups it is measured in, the parameter a sweep may vary, and how it builds
// its objects through the facade (a user's own steps, exactly). The registry
// (DesignRegistry.swift) lists every design; each family of designs is one file beside
// this one. Adding a design is adding one value to its family's file.
import BPFKernel

/// A design's name, as the command line and result files spell it.
public struct DesignID: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// The registry's entry (every ID the harness hands out has one).
    public var design: Design {
        guard let d = DesignRegistry.design(self) else { preconditionFailure("design '\(rawValue)' is not in the registry") }
        return d
    }
    public var title: String { design.title }
    public var summary: String { design.summary }
    public var needsObjects: Bool { design.needsObjects }

    /// Every registered design, in the registry's order.
    public static var allCases: [DesignID] { DesignRegistry.all.map(\.id) }
    public static var seedSuite: [DesignID] { DesignRegistry.group(.seed) }
    public static var attachSuite: [DesignID] { DesignRegistry.group(.attach) }
    public static var bytecodeSuite: [DesignID] { DesignRegistry.group(.bytecode) }

    /// The design called `name` ('_' accepted for '-'); an unknown name is an error naming
    /// the closest one.
    public static func named(_ name: String) throws -> DesignID {
        try DesignRegistry.named(name).id
    }

    /// A --designs list: names separated by commas (spaces around them ignored), or a
    /// group's name, or 'all'. The baseline is always included.
    public static func parseList(_ s: String) throws -> [DesignID] {
        try DesignRegistry.parseList(s)
    }
}

/// The groups `--designs` can name.
public enum DesignGroup: String, Sendable, CaseIterable, Codable {
    /// The seed's table: before/after patch, chain calls, tail calls.
    case seed
    /// Trampolines, extensions, dispatchers, static keys, indirect calls, run-all.
    case attach
    /// Instructions in the interpreter, beside the native designs they mirror, and seed 004.
    case bytecode
    /// Generated x86-64 machine code (the machine engine), beside the native C stand-ins.
    case machine
}

/// The family a design belongs to: plots colour and group by it.
public enum DesignFamily: String, Sendable, CaseIterable, Codable {
    case baseline, chainCalls = "chain calls", tailCalls = "tail calls", extensions = "extensions and trampolines"
    case libxdp, dispatcher = "bpf_dispatcher", staticKeys = "static keys", callTables = "call tables and run arrays"
    case bytecode, attachData = "attachment data"
    /// Generated x86-64 machine code (the machine engine).
    case machineCode = "machine code"
    /// A user's own configuration (`bench --scenario`).
    case scenario = "scenarios"
}

/// The one size a design can be built at: what a sweep varies.
public struct DesignParameter: Sendable {
    /// What N counts ("programs in the chain").
    public let name: String
    /// Values the design can be built with (the kernel's limits).
    public let range: ClosedRange<Int>
    /// The value of the design as `bench` measures it.
    public let defaultValue: Int

    public init(_ name: String, range: ClosedRange<Int>, default defaultValue: Int) {
        self.name = name
        self.range = range
        self.defaultValue = defaultValue
    }
}

/// What a design's builder gets: the facade to build through, and N.
public struct DesignContext {
    public let id: DesignID
    public let bpf: BPF
    /// The parameter's value (its default unless a sweep chose another); 0 if the design
    /// has none.
    public let n: Int
}

public struct Design: Sendable {
    public let id: DesignID
    /// The row name in the table.
    public let title: String
    /// What runs per packet (`bpflab bench --list`).
    public let summary: String
    public let family: DesignFamily
    public let groups: [DesignGroup]
    /// Built from the shipped, clang-compiled objects (bpf/out).
    public let needsObjects: Bool
    public let parameter: DesignParameter?
    let build: @Sendable (DesignContext) throws -> DesignSetup

    public init(_ id: String, title: String, summary: String, family: DesignFamily, groups: [DesignGroup],
                needsObjects: Bool = false, parameter: DesignParameter? = nil,
                build: @escaping @Sendable (DesignContext) throws -> DesignSetup) {
        self.id = DesignID(id)
        self.title = title
        self.summary = summary
        self.family = family
        self.groups = groups
        self.needsObjects = needsObjects
        self.parameter = parameter
        self.build = build
    }

    /// The title at size `n` (for sweeps): "… — N programs in the chain".
    public func title(n: Int) -> String {
        guard let p = parameter, n != p.defaultValue else { return title }
        return "\(title), \(p.name) = \(n)"
    }
}

extension DesignSetup {
    /// Loads the design's programs through `bpf`, at size `n` (its default if nil).
    public static func make(_ id: DesignID, bpf: BPF, n: Int? = nil) throws -> DesignSetup {
        let d = try DesignRegistry.named(id.rawValue)
        if let n {
            guard let p = d.parameter else { throw HarnessError("design \(id) has no parameter to set (it is built one way)") }
            guard p.range.contains(n) else {
                throw HarnessError("design \(id) takes \(p.name) from \(p.range.lowerBound) to \(p.range.upperBound) (got \(n))")
            }
        }
        var s = try d.build(DesignContext(id: d.id, bpf: bpf, n: n ?? d.parameter?.defaultValue ?? 0))
        s.n = n ?? d.parameter?.defaultValue
        return s
    }
}
