// CodeRegion.swift — executable memory for generated code, as the kernel keeps its JIT
// images and trampolines inside the kernel's text range: one region mapped within rel32
// reach of the lab's own code (so generated code calls the lab's C functions, and jumps
// between images, directly), written through a separate writable mapping of the same
// memory (W^X: no page is writable and executable at once), handed out in 64-byte-aligned
// blocks. Unused bytes are int3. A block is given back only when no CPU can still be
// running it: the caller frees it after a grace period, as bpf_jit_binary_free runs from
// an RCU callback.
import CMachineCode
#if canImport(Glibc)
import Glibc
#endif

public struct MachineCodeError: Error, CustomStringConvertible, Equatable {
    public let errno: Int32
    public let message: String
    public var description: String { message }
}

/// A piece of generated code: where it runs, and where it is written.
public struct CodeBlock: @unchecked Sendable, Equatable {
    public let rx: UnsafeMutableRawPointer
    public let rw: UnsafeMutableRawPointer
    public let size: Int
    public var address: UInt64 { UInt64(UInt(bitPattern: rx)) }
    /// The writable alias of an executable address inside the block.
    public func writable(_ at: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer { rw + (at - rx) }
}

public final class CodeRegion: @unchecked Sendable {
    public static let blockAlign = 64
    private var region = cmc_region()
    private let state: TextMutex<[Range<Int>]>   // free ranges (offsets), sorted
    public let size: Int

    /// The process's region (16 MiB), mapped on first use near the lab's code.
    public static let shared: CodeRegion? = try? CodeRegion(size: 16 << 20)

    public init(size: Int) throws {
        self.size = size
        var r = cmc_region()
        let near = unsafeBitCast(cmc_call2 as @convention(c) (UnsafeRawPointer?, UnsafeRawPointer?, UnsafeRawPointer?) -> UInt32, to: UnsafeRawPointer.self)
        let e = cmc_region_map(size, near, &r)
        guard e == 0 else {
            throw MachineCodeError(errno: e, message: "cannot map \(size >> 20) MiB of code memory within rel32 reach of the lab's code (errno \(e))")
        }
        region = r
        state = TextMutex([0..<size])
    }

    deinit { cmc_region_unmap(&region) }

    /// A block of at least `bytes`, filled with int3; nil when the region is full.
    public func allocate(_ bytes: Int) -> CodeBlock? {
        let need = (max(1, bytes) + CodeRegion.blockAlign - 1) / CodeRegion.blockAlign * CodeRegion.blockAlign
        let off: Int? = state.withLock { free in
            guard let i = free.firstIndex(where: { $0.count >= need }) else { return nil }
            let r = free[i]
            if r.count == need { free.remove(at: i) } else { free[i] = (r.lowerBound + need)..<r.upperBound }
            return r.lowerBound
        }
        guard let off else { return nil }
        return CodeBlock(rx: UnsafeMutableRawPointer(region.rx + off), rw: UnsafeMutableRawPointer(region.rw + off), size: need)
    }

    /// Gives a block back (its bytes become int3 again). Only once no CPU can be running it.
    public func free(_ b: CodeBlock) {
        b.rw.initializeMemory(as: UInt8.self, repeating: 0xcc, count: b.size)
        let off = b.rx - UnsafeMutableRawPointer(region.rx)
        state.withLock { free in
            free.append(off..<(off + b.size))
            free.sort { $0.lowerBound < $1.lowerBound }
            var merged: [Range<Int>] = []
            for r in free {
                if let last = merged.last, last.upperBound == r.lowerBound { merged[merged.count - 1] = last.lowerBound..<r.upperBound } else { merged.append(r) }
            }
            free = merged
        }
    }

    /// Bytes still free.
    public var freeBytes: Int { state.withLock { $0.reduce(0) { $0 + $1.count } } }

    /// Finishes `a` (assembled for `b`'s address) and installs it: an error, not wrong or
    /// overflowing code, when a displacement cannot reach or the code outgrew its block.
    public static func install(_ a: X86Assembler, in b: CodeBlock) throws {
        precondition(a.origin == b.address, "assembled for another address")
        let code = try a.finish()
        guard code.count <= b.size else {
            throw MachineCodeError(errno: 7, message: "the generated code (\(code.count) bytes) outgrew its \(b.size)-byte block")  // E2BIG
        }
        try install(code, in: b)
    }

    /// Writes finished code into a block no CPU runs yet, then serialises every core.
    public static func install(_ code: [UInt8], in b: CodeBlock) throws {
        precondition(code.count <= b.size)
        let e = code.withUnsafeBufferPointer { cmc_text_poke_early(b.rw.assumingMemoryBound(to: UInt8.self), $0.baseAddress, Int32($0.count)) }
        guard e == 0 else { throw MachineCodeError(errno: e, message: "membarrier(SYNC_CORE) failed (errno \(e)): cannot publish generated code safely") }
    }
}

/// text_poke_bp on a site inside a block: `insn` replaces the bytes at `site` while other
/// threads may be running them.
public enum TextPoke {
    /// Writes `bytes` at `at` (inside `b`) before any thread runs that code: a plain write
    /// of the writable mapping and a core sync, as text_poke_early.
    public static func writeEarly(_ bytes: [UInt8], at: UnsafeMutableRawPointer, in b: CodeBlock) throws {
        precondition(at >= b.rx && at + bytes.count <= b.rx + b.size, "outside the block")
        let e = bytes.withUnsafeBufferPointer { cmc_text_poke_early(b.writable(at).assumingMemoryBound(to: UInt8.self), $0.baseAddress, Int32($0.count)) }
        guard e == 0 else { throw MachineCodeError(errno: e, message: "membarrier(SYNC_CORE) failed (errno \(e))") }
    }

    public static func poke(_ site: UnsafeMutableRawPointer, in b: CodeBlock, _ insn: [UInt8]) throws {
        let e = insn.withUnsafeBufferPointer {
            cmc_text_poke_bp(site.assumingMemoryBound(to: UInt8.self), b.writable(site).assumingMemoryBound(to: UInt8.self), $0.baseAddress, Int32($0.count))
        }
        guard e == 0 else {
            throw MachineCodeError(errno: e, message: e == EINVAL ? "text_poke_bp: \(insn) is not an instruction the int3 handler can emulate (a NOP, jmp or call)"
                                                            : "text_poke_bp: membarrier(SYNC_CORE) failed (errno \(e))")
        }
    }

    public static var stats: cmc_poke_stats { cmc_poke_stats_get() }
}
