// AttachDataDesigns.swift — seed 004: an fentry program on the DROP program reading
// per-attachment data four ways (bpf/attach_data.c, compiled by clang): the link's cookie
// (bpf_get_attach_cookie), an array map, a hash map, a global variable.
// Mirrors: kernel/bpf/trampoline.c (bpf_tramp_run_ctx's cookie), kernel/trace/bpf_trace.c.
import BPFKernel

extension DesignID {
    public static let dataCookie = DesignID("data-cookie")
    public static let dataArray = DesignID("data-array")
    public static let dataHash = DesignID("data-hash")
    public static let dataGlobal = DesignID("data-global")
}

enum AttachDataDesigns {
    /// The DROP program with the object's program `name` on its trampoline, cookie 5, and
    /// 5 in both maps.
    static func reading(_ name: String) -> @Sendable (DesignContext) throws -> DesignSetup {
        { c in
            let d = try c.loadDrop()
            let l = try c.bpf.loadObject(try ShippedObjects.object("attach_data"), only: [name], targets: [name: d],
                                         functions: [name: dropName])
            try c.bpf.mapUpdateElem(l.maps["data_array"]!, key: [0, 0, 0, 0], value: [5, 0, 0, 0, 0, 0, 0, 0])
            try c.bpf.mapUpdateElem(l.maps["data_hash"]!, key: [0, 0, 0, 0], value: [5, 0, 0, 0, 0, 0, 0, 0])
            let link = try c.bpf.linkCreate(LinkCreateAttr(progFD: l.programs[name]!, attachType: .traceFentry, cookie: 5))
            var s = DesignSetup(id: c.id, root: d, fds: [d] + Array(l.programs.values) + [link] + Array(l.maps.values))
            s.bytecodeProg = l.programs[name]!
            return s
        }
    }

    static let all: [Design] = [
        Design("data-cookie", title: "fentry reads the link cookie",
               summary: "seed 004: the DROP program with a clang-built fentry program adding bpf_get_attach_cookie() to a global (bpf/attach_data.c)",
               family: .attachData, groups: [.bytecode], needsObjects: true, build: reading("by_cookie")),
        Design("data-array", title: "fentry reads an array map",
               summary: "seed 004: the same, reading an array map's value (bpf_map_lookup_elem)",
               family: .attachData, groups: [.bytecode], needsObjects: true, build: reading("by_array")),
        Design("data-hash", title: "fentry reads a hash map",
               summary: "seed 004: the same, reading a hash map's value (bpf_map_lookup_elem)",
               family: .attachData, groups: [.bytecode], needsObjects: true, build: reading("by_hash")),
        Design("data-global", title: "fentry reads a global variable",
               summary: "seed 004: the same, reading a global variable (.data, direct value access)",
               family: .attachData, groups: [.bytecode], needsObjects: true, build: reading("by_global")),
    ]
}
