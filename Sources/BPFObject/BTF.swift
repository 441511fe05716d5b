// BTF.swift — just enough of the BPF Type Format to read BTF-defined maps.
//
// Mirrors: include/uapi/linux/btf.h (struct btf_header, struct btf_type and the data each
// kind carries after it), Documentation/bpf/btf.rst, and libbpf's reading of `.maps`
// (parse_btf_map_def: a map is a VAR in the ".maps" DATASEC whose type is a struct; each
// __uint(name, N) member is a pointer to an array of N elements, each __type(name, T)
// member a pointer to T).

struct BTF {
    enum Kind: UInt32 {
        case int = 1, ptr, array, structure, union, enumeration, fwd, typedef, volatile, const, restrict, function,
             functionProto, variable, datasec, float, declTag, typeTag, enum64
    }

    struct TypeEntry {
        var name: String
        var kind: Kind
        var vlen: Int
        /// size for int/struct/union/enum/datasec; the referred type for ptr/typedef/qualifiers/var/func.
        var sizeOrType: UInt32
        /// array: (element type, nelems); struct/union: members (name, type, bit offset);
        /// datasec: (var type, offset, size).
        var array: (elem: UInt32, count: UInt32)?
        var members: [(name: String, type: UInt32, offset: UInt32)] = []
        var vars: [(type: UInt32, offset: UInt32, size: UInt32)] = []
    }

    /// Type 0 is void; entries[i] is type i + 1.
    var types: [TypeEntry] = []

    init(_ data: ArraySlice<UInt8>) throws {
        let bytes = Array(data)
        let r = ByteReader(bytes: bytes)
        guard try r.u16(0, "the BTF header") == 0xeb9f else { throw ObjectError("the .BTF section has no BTF magic (0xeb9f)") }
        let hdrLen = Int(try r.u32(4, "the BTF header"))
        let typeOff = Int(try r.u32(8, "the BTF header")), typeLen = Int(try r.u32(12, "the BTF header"))
        let strOff = Int(try r.u32(16, "the BTF header")), strLen = Int(try r.u32(20, "the BTF header"))
        let tBase = hdrLen + typeOff, sBase = hdrLen + strOff
        try r.check(tBase, typeLen, "BTF types")
        try r.check(sBase, strLen, "BTF strings")
        func str(_ off: UInt32) throws -> String {
            off == 0 ? "" : try r.cString(sBase + Int(off), limit: sBase + strLen, "a BTF name")
        }
        var p = tBase
        let end = tBase + typeLen
        while p < end {
            guard types.count < 1_000_000 else { throw ObjectError("more than a million BTF types") }
            let nameOff = try r.u32(p, "BTF type \(types.count + 1)")
            let info = try r.u32(p + 4, "BTF type \(types.count + 1)")
            let st = try r.u32(p + 8, "BTF type \(types.count + 1)")
            let kindRaw = (info >> 24) & 0x1f
            guard let kind = Kind(rawValue: kindRaw) else { throw ObjectError("BTF type \(types.count + 1) has unknown kind \(kindRaw)") }
            let vlen = Int(info & 0xffff)
            var t = TypeEntry(name: try str(nameOff), kind: kind, vlen: vlen, sizeOrType: st)
            p += 12
            switch kind {
            case .int, .variable, .declTag:
                p += 4
            case .array:
                t.array = (try r.u32(p, "a BTF array"), try r.u32(p + 8, "a BTF array"))
                p += 12
            case .structure, .union:
                for m in 0..<vlen {
                    t.members.append((try str(try r.u32(p, "a BTF member")), try r.u32(p + 4, "a BTF member"), try r.u32(p + 8, "a BTF member")))
                    p += 12
                    _ = m
                }
            case .enumeration, .functionProto:
                p += 8 * vlen
            case .enum64:
                p += 12 * vlen
            case .datasec:
                for _ in 0..<vlen {
                    t.vars.append((try r.u32(p, "a BTF datasec entry"), try r.u32(p + 4, "a BTF datasec entry"), try r.u32(p + 8, "a BTF datasec entry")))
                    p += 12
                }
            case .ptr, .fwd, .typedef, .volatile, .const, .restrict, .function, .float, .typeTag:
                break
            }
            try r.check(p, 0, "BTF type \(types.count + 1)")
            types.append(t)
        }
    }

    func type(_ id: UInt32) throws -> TypeEntry {
        guard id >= 1, Int(id) <= types.count else { throw ObjectError("BTF type id \(id) is not in the table (\(types.count) types)") }
        return types[Int(id) - 1]
    }

    /// Follows typedefs and qualifiers.
    func resolve(_ id: UInt32) throws -> (UInt32, TypeEntry) {
        var id = id
        for _ in 0..<64 {
            let t = try type(id)
            switch t.kind {
            case .typedef, .volatile, .const, .restrict, .typeTag: id = t.sizeOrType
            default: return (id, t)
            }
        }
        throw ObjectError("BTF type \(id): a chain of more than 64 typedefs and qualifiers")
    }

    /// The size in bytes of a type.
    func size(_ id: UInt32, depth: Int = 0) throws -> UInt64 {
        guard depth < 64 else { throw ObjectError("BTF type \(id) nests more than 64 deep") }
        let (_, t) = try resolve(id)
        switch t.kind {
        case .int, .structure, .union, .enumeration, .enum64, .float, .datasec: return UInt64(t.sizeOrType)
        case .ptr: return 8
        case .array:
            let a = t.array!
            let (n, overflow) = UInt64(a.count).multipliedReportingOverflow(by: try size(a.elem, depth: depth + 1))
            guard !overflow else { throw ObjectError("BTF array type \(id) is larger than 2^64 bytes") }
            return n
        default: throw ObjectError("BTF type \(id) (\(t.kind)) has no size")
        }
    }

    /// A BTF-defined map's definition: its attributes by name.
    struct MapDef {
        var name: String
        var offset: UInt32
        var attrs: [String: UInt64] = [:]
    }

    /// The maps in the ".maps" DATASEC.
    func mapDefinitions() throws -> [MapDef] {
        guard let sec = types.first(where: { $0.kind == .datasec && $0.name == ".maps" }) else { return [] }
        var out: [MapDef] = []
        for v in sec.vars {
            let vt = try type(v.type)
            guard vt.kind == .variable else { throw ObjectError("the .maps section holds a BTF \(vt.kind), not a variable") }
            let (_, st) = try resolve(vt.sizeOrType)
            guard st.kind == .structure else { throw ObjectError("map '\(vt.name)' is not defined by a struct in BTF") }
            var def = MapDef(name: vt.name, offset: v.offset)
            for m in st.members {
                let (_, mt) = try resolve(m.type)
                guard mt.kind == .ptr else { throw ObjectError("map '\(vt.name)': member '\(m.name)' is not a __uint() or __type() (a pointer)") }
                let (_, pointee) = try resolve(mt.sizeOrType)
                switch m.name {
                case "key", "value":
                    def.attrs[m.name + "_size"] = try size(mt.sizeOrType)
                case "values":
                    def.attrs["values"] = 1
                default:
                    // __uint(name, N): a pointer to an array of N elements.
                    guard pointee.kind == .array, let a = pointee.array else {
                        throw ObjectError("map '\(vt.name)': member '\(m.name)' is not a __uint(name, value)")
                    }
                    def.attrs[m.name] = UInt64(a.count)
                }
            }
            out.append(def)
        }
        return out
    }
}
