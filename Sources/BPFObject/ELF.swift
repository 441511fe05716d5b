// ELF.swift — the parts of an ELF64 relocatable object that hold eBPF programs: the
// section headers, the symbol table and the REL relocations (elf(5); the eBPF ELF ABI of
// llvm/lib/Target/BPF and Documentation/bpf/llvm_reloc.rst: R_BPF_64_64 for ld_imm64,
// R_BPF_64_32 for calls, R_BPF_64_ABS32/ABS64/NODYLD32 in debug and BTF sections).

public struct ELFSection: Sendable {
    public let index: Int
    public let name: String
    public let type: UInt32
    public let flags: UInt64
    public let offset: Int
    public let size: Int
    public let link: UInt32
    public let info: UInt32
    public let entsize: UInt64

    public static let progbits: UInt32 = 1, symtab: UInt32 = 2, strtab: UInt32 = 3, rel: UInt32 = 9, nobits: UInt32 = 8
    public static let flagExec: UInt64 = 0x4
    public var isExecutable: Bool { type == ELFSection.progbits && flags & ELFSection.flagExec != 0 }
}

public struct ELFSymbol: Sendable {
    public let name: String
    public let value: UInt64
    public let size: UInt64
    public let type: UInt8      // STT_*
    public let binding: UInt8   // STB_*
    public let section: Int     // st_shndx
    public static let typeObject: UInt8 = 1, typeFunc: UInt8 = 2, typeSection: UInt8 = 3
    public static let bindGlobal: UInt8 = 1
}

public struct ELFRelocation: Sendable {
    public let offset: UInt64
    public let symbol: Int
    public let type: UInt32
    public static let bpf64_64: UInt32 = 1, bpfAbs64: UInt32 = 2, bpfAbs32: UInt32 = 3, bpfNodyld32: UInt32 = 4, bpf64_32: UInt32 = 10
}

/// An ELF64 little-endian relocatable file for EM_BPF.
public struct ELFFile: Sendable {
    public let bytes: [UInt8]
    public let sections: [ELFSection]
    public let symbols: [ELFSymbol]
    /// Relocations by the index of the section they apply to.
    public let relocations: [Int: [ELFRelocation]]

    public static let machineBPF: UInt16 = 247

