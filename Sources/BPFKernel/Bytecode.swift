// Bytecode.swift — bytecode programs: the verified instructions turned into the image the
// interpreter runs (the kernel's "xlated" program), and a raw runner for the conformance
// suite.
//
// Mirrors: kernel/bpf/verifier.c's last steps (resolve_pseudo_ldimm64 writing each map's
// address into its ld_imm64 pair; convert_ctx_accesses — done at run time here, see
// interpreter.c), kernel/bpf/core.c (bpf_prog_select_runtime choosing the interpreter:
// bpf_func = the interpreter when there is no JIT; bpf_prog_calc_tag over the instructions
// with map fds zeroed), kernel/bpf/syscall.c (bpf_prog_get_info_by_fd: xlated_prog_insns).
//
// The mechanism, its rules and why: BPFKernel.docc/bytecode-and-the-interpreter.md (the DocC article "Bytecode and the interpreter").
import CBPFShims
import BPFPrograms
import BPFInstructions

/// The interpreter as a program body (bpf_func of every bytecode program).
let interpreterBody = ProgBody(symbol: "bpfi_prog_run", fn: bpfi_prog_run)

/// What a loaded bytecode program keeps besides its image.
public struct BytecodeInfo: Sendable {
    /// The instructions as loaded.
    public let original: [BPFInsn]
    /// The instructions as run: map references resolved to addresses, configurable jumps
    /// numbered by site (bpftool's `prog dump xlated`).
    public let xlated: [BPFInsn]
    /// Function starts (0 first).
    public let functionStarts: [Int]
    /// The verifier's summary line.
    public let log: String
}

extension ProgImage {
    /// Builds the interpreter's image of a verified program. `mapFor` gives the map an
    /// ld_imm64 pair refers to; `keys[k]` is local static key k's map.
    static func bytecode(_ v: VerifiedProgram, counters: UnsafeMutablePointer<UInt64>, usedMaps: [BPFMap],
                         mapFor: (BPFInsn) -> BPFMap?, keys: [Int: StaticKeyMap], raw: Bool) throws -> (ProgImage, [BPFInsn]) {
        let img = ProgImage()
        var x = v.insns
        var pc = 0
        while pc < x.count {
            let i = x[pc]
            if i.isWide && i.src != 0, let m = mapFor(i) {
                let addr: UInt
                if i.src == Pseudo.mapValue || i.src == Pseudo.mapIndexValue, let a = m as? ArrayMap {
                    addr = UInt(bitPattern: a.valueAddress(0, offset: UInt32(bitPattern: x[pc + 1].imm)))
                } else {
                    addr = UInt(bitPattern: m.record)
                }
                x[pc].imm = Int32(truncatingIfNeeded: UInt64(addr))
                x[pc + 1].imm = Int32(truncatingIfNeeded: UInt64(addr) >> 32)
            }
            pc += i.isWide ? 2 : 1
        }
        // Configurable jumps: each gets a branch site of its key.
        let sites = img.alloc(max(1, v.configurableJumps.count) * MemoryLayout<cbpf_static_site>.stride)
            .bindMemory(to: cbpf_static_site.self, capacity: max(1, v.configurableJumps.count))
        for (k, jpc) in v.configurableJumps.enumerated() {
            let key = Int(x[jpc].dst)
            guard let map = keys[key] else {
                throw fail(.EINVAL, "verifier: \(jpc): configurable jump on key \(key), but no static-key map was given for key \(key)")
            }
            (sites + k).initialize(to: cbpf_static_site(enabled: 0))
            img.staticSites.append((sites + k, map))
            x[jpc].imm = Int32(k << 1) | (x[jpc].imm & 1)
        }
        let insnMem = img.alloc(x.count * 8).bindMemory(to: bpfi_insn.self, capacity: x.count)
        for (n, i) in x.enumerated() {
            insnMem[n] = bpfi_insn(code: i.code, regs: i.dst | i.src << 4, off: i.off, imm: i.imm)
        }
        let mapArray = img.alloc(max(1, usedMaps.count) * 8).bindMemory(to: UnsafePointer<cbpf_map>?.self, capacity: max(1, usedMaps.count))
        for (n, m) in usedMaps.enumerated() { mapArray[n] = UnsafePointer(m.record) }

        var im = bpfi_image()
        im.magic = BPFI_IMAGE_MAGIC
        im.insn_cnt = UInt32(x.count)
        im.flags = raw ? UInt32(BPFI_F_RAW) : 0
        im.nmaps = UInt32(usedMaps.count)
        im.nsites = UInt32(v.configurableJumps.count)
        im.maps = UnsafePointer(mapArray)
        im.sites = sites
        im.counters = counters
        im.insns = UnsafePointer(insnMem)
        withUnsafeMutableBytes(of: &im.keys) { raw in
            let table = raw.bindMemory(to: bpfi_key.self)
            for (k, map) in keys where k >= 0 && k < Int(BPFI_MAX_KEYS) {
                let arg = img.alloc(32).bindMemory(to: UInt.self, capacity: 4)
                arg[0] = UInt(bitPattern: Unmanaged.passUnretained(map).toOpaque())
                arg[1] = 0
                arg[2] = arg[0]
                arg[3] = 1
                table[k] = bpfi_key(set: staticKeySetKfunc, arg_off: UnsafeMutableRawPointer(arg), arg_on: UnsafeMutableRawPointer(arg + 2))
            }
        }
        img.mainBlock = withUnsafeBytes(of: &im) { Array($0) }
        return (img, x)
    }
}

