// Bpftool.swift — listing objects the way bpftool does.
//
// Mirrors: tools/bpf/bpftool/prog.c (do_show: walk BPF_PROG_GET_NEXT_ID, open each ID with
// BPF_PROG_GET_FD_BY_ID, read BPF_OBJ_GET_INFO_BY_FD, print, close) and map.c. A program
// that disappears between the ID walk and the open (ENOENT) is skipped, as bpftool does.

import BPFInstructions

public enum Bpftool {
    /// `bpftool prog dump xlated`: the program's instructions as the interpreter runs them,
    /// map references shown as map[id:N] (and map[id:N][0]+off for direct value access).
    /// EINVAL for a program without instructions (a native body or a step program).
    public static func dumpXlated(_ bpf: BPF, fd: Int32) throws -> String {
        let p = try bpf.fds.getProg(fd)
        defer { p.put() }  // getProg
        guard let bc = p.bytecode else {
            throw fail(.EINVAL, "'\(p.name)' has no instructions: its body is native (\(p.body.symbol))")
        }
        // Addresses back to maps: the xlated pairs hold a map record's or a value's address.
        var shown = bc.xlated
        var pc = 0
        while pc < shown.count {
            let i = shown[pc]
            if i.isWide && i.src != 0 {
                let addr = UInt64(UInt32(bitPattern: i.imm)) | UInt64(UInt32(bitPattern: shown[pc + 1].imm)) << 32
                for m in p.usedMaps {
                    let rec = UInt64(UInt(bitPattern: m.record))
                    let values = UInt64(UInt(bitPattern: m.record.pointee.values))
                    if addr == rec && (i.src == Pseudo.mapFD || i.src == Pseudo.mapIndex) {
                        shown[pc].imm = Int32(bitPattern: m.id)
                        shown[pc + 1].imm = 0
                    } else if values != 0 && addr >= values && addr < values + m.record.pointee.values_bytes {
                        shown[pc].imm = Int32(bitPattern: m.id)
                        shown[pc + 1].imm = Int32(truncatingIfNeeded: addr - values)
                    }
                }
            }
            pc += i.isWide ? 2 : 1
        }
        return Disassembler.listing(shown) { "id:\($0.imm)" }
    }

    /// Every live program's info, in ID order, through the facade's own commands.
    public static func progInfos(_ bpf: BPF) -> [ProgInfo] {
        var out: [ProgInfo] = []
        var id: UInt32 = 0
        while let next = try? bpf.progGetNextId(id) {
            id = next
            guard let fd = try? bpf.progGetFdById(id) else { continue }  // raced with a free
            if let info = try? bpf.progGetInfo(fd) {
                // The fd we opened holds a reference of its own; report the count without it.
                out.append(ProgInfo(id: info.id, type: info.type, name: info.name, tag: info.tag,
                                    refcnt: info.refcnt - 1, runCount: info.runCount,
                                    runTimeNs: info.runTimeNs, recursionMisses: info.recursionMisses,
                                    loadTimeNs: info.loadTimeNs, mapIDs: info.mapIDs, jited: info.jited,
                                    chainCalls: info.chainCalls))
            }
            try? bpf.objClose(fd)
        }
        return out
    }

    /// `bpftool prog show`, plain text.
    public static func progShow(_ infos: [ProgInfo]) -> String {
        var s = ""
        for i in infos {
            s += "\(i.id): \(i.type.name)  name \(i.name.isEmpty ? "<anon>" : i.name)  tag \(i.tag)  refcnt \(i.refcnt)"
            if i.runCount > 0 || i.runTimeNs > 0 { s += "  run_time_ns \(i.runTimeNs) run_cnt \(i.runCount)" }
            if i.recursionMisses > 0 { s += "  recursion_misses \(i.recursionMisses)" }
            s += "\n\tloaded_at +\(i.loadTimeNs / 1_000_000_000)s  \(i.jited ? "jited" : "interpreted")"
            if i.chainCalls { s += "  chain_calls" }
            if !i.mapIDs.isEmpty { s += "  map_ids \(i.mapIDs.map(String.init).joined(separator: ","))" }
            s += "\n"
        }
        return s
    }

    /// `bpftool prog show --json`.
    public static func progShowJSON(_ infos: [ProgInfo]) -> String {
        let items = infos.map { i in
            "{\"id\":\(i.id),\"type\":\"\(i.type.name)\",\"name\":\"\(i.name)\",\"tag\":\"\(i.tag)\",\"refcnt\":\(i.refcnt)," +
            "\"run_cnt\":\(i.runCount),\"run_time_ns\":\(i.runTimeNs),\"recursion_misses\":\(i.recursionMisses)," +
            "\"jited\":\(i.jited),\"chain_calls\":\(i.chainCalls),\"map_ids\":[\(i.mapIDs.map(String.init).joined(separator: ","))]}"
        }
        return "[" + items.joined(separator: ",") + "]"
    }
}
