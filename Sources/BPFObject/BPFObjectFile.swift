// BPFObjectFile.swift — an eBPF object as clang writes it, read into programs and maps the
// lab can load: what libbpf's bpf_object__open does (bpf_object__elf_collect,
// bpf_object__init_maps for BTF-defined `.maps` and legacy `maps`, global data sections as
// single-entry array maps, bpf_object__collect_relos, and the subprogram appending of
// bpf_object__relocate — every `.text` function a program calls is appended to it, once,
// and the call's offset fixed).
//
// Written anew in Swift rather than through libbpf: libbpf 1.1 (Debian's) cannot give a
// program's relocated instructions without loading it into the running kernel
// (bpf_object__prepare came in 1.6), and the lab fuzzes this reader with random bytes
// in-process, where a parser that can only throw is what is wanted.
import BPFInstructions

/// How a map reference in a program's ld_imm64 is to be filled in.
public enum MapReference: Sendable, Equatable {
    /// The map's address (BPF_PSEUDO_MAP_FD).
    case map(String)
    /// An address inside value 0 of a global-data map (BPF_PSEUDO_MAP_VALUE).
    case value(String, offset: UInt32)
}

public struct ObjectProgram: Sendable {
    /// The program's function name (libbpf's program name).
    public let name: String
    /// Its section ("xdp", "freplace/placeholder", …).
    public let section: String
    /// What the section name says about the program: its type and what it attaches to.
    public let kind: ProgramKind
    /// The main function followed by every subprogram it calls (calls resolved).
    public let insns: [BPFInsn]
    /// Instruction slot → the map its ld_imm64 refers to.
    public let mapReferences: [Int: MapReference]
    /// Global functions among the appended subprograms: (name, first slot).
    public let functions: [(name: String, slot: Int)]
}

/// A program's type from its section name (libbpf's section_defs, in brief).
public enum ProgramKind: Sendable, Equatable {
    case xdp
    case socketFilter
    case schedCls
    /// freplace/FUNC: an extension of FUNC in a program given at load.
    case ext(function: String)
    /// fentry/FUNC, fexit/FUNC, fmod_ret/FUNC.
    case tracing(kind: String, function: String)

    static func of(section s: String) throws -> ProgramKind {
        func rest(_ p: String) -> String { String(s.dropFirst(p.count)) }
        if s == "xdp" || s.hasPrefix("xdp/") || s.hasPrefix("xdp.frags") { return .xdp }
        if s == "socket" || s.hasPrefix("socket/") { return .socketFilter }
        if s == "tc" || s == "classifier" || s.hasPrefix("tc/") || s.hasPrefix("classifier/") { return .schedCls }
        for p in ["freplace/"] where s.hasPrefix(p) && s.count > p.count { return .ext(function: rest(p)) }
        for k in ["fentry", "fexit", "fmod_ret"] where s.hasPrefix(k + "/") && s.count > k.count + 1 {
            return .tracing(kind: k, function: rest(k + "/"))
        }
        throw ObjectError("section '\(s.prefix(64))': a program type the lab does not model (known: xdp, xdp/…, socket, tc, classifier, freplace/FUNC, fentry/FUNC, fexit/FUNC, fmod_ret/FUNC)")
    }
}

public struct ObjectMap: Sendable, Equatable {
    public let name: String
    /// enum bpf_map_type.
    public let type: UInt32
    public let keySize: UInt32
    public let valueSize: UInt32
    public let maxEntries: UInt32
    public let flags: UInt32
    /// Global data (.data, .rodata, .bss): value 0's initial bytes.
    public let initialValue: [UInt8]?
}

public struct BPFObjectFile: Sendable {
    public let programs: [ObjectProgram]
    public let maps: [ObjectMap]
    public let license: String

    /// Map types the lab models: hash, array, prog_array, percpu_array.
    public static let supportedMapTypes: [UInt32: String] = [1: "hash", 2: "array", 3: "prog_array", 6: "percpu_array"]