/// bpf_prog_calc_tag: SHA-1 over the instructions with the map references' immediates
/// zeroed (so the same program loaded twice, with other fds, has the same tag).
func bytecodeTag(_ insns: [BPFInsn]) -> [UInt8] {
    var z = insns
    var pc = 0
    while pc < z.count {
        if z[pc].isWide && (z[pc].src == Pseudo.mapFD || z[pc].src == Pseudo.mapValue) {
            z[pc].imm = 0
            if pc + 1 < z.count { z[pc + 1].imm = 0 }
        }
        pc += z[pc].isWide ? 2 : 1
    }
    return Array(sha1(BPFBytecode.encode(z)).prefix(8))
}

/// A program run without an XDP context, the conformance suite's way: r1 = memory,
/// r2 = its length; it may call only helpers that need no context, and use no maps.
public final class RawProgram: @unchecked Sendable {
    public let insns: [BPFInsn]
    let image: ProgImage
    let block: UnsafeMutableRawPointer
    let counters: UnsafeMutablePointer<UInt64>

    /// Checks and builds; throws the verifier's errno and log for a refused program.
    public init(_ insns: [BPFInsn]) throws {
        let v = try Verifier.check(insns, environment: .raw, jited: false) { _, fd in
            throw fail(.EBADF, "verifier: fd \(fd) is not pointing to valid bpf_map (a raw program has no maps)")
        }
        let c = UnsafeMutablePointer<UInt64>.allocate(capacity: interpreterFaultCounters.count)
        c.initialize(repeating: 0, count: interpreterFaultCounters.count)
        do {
            (image, _) = try ProgImage.bytecode(v, counters: c, usedMaps: [], mapFor: { _ in nil }, keys: [:], raw: true)
        } catch {
            c.deallocate()
            throw error
        }
        counters = c
        let b = UnsafeMutableRawPointer.allocate(byteCount: image.mainBlock.count, alignment: 64)
        image.mainBlock.withUnsafeBytes { b.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        block = b
        self.insns = insns
    }

    deinit {
        for (p, _) in image.allocations { p.deallocate() }
        block.deallocate()
        counters.deallocate()
    }

    /// The result of one run.
    public struct Result: Sendable, Equatable {
        public let r0: UInt64
        /// The fault that ended the run (its counter's name), or nil.
        public let fault: String?
        public let faultPC: Int
        public let instructions: UInt64
    }

    /// Runs over a copy of `memory` (the program may write it); returns r0, or the fault,
    /// and the memory as the run left it.
    public func run(memory: [UInt8]) -> (Result, [UInt8]) {
        var mem = memory
        let r = mem.withUnsafeMutableBufferPointer { b in run(memory: b.baseAddress, length: b.count) }
        return (r, mem)
    }

    /// Runs over `length` bytes at `memory` (r1, r2): the run may touch only those, its
    /// stack and nothing else.
    public func run(memory: UnsafeMutablePointer<UInt8>?, length: Int) -> Result {
        let r = bpfi_run_raw(block.assumingMemoryBound(to: bpfi_image.self), memory, UInt64(length))
        let fault = r.fault == 0 ? nil : interpreterFaultCounters[Int(r.fault) - 1]
        return Result(r0: r.r0, fault: fault, faultPC: Int(r.fault_pc), instructions: r.insns)
    }
}
