// ObjectLoader.swift — an eBPF object's maps and programs loaded into the lab's kernel
// through its own syscalls, as libbpf's bpf_object__load does for the real one: create
// each map (global data maps filled with their section's bytes), write the maps' fds into
// the programs' ld_imm64 pairs (BPF_PSEUDO_MAP_FD, or BPF_PSEUDO_MAP_VALUE with the
// offset), then BPF_PROG_LOAD each program. On any error everything created is closed:
// nothing is left behind.
//
// Mirrors: tools/lib/bpf/libbpf.c (bpf_object__create_maps, bpf_object__populate_internal_map,
// bpf_object__relocate_data, bpf_object__load_progs).
//
// The mechanism, its rules and why: BPFKernel.docc/bytecode-and-the-interpreter.md (the DocC article "Bytecode and the interpreter").
import BPFInstructions
import BPFObject

/// What an object became in the lab: fds by map and program name.
public struct LoadedObject: Sendable {
    public var maps: [String: Int32] = [:]
    public var programs: [String: Int32] = [:]
}

extension BPF {
    /// Creates one of an object's maps (a global-data map filled with its section's bytes).
    /// Returns the new fd.
    public func createObjectMap(_ m: ObjectMap) throws -> Int32 {
        var attr = MapCreateAttr(type: .array, keySize: m.keySize, valueSize: m.valueSize, maxEntries: m.maxEntries,
                                 flags: m.flags, name: String(m.name.prefix(15)))
        attr.mapType = m.type
        let fd = try mapCreate(attr)
        if let v = m.initialValue {
            do { try mapUpdateElem(fd, key: [0, 0, 0, 0], value: v) } catch {
                try? objClose(fd)
                throw error
            }
        }
        return fd
    }

    /// The load attributes of an object's program, its map references filled in from
    /// `mapFDs` (by the object's map names; every map the program uses must be there).
    public func objectProgramAttr(_ object: BPFObjectFile, _ p: ObjectProgram, mapFDs: [String: Int32],
                                  target: Int32? = nil, function: String? = nil) throws -> ProgLoadAttr {
        let insns: [BPFInsn]
        do { insns = try p.instructions(mapFDs: mapFDs) } catch let e as ObjectError { throw fail(.EINVAL, e.message) }
        var attr = ProgLoadAttr(type: .xdp, insns: insns, name: String(p.name.prefix(15)), license: object.license)
        switch p.kind {
        case .xdp: attr.progType = ProgType.xdp.rawValue
        case .socketFilter: attr.progType = ProgType.socketFilter.rawValue
        case .schedCls: attr.progType = ProgType.schedCls.rawValue
        case let .ext(f):
            attr.progType = ProgType.ext.rawValue
            attr.attachFunc = function ?? f
            attr.attachProgFD = target ?? -1
        case let .tracing(kind, f):
            attr.progType = ProgType.tracing.rawValue
            attr.expectedAttachType = (kind == "fentry" ? AttachType.traceFentry : kind == "fexit" ? .traceFexit : .modifyReturn).rawValue
            attr.attachProgFD = target ?? -1
            attr.attachFunc = function ?? f
        }
        return attr
    }

    /// Loads `object`'s maps and the programs named in `only` (all when nil). Extensions and
    /// tracing programs on a BPF program need their target's fd in `targets` (by program
    /// name); `functions` renames the function a program attaches to (by program name),
    /// e.g. to put an extension written for `placeholder` into libxdp's `prog0`.
    public func loadObject(_ object: BPFObjectFile, only: [String]? = nil, targets: [String: Int32] = [:],
                           functions: [String: String] = [:]) throws -> LoadedObject {
        var out = LoadedObject()
        do {
            for m in object.maps { out.maps[m.name] = try createObjectMap(m) }
            for p in object.programs where only?.contains(p.name) ?? true {
                let attr = try objectProgramAttr(object, p, mapFDs: out.maps, target: targets[p.name], function: functions[p.name])
                do {
                    out.programs[p.name] = try progLoad(attr)
                } catch let e as BPFError {
                    throw BPFError(e.errno, "program '\(p.name)' (section \(p.section)): \(e.message)")
                }
            }
        } catch {
            for fd in out.programs.values { try? objClose(fd) }
            for fd in out.maps.values { try? objClose(fd) }
            throw error
        }
        return out
    }
}
