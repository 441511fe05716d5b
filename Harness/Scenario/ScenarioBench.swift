// ScenarioBench.swift — a scenario file as a design the bench measures (`bpflab bench
// --scenario FILE`): its declarations and steps run through the bench's own kernel (a
// fast one), every expectation in them checked as in `bpflab run`; what the scenario
// leaves attached to its first device with an XDP program is then measured against the
// baseline like any built-in design, and torn down after.
import BPFKernel

extension ScenarioRunner {
    /// The design: ID "scenario:NAME", in the scenarios family.
    public func benchDesign() -> Design {
        // Built once, on the bench's thread, before any worker starts.
        nonisolated(unsafe) let me = self
        return Design("scenario:\(name)", title: "Scenario: \(name)",
                      summary: file.description.isEmpty ? "the program the scenario '\(name)' leaves attached" : file.description,
                      family: .scenario, groups: []) { c in try me.buildForBench(c) }
    }

    /// Runs the declarations and steps through `c.bpf`; the setup's root is the program
    /// attached to the first device (in the file's order) that has one.
    func buildForBench(_ c: DesignContext) throws -> DesignSetup {
        let bpf = c.bpf
        func cleanup() {
            for d in devices.values { d.detachAll() }
            for h in handles.values { try? bpf.objClose(h.fd) }
            handles.removeAll()
            bpf.kernel.unpinAll()
        }
        var out = ScenarioOutcome(name: name)
        out.failures = declare(on: bpf)
        if out.failures.isEmpty {
            for step in file.steps {
                runStep(step, ScenarioRunOptions(), &out)
                if !out.failures.isEmpty { break }
            }
        }
        if !out.failures.isEmpty {
            cleanup()
            throw HarnessError("scenario '\(name)' cannot be measured: \(out.failures.joined(separator: "; "))")
        }
        guard let dev = file.devices.lazy.compactMap({ self.devices[$0.name] }).first(where: { $0.program != nil }),
              let prog = dev.program else {
            cleanup()
            throw HarnessError("scenario '\(name)' leaves no XDP program attached to a device: bench measures what its steps attach (an xdp_attach or link_create step)")
        }
        let root: Int32
        do { root = try bpf.progGetFdById(prog.id) } catch {
            cleanup()
            throw error
        }
        var s = DesignSetup(id: c.id, root: root, fds: [root])
        s.teardown = cleanup
        return s
    }
}
