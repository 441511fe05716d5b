// ScenarioSyntax.swift — reading YAML nodes into typed values, with where and why.
//
// Every accessor throws a ScenarioError carrying the line and column of the node it
// looked at — for a missing key, of the mapping that lacks it, never "line 0". Unknown
// keys name the allowed ones and, when one is close, what was probably meant. Numbers
// are range-checked where they are read, in the kernel's own types. No message ever
// interpolates a node's contents (a node can stand for megabytes).
import Foundation
import Yams
import BPFInstructions

/// A problem with the scenario file itself, with where it is: exit code 2.
public struct ScenarioError: Error, CustomStringConvertible, Equatable {
    public let line: Int
    public let column: Int
    public let message: String
    public var description: String { "line \(line), column \(column): \(message)" }

    public init(line: Int, column: Int, message: String) {
        self.line = max(1, line)
        self.column = max(1, column)
        self.message = message
    }

    init(_ node: Node, _ message: String) {
        self.init(line: node.mark?.line ?? 1, column: node.mark?.column ?? 1, message: message)
    }
}

/// "unknown X 'y' [in Z]; did you mean 'b'? (known: a, b, c)"
func unknownMessage(_ what: String, _ word: String, _ known: [String], in context: String? = nil) -> String {
    var s = "unknown \(what) '\(word.prefix(40))'" + (context.map { " in \($0)" } ?? "")
    if let m = suggestion(for: word, in: known) { s += "; did you mean '\(m)'?" }
    s += " (known: \(known.joined(separator: ", ")))"
    return s
}

extension Node {
    /// A short, bounded description of what the node is (never its contents).
    var shape: String {
        switch self {
        case .scalar(let s): return s.string.count <= 30 ? "'\(s.string)'" : "a long text"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        default: return "an alias"
        }
    }
}

/// The keys of one mapping node, checked against what is allowed: duplicates and unknown
/// keys are errors at the key's own position.
struct Fields {
    let node: Node
    private var pairs: [String: (key: Node, value: Node)] = [:]
    private(set) var order: [String] = []

    init(_ node: Node, _ what: String, allowed: [String]) throws {
        self.node = node
        guard case let .mapping(m) = node else {
            throw ScenarioError(node, "\(what) is a mapping of \(allowed.joined(separator: ", ")); got \(node.shape)")
        }
        for (k, v) in m {
            guard let name = k.scalar?.string else { throw ScenarioError(k, "a key of \(what) must be a plain word") }
            if !allowed.contains(name) { throw ScenarioError(k, unknownMessage("key", name, allowed, in: what)) }
            if pairs[name] != nil { throw ScenarioError(k, "key '\(name)' appears twice in \(what)") }
            pairs[name] = (k, v)
            order.append(name)
        }
    }

    subscript(_ key: String) -> Node? { pairs[key]?.value }
    func keyNode(_ key: String) -> Node? { pairs[key]?.key }
    var keys: [String] { order }

    func require(_ key: String, _ what: String) throws -> Node {
        guard let v = pairs[key]?.value else { throw ScenarioError(node, "\(what) needs '\(key):'") }
        return v
    }
}

/// Entries of a mapping whose keys are names (programs:, maps:, …), duplicates refused.
func namedEntries(_ node: Node?, _ what: String) throws -> [(name: String, key: Node, value: Node)] {
    guard let node else { return [] }
    guard case let .mapping(m) = node else { throw ScenarioError(node, "\(what) is a mapping of names; got \(node.shape)") }
    var seen: Set<String> = []
    var out: [(String, Node, Node)] = []
    for (k, v) in m {
        let name = try nameValue(k, "a name in \(what)")
        if !seen.insert(name).inserted { throw ScenarioError(k, "'\(name)' is declared twice in \(what)") }
        out.append((name, k, v))
    }
    return out
}

func listValue(_ node: Node, _ what: String) throws -> [Node] {
    guard case let .sequence(s) = node else { throw ScenarioError(node, "\(what) is a list; got \(node.shape)") }
    return Array(s)
}