    public init(_ bytes: [UInt8]) throws {
        self.bytes = bytes
        let r = ByteReader(bytes: bytes)
        try r.check(0, 64, "the ELF header")
        guard bytes[0] == 0x7f, bytes[1] == 0x45, bytes[2] == 0x4c, bytes[3] == 0x46 else {
            throw ObjectError("not an ELF file (no \\x7fELF magic)")
        }
        guard bytes[4] == 2 else { throw ObjectError("not a 64-bit ELF file (EI_CLASS \(bytes[4]))") }
        guard bytes[5] == 1 else { throw ObjectError("not a little-endian ELF file (EI_DATA \(bytes[5])); this machine runs little-endian eBPF") }
        let type = try r.u16(16, "e_type")
        guard type == 1 else { throw ObjectError("not a relocatable object (e_type \(type)); clang -c writes ET_REL") }
        let machine = try r.u16(18, "e_machine")
        guard machine == ELFFile.machineBPF else {
            throw ObjectError("not an eBPF object: e_machine is \(machine)\(machine == 62 ? " (x86-64)" : ""), expected 247 (EM_BPF); compile with clang -target bpf")
        }
        let shoff = try offset(try r.u64(0x28, "e_shoff"), "section header offset")
        let shentsize = Int(try r.u16(0x3a, "e_shentsize"))
        let shnum = Int(try r.u16(0x3c, "e_shnum"))
        let shstrndx = Int(try r.u16(0x3e, "e_shstrndx"))
        guard shentsize == 64 else { throw ObjectError("section header entries of \(shentsize) bytes; ELF64 uses 64") }
        guard shnum > 0 else { throw ObjectError("the file has no sections") }
        try r.check(shoff, shnum * 64, "the section header table")
        guard shstrndx < shnum else { throw ObjectError("the section-name table index \(shstrndx) is not a section (\(shnum) sections)") }

        struct Raw { var name: UInt32; var type: UInt32; var flags: UInt64; var off: Int; var size: Int; var link: UInt32; var info: UInt32; var ent: UInt64 }
        var raws: [Raw] = []
        for i in 0..<shnum {
            let b = shoff + i * 64
            let t = try r.u32(b + 4, "section \(i)'s type")
            let off = try offset(try r.u64(b + 0x18, "section \(i)'s offset"), "section \(i)'s offset")
            let size = try offset(try r.u64(b + 0x20, "section \(i)'s size"), "section \(i)'s size")
            if t != ELFSection.nobits && t != 0 { try r.check(off, size, "section \(i)'s contents") }
            raws.append(Raw(name: try r.u32(b, "section \(i)'s name"), type: t, flags: try r.u64(b + 8, "section \(i)'s flags"),
                            off: off, size: size, link: try r.u32(b + 0x28, "section \(i)'s link"),
                            info: try r.u32(b + 0x2c, "section \(i)'s info"), ent: try r.u64(b + 0x38, "section \(i)'s entsize")))
        }
        let names = raws[shstrndx]
        guard names.type == ELFSection.strtab else { throw ObjectError("the section-name table (section \(shstrndx)) is not a string table") }
        var secs: [ELFSection] = []
        for (i, s) in raws.enumerated() {
            let name = i == 0 ? "" : try r.cString(names.off + Int(s.name), limit: names.off + names.size, "section \(i)'s name")
            secs.append(ELFSection(index: i, name: name, type: s.type, flags: s.flags, offset: s.off, size: s.size,
                                   link: s.link, info: s.info, entsize: s.ent))
        }
        sections = secs

        // The symbol table (there is one in a relocatable object).
        var syms: [ELFSymbol] = []
        if let st = secs.first(where: { $0.type == ELFSection.symtab }) {
            guard Int(st.link) < secs.count, secs[Int(st.link)].type == ELFSection.strtab else {
                throw ObjectError("the symbol table's string table (section \(st.link)) is not a string table")
            }
            let strs = secs[Int(st.link)]
            guard st.size % 24 == 0 else { throw ObjectError("the symbol table's size \(st.size) is not a multiple of 24") }
            for i in 0 ..< st.size / 24 {
                let b = st.offset + i * 24
                let nameOff = Int(try r.u32(b, "symbol \(i)"))
                let info = try r.u8(b + 4, "symbol \(i)")
                let name = nameOff == 0 ? "" : try r.cString(strs.offset + nameOff, limit: strs.offset + strs.size, "symbol \(i)'s name")
                syms.append(ELFSymbol(name: name, value: try r.u64(b + 8, "symbol \(i)"), size: try r.u64(b + 16, "symbol \(i)"),
                                      type: info & 0xf, binding: info >> 4, section: Int(try r.u16(b + 6, "symbol \(i)"))))
            }
        }
        symbols = syms

        var rels: [Int: [ELFRelocation]] = [:]
        for s in secs where s.type == ELFSection.rel {
            guard s.size % 16 == 0 else { throw ObjectError("relocation section '\(s.name)' is \(s.size) bytes, not a multiple of 16") }
            let target = Int(s.info)
            guard target < secs.count else { throw ObjectError("relocation section '\(s.name)' applies to section \(target), which does not exist") }
            var list: [ELFRelocation] = []
            for i in 0 ..< s.size / 16 {
                let b = s.offset + i * 16
                let info = try r.u64(b + 8, "relocation \(i) of '\(s.name)'")
                let sym = Int(info >> 32)
                guard sym < syms.count else { throw ObjectError("relocation \(i) of '\(s.name)' names symbol \(sym); the table has \(syms.count)") }
                list.append(ELFRelocation(offset: try r.u64(b, "relocation \(i) of '\(s.name)'"), symbol: sym, type: UInt32(truncatingIfNeeded: info)))
            }
            rels[target, default: []] += list
        }
        relocations = rels
    }

    public func section(named n: String) -> ELFSection? { sections.first { $0.name == n } }

    /// A section's contents (zeros for NOBITS).
    public func contents(_ s: ELFSection) -> [UInt8] {
        s.type == ELFSection.nobits ? [UInt8](repeating: 0, count: s.size) : Array(bytes[s.offset ..< s.offset + s.size])
    }
}
