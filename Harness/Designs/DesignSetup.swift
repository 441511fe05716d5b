// DesignSetup.swift — a design's objects once built: the program to attach, every fd it
// opened, how the driver runs it, what churn may touch, and how to take it all down.
import BPFKernel
import BPFPrograms
import CBPFShims
import Foundation

/// A design's objects: the program to attach, every fd it opened, how the driver runs it,
/// and what churn may touch.
public struct DesignSetup: @unchecked Sendable {
    public internal(set) var id: DesignID
    public let root: Int32
    public let fds: [Int32]
    /// A chain-enabled program whose unused XDP_TX slot churn may fill and empty.
    public var chainPrev: Int32?
    /// A prog array (with a spare slot 1) that churn may update.
    public var progArray: Int32?
    /// A static-key map whose flips leave the verdicts unchanged.
    public var staticKey: Int32?
    public var runner: RunnerKind = .patched
    /// The bytecode program each packet runs (the root, or the fentry program of seed
    /// 004's designs): the report counts its instructions per packet.
    public var bytecodeProg: Int32?
    /// The parameter's value it was built with (nil: the design has none).
    public var n: Int?
    /// The prog-array slot no packet jumps through, which prog_array churn fills and
    /// empties (the designs' jumps use the slots below it).
    public var spareSlot: UInt32 = 1
    /// Whether it runs through the kernel's one bpf_dispatcher (whose table holds 48).
    public var usesDispatcher: Bool {
        switch runner {
        case .dispatched, .machineDispatched: return true
        default: return false
        }
    }
    /// Undoes what closing the fds does not (scratch devices, dispatcher targets, arrays).
    var teardown: () -> Void = {}

    init(id: DesignID, root: Int32, fds: [Int32], chainPrev: Int32? = nil, progArray: Int32? = nil) {
        self.id = id
        self.root = root
        self.fds = fds
        self.chainPrev = chainPrev
        self.progArray = progArray
    }

    /// One packet as the driver would run it for this design (the verdict cross-check).
    public func runOnce(_ device: NetDevice, _ ctx: XDPContext) -> UInt32 {
        struct One: ProgRunnerBody {
            let prog: ProgPtr?, ctx: XDPContext
            func callAsFunction<R: ProgRunner>(_ r: R) -> UInt32 { r.run(prog, ctx) }
        }
        return runner.with(One(prog: device.currentProg, ctx: ctx))
    }

    /// Instructions the interpreter executes for one packet of `frame` in this design's
    /// bytecode program (tail calls followed), or nil if it has none.
    public func instructionsPerPacket(_ bpf: BPF, frame: [UInt8]) -> UInt64? {
        guard let fd = bytecodeProg, let p = try? bpf.prog(fd) else { return nil }
        defer { p.put() }  // bpf.prog's
        var f = frame
        var n: UInt64 = 0
        _ = withXDPContext(&f, ifindex: 1) { bpfi_prog_run_counted($0, p.raw.pointee.insnsi, &n) }
        return n
    }

    public func close(_ bpf: BPF) {
        teardown()
        for fd in fds.reversed() { try? bpf.objClose(fd) }
    }
}

// Shared by the family files: the seed's DROP program and its verdicts.
let dropName = "xdp_drop"
let verdictPass = UInt32(2), verdictDrop = UInt32(1)

extension DesignContext {
    func load(_ a: ProgLoadAttr) throws -> Int32 { try bpf.progLoad(a) }
    /// The native DROP program every design ends in.
    func loadDrop(flags: ProgLoadFlags = []) throws -> Int32 { try load(ProgLoadAttr(body: .xdpDrop, name: dropName, flags: flags)) }
}