func stringValue(_ node: Node, _ what: String) throws -> String {
    guard let s = node.scalar?.string, !s.isEmpty else { throw ScenarioError(node, "\(what) is a word or text; got \(node.shape)") }
    return s
}

/// A name: letters, digits, '_', '-' and '.', at most 63 bytes.
func nameValue(_ node: Node, _ what: String) throws -> String {
    let s = try stringValue(node, what)
    guard s.utf8.count <= 63, s.unicodeScalars.allSatisfy({ ($0.isASCII && CharacterSet.alphanumerics.contains($0)) || $0 == "_" || $0 == "-" || $0 == "." }) else {
        throw ScenarioError(node, "\(what) must be 1 to 63 letters, digits, '_', '-' or '.'; got \(node.shape)")
    }
    return s
}

/// An integer in `range` (decimal or 0x hex; '-' allowed only if the range has negatives).
func intValue(_ node: Node, _ what: String, _ range: ClosedRange<Int64>) throws -> Int64 {
    guard let s = node.scalar?.string else { throw ScenarioError(node, "\(what) is a number; got \(node.shape)") }
    let t = s.replacingOccurrences(of: "_", with: "")
    let neg = t.hasPrefix("-")
    let body = neg ? String(t.dropFirst()) : t
    let mag: UInt64? = body.hasPrefix("0x") || body.hasPrefix("0X") ? UInt64(body.dropFirst(2), radix: 16) : UInt64(body)
    guard let m = mag else { throw ScenarioError(node, "\(what) is a number; got \(node.shape)") }
    let v: Int64?
    if neg { v = m <= UInt64(Int64.max) + 1 ? (m == UInt64(Int64.max) + 1 ? Int64.min : -Int64(m)) : nil } else { v = m <= UInt64(Int64.max) ? Int64(m) : nil }
    guard let v, range.contains(v) else {
        throw ScenarioError(node, "\(what) must be between \(range.lowerBound) and \(range.upperBound); got \(node.shape)")
    }
    return v
}

func u32Value(_ node: Node, _ what: String) throws -> UInt32 {
    UInt32(try intValue(node, what, 0...Int64(UInt32.max)))
}

/// A u32 where the kernel reads -1 as ~0 (return values, the wildcard retcode).
func u32OrMinusOne(_ node: Node, _ what: String) throws -> UInt32 {
    UInt32(truncatingIfNeeded: try intValue(node, what, -1...Int64(UInt32.max)))
}

func u64Value(_ node: Node, _ what: String) throws -> UInt64 {
    guard let s = node.scalar?.string else { throw ScenarioError(node, "\(what) is a number; got \(node.shape)") }
    let t = s.replacingOccurrences(of: "_", with: "")
    guard let v = t.hasPrefix("0x") ? UInt64(t.dropFirst(2), radix: 16) : UInt64(t) else {
        throw ScenarioError(node, "\(what) must be between 0 and \(UInt64.max); got \(node.shape)")
    }
    return v
}

func boolValue(_ node: Node, _ what: String) throws -> Bool {
    switch node.scalar?.string {
    case "true", "on", "yes": return true
    case "false", "off", "no": return false
    default: throw ScenarioError(node, "\(what) is true or false; got \(node.shape)")
    }
}

/// One of `choices` (with a suggestion when it is close to one).
func choiceValue(_ node: Node, _ what: String, _ choices: [String]) throws -> String {
    let s = try stringValue(node, what)
    guard choices.contains(s) else { throw ScenarioError(node, unknownMessage(what, s, choices)) }
    return s
}

/// A mapping node with exactly one key (an operation or a step): (key node, name, value).
func singleKey(_ node: Node, _ what: String) throws -> (Node, String, Node) {
    guard case let .mapping(m) = node, m.count == 1, let (k, v) = m.first, let name = k.scalar?.string else {
        throw ScenarioError(node, "\(what) is one key with its arguments; got \(node.shape)")
    }
    return (k, name, v)
}
