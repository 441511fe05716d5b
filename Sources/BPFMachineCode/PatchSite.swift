// PatchSite.swift — a 5-byte site in generated code that is either the NOP the kernel
// leaves at static branches (arch_jump_label_transform: "nop" state) or a jmp rel32 to its
// target, switched live with text_poke_bp.
import CMachineCode

public final class PatchSite: @unchecked Sendable {
    public let block: CodeBlock
    public let site: UnsafeMutableRawPointer
    private let jmp: [UInt8]
    public private(set) var isJump = false

    /// `site` inside `block`, whose jmp goes to `target`; it starts as the NOP.
    public init(block: CodeBlock, site: UnsafeMutableRawPointer, target: UInt64) throws {
        self.block = block
        self.site = site
        jmp = try X86Assembler.jmpRel32(from: UInt64(UInt(bitPattern: site)), to: target)
    }

    /// Sets the site before any thread runs the code (the image is not published yet).
    public func setEarly(jump: Bool) throws {
        let e = (jump ? jmp : X86Assembler.nop5).withUnsafeBufferPointer {
            cmc_text_poke_early(block.writable(site).assumingMemoryBound(to: UInt8.self), $0.baseAddress, 5)
        }
        guard e == 0 else { throw MachineCodeError(errno: e, message: "membarrier(SYNC_CORE) failed (errno \(e))") }
        isJump = jump
    }

    /// Switches the live site (text_poke_bp). Callers serialise (the static key's mutex).
    public func set(jump: Bool) throws {
        guard jump != isJump else { return }
        try TextPoke.poke(site, in: block, jump ? jmp : X86Assembler.nop5)
        isJump = jump
    }

    /// Points the site at `target` (a jmp rel32), or back to the NOP (nil), live — a site
    /// whose target changes (a direct tail call's, re-pointed on every slot update).
    /// Callers serialise (the prog array's poke mutex).
    public func retarget(_ target: UInt64?) throws {
        let insn = try target.map { try X86Assembler.jmpRel32(from: UInt64(UInt(bitPattern: site)), to: $0) } ?? X86Assembler.nop5
        if insn == bytes { return }
        try TextPoke.poke(site, in: block, insn)
        isJump = target != nil
        currentTarget = target
    }
    /// Where a retargeted site jumps (nil: the NOP).
    public private(set) var currentTarget: UInt64?

    /// The site's current bytes.
    public var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: site, count: 5)) }
}
