// YAMLGuard.swift — bounds a scenario file before it is composed into nodes.
//
// Composing YAML is recursive (one stack frame per nesting level) and an alias repeats
// its anchor's whole subtree, so a few hundred bytes can stand for gigabytes ("billion
// laughs"). This pass walks libyaml's event stream — iteratively, holding one event at a
// time — and refuses, with the line and column, a file that is too large, nested too
// deeply, or whose aliases expand to too many nodes. Only then does Yams compose it.
import CYaml

/// The bounds every scenario file is held to (named in the errors).
public enum ScenarioLimits {
    public static let maxFileBytes = 1 << 20
    public static let maxDepth = 64
    public static let maxNodes = 100_000
    /// Total map memory a scenario may create (max_entries × value size, summed).
    public static let maxMapBytes = 256 << 20
    public static let maxPacketsPerStep = 100_000_000
    public static let maxRepeat: UInt32 = 1_000_000
    public static let maxQueues = 64
    public static let maxDevices = 16
    public static let maxSteps = 10_000
}

enum YAMLGuard {
    /// Throws a ScenarioError at the first bound the text breaks (or at a syntax error
    /// libyaml finds on the way).
    static func check(_ text: String) throws {
        let bytes = Array(text.utf8)
        if bytes.count > ScenarioLimits.maxFileBytes {
            throw ScenarioError(line: 1, column: 1, message: "the file is \(bytes.count) bytes; scenario files are at most \(ScenarioLimits.maxFileBytes) bytes (1 MiB)")
        }
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else {
            throw ScenarioError(line: 1, column: 1, message: "cannot start the YAML parser")
        }
        defer { yaml_parser_delete(&parser) }
        try bytes.withUnsafeBufferPointer { buf in
            yaml_parser_set_input_string(&parser, buf.baseAddress, buf.count)
            // Per open collection: its node count so far (for anchors) and its anchor.
            var stack: [(count: Int, anchor: String?)] = []
            var anchors: [String: Int] = [:]  // anchor → nodes in its subtree
            var total = 0
            /// `own` new nodes in the document; `subtree` nodes added to the enclosing
            /// collection's count (a closing collection: itself and its contents).
            func add(_ own: Int, subtree: Int, at e: yaml_event_t) throws {
                total += own
                if !stack.isEmpty { stack[stack.count - 1].count += subtree }
                if total > ScenarioLimits.maxNodes {
                    throw ScenarioError(line: Int(e.start_mark.line) + 1, column: Int(e.start_mark.column) + 1,
                                        message: "the file expands to more than \(ScenarioLimits.maxNodes) nodes (aliases count their anchor's whole subtree)")
                }
            }
            func name(_ p: UnsafeMutablePointer<UInt8>?) -> String? { p.map { String(cString: $0) } }
            while true {
                var e = yaml_event_t()
                guard yaml_parser_parse(&parser, &e) == 1 else {
                    let m = parser.problem_mark
                    let problem = parser.problem.map { String(cString: $0) } ?? "syntax error"
                    throw ScenarioError(line: Int(m.line) + 1, column: Int(m.column) + 1, message: ScenarioDecoder.yamlMessage(problem))
                }
                defer { yaml_event_delete(&e) }
                switch e.type {
                case YAML_STREAM_END_EVENT:
                    return
                case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                    if stack.count >= ScenarioLimits.maxDepth {
                        throw ScenarioError(line: Int(e.start_mark.line) + 1, column: Int(e.start_mark.column) + 1,
                                            message: "nesting deeper than \(ScenarioLimits.maxDepth) levels")
                    }
                    let anchor = e.type == YAML_SEQUENCE_START_EVENT ? name(e.data.sequence_start.anchor) : name(e.data.mapping_start.anchor)
                    stack.append((0, anchor))
                case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                    guard let top = stack.popLast() else { continue }
                    if let a = top.anchor { anchors[a] = top.count + 1 }
                    try add(1, subtree: top.count + 1, at: e)
                case YAML_SCALAR_EVENT:
                    if let a = name(e.data.scalar.anchor) { anchors[a] = 1 }
                    try add(1, subtree: 1, at: e)
                case YAML_ALIAS_EVENT:
                    let n = anchors[name(e.data.alias.anchor) ?? ""] ?? 1
                    try add(n, subtree: n, at: e)
                default:
                    continue
                }
            }
        }
    }
}
