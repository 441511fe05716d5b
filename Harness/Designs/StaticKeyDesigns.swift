// StaticKeyDesigns.swift — static branches: a site that is a 5-byte NOP while its key is
// off and a jump to the hook while it is on, patched by text_poke when the key flips.
// Mirrors: include/linux/jump_label.h, kernel/jump_label.c, arch/x86/kernel/jump_label.c.
import BPFKernel

extension DesignID {
    public static let staticKeyOff = DesignID("static-key-off")
    public static let staticKeyOn = DesignID("static-key-on")
}

enum StaticKeyDesigns {
    static let sites = DesignParameter("branch sites", range: 1...32, default: 1)

    /// The DROP program after n branch sites of one key, each calling the hook (returns
    /// PASS, ignored) when the key is on; `machine`: generated as x86-64 (each site the
    /// kernel's 5-byte NOP, patched live), otherwise the native step body.
    static func guarded(_ c: DesignContext, machine: Bool, on: Bool) throws -> DesignSetup {
        let key = try c.bpf.mapCreate(MapCreateAttr(type: .staticKey, maxEntries: 1, name: "hook_key"))
        let steps = Array(repeating: Step.staticBranch(keyFD: key, call: 0), count: max(1, c.n)) + [.returnConst(verdictDrop)]
        var attr = ProgLoadAttr(steps: StepProgram(steps, subprogs: [[.returnConst(verdictPass)]], subprogNames: ["hook"]), name: dropName)
        attr.machineCode = machine
        let p: Int32
        do { p = try c.load(attr) } catch {
            try? c.bpf.objClose(key)
            throw error
        }
        if on { try c.bpf.mapUpdateElem(key, key: [0, 0, 0, 0], value: [1, 0, 0, 0]) }
        var s = DesignSetup(id: c.id, root: p, fds: [p, key])
        s.staticKey = key
        return s
    }

    static func guarded(_ c: DesignContext) throws -> DesignSetup { try guarded(c, machine: false, on: c.id == .staticKeyOn) }

    static let all: [Design] = [
        Design("static-key-off", title: "Static key off (DROP)",
               summary: "DROP after a static branch site whose key is off (the hook is not called); N: branch sites",
               family: .staticKeys, groups: [.attach, .machine], parameter: sites, build: guarded),
        Design("static-key-on", title: "Static key on (hook + DROP)",
               summary: "the same with the key on: the branch calls a hook function (returns PASS, ignored)",
               family: .staticKeys, groups: [.attach, .machine], parameter: sites, build: guarded),
    ]
}
