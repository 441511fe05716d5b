// RetpolineVariants.swift — `bench --retpoline off,on`: every machine-code design measured
// in both modes in one run. Generated code reads the retpoline mode when it is built, so
// each mode is a design of its own ("mc-tail-jit@retpoline-on"), built with the mode set
// around its build; the bench interleaves them with everything else, between the same
// baseline windows, so the two modes are compared within one run rather than across runs.
import BPFKernel
import BPFMachineCode
import Foundation

public enum RetpolineVariants {
    /// The design `d` built with generated code in mode `m`.
    static func variant(of d: Design, _ m: RetpolineMode) -> Design {
        let base = d, id = DesignID("\(d.id.rawValue)@retpoline-\(m.rawValue)")
        return Design("\(d.id.rawValue)@retpoline-\(m.rawValue)", title: "\(d.title) [retpolines \(m.enabled ? "on" : "off")]",
                      summary: "\(d.summary) — generated with retpolines \(m.rawValue)", family: d.family, groups: d.groups,
                      needsObjects: d.needsObjects, parameter: d.parameter) { c in
            let saved = Retpoline.mode
            Retpoline.mode = m
            defer { Retpoline.mode = saved }
            // The base design's own ID: builders choose by it (hit or miss, direct or not).
            var s = try base.build(DesignContext(id: base.id, bpf: c.bpf, n: c.n))
            s.id = id
            return s
        }
    }

    /// `designs` with each machine-code design replaced by one variant per mode (in the
    /// order given); the others unchanged. Variants are registered once.
    public static func expand(_ designs: [DesignID], modes: [RetpolineMode]) throws -> [DesignID] {
        var out: [DesignID] = []
        for id in designs {
            let d = id.design
            guard d.family == .machineCode else { out.append(id); continue }
            for m in modes {
                let v = variant(of: d, m)
                if DesignRegistry.design(v.id) == nil { try DesignRegistry.addUserDesign(v) }
                out.append(v.id)
            }
        }
        return out
    }

    /// Parses `off`, `on`, `auto` or a comma-separated list of them.
    public static func parse(_ text: String) throws -> [RetpolineMode] {
        var modes: [RetpolineMode] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let t = part.trimmingCharacters(in: .whitespaces).lowercased()
            guard let m = RetpolineMode(rawValue: t) else {
                throw HarnessError("--retpoline takes off, on, auto or a list of them such as off,on (got '\(part)')")
            }
            if modes.contains(m) { throw HarnessError("--retpoline names '\(t)' twice") }
            modes.append(m)
        }
        return modes
    }
}