    public init(bytes: [UInt8]) throws {
        let elf = try ELFFile(bytes)
        guard let lic = elf.section(named: "license") else {
            throw ObjectError("missing section 'license' (char _license[] SEC(\"license\") = \"GPL\";)")
        }
        let licBytes = elf.contents(lic)
        license = String(decoding: licBytes.prefix { $0 != 0 }, as: UTF8.self)

        // Maps: BTF-defined (.maps), legacy (maps), and global data.
        var maps: [ObjectMap] = []
        var mapAtSymbol: [Int: String] = [:]        // symbol index → map name, for .maps / maps
        var dataSection: [Int: String] = [:]        // section index → its global-data map
        if let ms = elf.section(named: ".maps") {
            guard let btfSec = elf.section(named: ".BTF") else {
                throw ObjectError("section '.maps' holds BTF-defined maps, but the object has no .BTF section (compile with -g)")
            }
            let btf = try BTF(ArraySlice(elf.contents(btfSec)))
            for d in try btf.mapDefinitions() {
                if d.attrs["values"] != nil { throw ObjectError("map '\(d.name)': initial values (__array(values, …)) are not supported by the lab") }
                guard let t = d.attrs["type"] else { throw ObjectError("map '\(d.name)' has no type (__uint(type, …))") }
                func attr(_ k: String) throws -> UInt32 {
                    guard let v = d.attrs[k] else { return 0 }
                    guard v <= UInt64(UInt32.max) else { throw ObjectError("map '\(d.name)': \(k) \(v) does not fit in 32 bits") }
                    return UInt32(v)
                }
                let m = ObjectMap(name: d.name, type: UInt32(truncatingIfNeeded: t), keySize: try attr("key_size"), valueSize: try attr("value_size"),
                                  maxEntries: try attr("max_entries"), flags: try attr("map_flags"), initialValue: nil)
                try Self.checkType(m)
                maps.append(m)
                // By name: clang leaves the DATASEC's offsets zero (libbpf fixes them up from
                // the symbols, btf_fixup_datasec), so the symbol is what places a map.
                guard let si = elf.symbols.firstIndex(where: { $0.section == ms.index && $0.name == d.name }) else {
                    throw ObjectError("map '\(d.name)' is in .maps' BTF but has no symbol in section .maps")
                }
                mapAtSymbol[si] = d.name
            }
        }
        if let legacy = elf.section(named: "maps") {
            let r = ByteReader(bytes: elf.bytes)
            for (si, sym) in elf.symbols.enumerated() where sym.section == legacy.index && !sym.name.isEmpty && sym.type != ELFSymbol.typeSection {
                let b = legacy.offset + (try offset(sym.value, "map '\(sym.name)''s offset"))
                guard b + 20 <= legacy.offset + legacy.size else { throw ObjectError("legacy map '\(sym.name)' runs past the end of section 'maps'") }
                let m = ObjectMap(name: sym.name, type: try r.u32(b, "map"), keySize: try r.u32(b + 4, "map"), valueSize: try r.u32(b + 8, "map"),
                                  maxEntries: try r.u32(b + 12, "map"), flags: try r.u32(b + 16, "map"), initialValue: nil)
                try Self.checkType(m)
                maps.append(m)
                mapAtSymbol[si] = sym.name
            }
        }
        for s in elf.sections where s.name == ".data" || s.name == ".bss" || s.name == ".rodata" || s.name.hasPrefix(".rodata.") || s.name.hasPrefix(".data.") {
            guard s.size > 0 else { continue }
            let name = String(s.name.prefix(15))
            maps.append(ObjectMap(name: name, type: 2, keySize: 4, valueSize: UInt32(s.size), maxEntries: 1, flags: 0,
                                  initialValue: elf.contents(s)))
            dataSection[s.index] = name
        }
        if Set(maps.map(\.name)).count != maps.count { throw ObjectError("two maps share a name") }
        self.maps = maps

        // Functions: every FUNC symbol in an executable section.
        struct Function { var name: String; var section: Int; var start: Int; var count: Int; var global: Bool }
        var functions: [Function] = []
        for s in elf.symbols where s.type == ELFSymbol.typeFunc {
            guard s.section > 0, s.section < elf.sections.count, elf.sections[s.section].isExecutable else { continue }
            let sec = elf.sections[s.section]
            guard s.value % 8 == 0, s.size % 8 == 0, s.size <= UInt64(sec.size), s.value <= UInt64(sec.size) - s.size else {
                throw ObjectError("function '\(s.name)' (\(s.value)+\(s.size)) does not fit its section '\(sec.name)' as whole instructions")
            }
            functions.append(Function(name: s.name, section: s.section, start: Int(s.value / 8), count: Int(s.size / 8), global: s.binding == ELFSymbol.bindGlobal))
        }
        var insnsOf: [Int: [BPFInsn]] = [:]
        for s in elf.sections where s.isExecutable {
            guard s.size % 8 == 0 else { throw ObjectError("section '\(s.name)' is \(s.size) bytes, not whole 8-byte instructions") }
            insnsOf[s.index] = try BPFBytecode.decode(elf.contents(s))
        }
        func function(in section: Int, at slot: Int) -> Function? {
            functions.first { $0.section == section && slot >= $0.start && slot < $0.start + $0.count }
        }
        func relocation(_ section: Int, _ slot: Int) -> ELFRelocation? {
            elf.relocations[section]?.first { $0.offset == UInt64(slot * 8) }
        }

        // Programs: functions in executable sections other than .text.
        var programs: [ObjectProgram] = []
        for f in functions where elf.sections[f.section].name != ".text" {
            let secName = elf.sections[f.section].name
            let kind = try ProgramKind.of(section: secName)
            var out: [BPFInsn] = []
            var refs: [Int: MapReference] = [:]
            var placed: [String: Int] = [:]     // function name → its first slot in `out`
            var exported: [(String, Int)] = []
            var pending: [(slot: Int, callee: Function, offsetInCallee: Int)] = []
            func append(_ fn: Function) throws {
                placed[fn.name] = out.count
                if fn.global && fn.name != f.name { exported.append((fn.name, out.count)) }
                let code = insnsOf[fn.section]!
                let base = out.count
                var i = 0
                while i < fn.count {
                    let slot = fn.start + i
                    let insn = code[slot]
                    out.append(insn)
                    if let rel = relocation(fn.section, slot) {
                        try apply(rel, insn: insn, at: base + i, inSection: fn.section, slot: slot)
                    } else if insn.isLocalCall {
                        // A call resolved by the compiler within the section.
                        let t = slot + 1 + Int(insn.imm)
                        guard let callee = function(in: fn.section, at: t) else {
                            throw ObjectError("'\(fn.name)' calls instruction \(t) of '\(secName)', which is in no function")
                        }
                        pending.append((base + i, callee, t - callee.start))
                    }
                    if insn.isWide {
                        guard i + 1 < fn.count else { throw ObjectError("'\(fn.name)' ends in half an ld_imm64") }
                        out.append(code[slot + 1])
                        i += 2
                    } else {
                        i += 1
                    }
                }
            }
            func apply(_ rel: ELFRelocation, insn: BPFInsn, at pos: Int, inSection: Int, slot: Int) throws {
                let sym = elf.symbols[rel.symbol]
                switch rel.type {
                case ELFRelocation.bpf64_64:
                    guard insn.isWide else { throw ObjectError("relocation R_BPF_64_64 at instruction \(slot) of '\(elf.sections[inSection].name)' is not on an ld_imm64") }
                    if let m = mapAtSymbol[rel.symbol] {
                        refs[pos] = .map(m)
                    } else if let d = dataSection[sym.section] {
                        let base = sym.type == ELFSymbol.typeSection ? 0 : sym.value
                        guard base <= UInt64(UInt32.max) else { throw ObjectError("global-data symbol '\(sym.name)' has offset \(base)") }
                        let off = Int64(base) + Int64(insn.imm)
                        guard off >= 0 && off <= Int64(UInt32.max) else { throw ObjectError("global-data reference at instruction \(slot) has offset \(off)") }
                        refs[pos] = .value(d, offset: UInt32(off))
                    } else if sym.section > 0 && sym.section < elf.sections.count && elf.sections[sym.section].isExecutable {
                        throw ObjectError("instruction \(slot) of '\(elf.sections[inSection].name)' takes the address of a function (BPF_PSEUDO_FUNC callbacks are not supported)")
                    } else {
                        let where_ = sym.section > 0 && sym.section < elf.sections.count ? elf.sections[sym.section].name : "no section"
                        throw ObjectError("relocation against '\(sym.name)' (in \(where_)) at instruction \(slot): not a map or global data the lab knows")
                    }
                case ELFRelocation.bpf64_32:
                    guard insn.isLocalCall else { throw ObjectError("relocation R_BPF_64_32 at instruction \(slot) is not on a bpf-to-bpf call") }
                    guard sym.section > 0, sym.section < elf.sections.count else { throw ObjectError("call at instruction \(slot) to '\(sym.name)', which is undefined (an extern function?)") }
                    let target: Int
                    if sym.type == ELFSymbol.typeSection {
                        target = Int(insn.imm) + 1   // relative to the section's start
                    } else {
                        target = Int(sym.value / 8) + Int(insn.imm) + 1
                    }
                    guard let callee = function(in: sym.section, at: target) else {
                        throw ObjectError("call at instruction \(slot) to instruction \(target) of '\(elf.sections[sym.section].name)', which is in no function")
                    }
                    pending.append((pos, callee, target - callee.start))
                default:
                    throw ObjectError("unknown relocation type \(rel.type) at instruction \(slot) of '\(elf.sections[inSection].name)' (the lab knows R_BPF_64_64 and R_BPF_64_32)")
                }
            }
            try append(f)
            // Append every callee once, then point each call at it.
            var k = 0
            while k < pending.count {
                let (pos, callee, within) = pending[k]
                if placed[callee.name] == nil {
                    guard out.count < BPFLimits.maxInstructions else { throw ObjectError("program '\(f.name)' grows past \(BPFLimits.maxInstructions) instructions") }
                    try append(callee)
                }
                let dest = placed[callee.name]! + within
                out[pos].imm = Int32(dest - (pos + 1))
                out[pos].src = Pseudo.call
                k += 1
            }
            programs.append(ObjectProgram(name: f.name, section: secName, kind: kind, insns: out, mapReferences: refs,
                                          functions: exported.map { (name: $0.0, slot: $0.1) }))
        }
        guard !programs.isEmpty else {
            throw ObjectError("missing program section: no function in a section like SEC(\"xdp\") (only .text)")
        }
        self.programs = programs
    }

    static func checkType(_ m: ObjectMap) throws {
        guard supportedMapTypes[m.type] != nil else {
            throw ObjectError("map '\(m.name)' has type \(m.type), which the lab does not model (it has \(supportedMapTypes.sorted { $0.key < $1.key }.map { "\($0.value) (\($0.key))" }.joined(separator: ", ")))")
        }
    }

    public func program(named n: String) -> ObjectProgram? { programs.first { $0.name == n } }
}

extension ObjectProgram {
    /// The instructions with every map reference filled in from `mapFDs` (by the object's
    /// map names): BPF_PSEUDO_MAP_FD, or BPF_PSEUDO_MAP_VALUE with the offset.
    public func instructions(mapFDs: [String: Int32]) throws -> [BPFInsn] {
        var insns = self.insns
        for (slot, ref) in mapReferences {
            switch ref {
            case let .map(name):
                guard let fd = mapFDs[name] else { throw ObjectError("program '\(self.name)' uses map '\(name)', which was not created") }
                insns[slot].src = Pseudo.mapFD
                insns[slot].imm = fd
                insns[slot + 1].imm = 0
            case let .value(name, off):
                guard let fd = mapFDs[name] else { throw ObjectError("program '\(self.name)' uses map '\(name)', which was not created") }
                insns[slot].src = Pseudo.mapValue
                insns[slot].imm = fd
                insns[slot + 1].imm = Int32(bitPattern: off)
            }
        }
        return insns
    }
}
