// ObjectLoaderTests — the BPF C programs shipped in bpf/, compiled by clang (bpf/build.sh),
// read by the lab's ELF loader and run by its interpreter; and bad objects refused by name
// with nothing loaded.
import XCTest
import Foundation
import CBPFShims
import BPFPrograms
import BPFInstructions
import BPFObject
@testable import BPFKernel

/// The folder of compiled objects (bpf/out), built on demand; nil (with the reason) when
/// clang or libbpf's headers are missing.
let shippedObjects: Result<URL, ObjectSkip> = {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let bpfDir = root.appendingPathComponent("bpf")
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/bash")
    p.arguments = [bpfDir.appendingPathComponent("build.sh").path]
    let err = Pipe()
    p.standardOutput = FileHandle.nullDevice
    p.standardError = err
    do { try p.run() } catch { return .failure(ObjectSkip(reason: "cannot run bpf/build.sh: \(error)")) }
    let msg = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)  // before the wait: a full pipe would block it
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
        return .failure(ObjectSkip(reason: "bpf/build.sh failed (clang with -target bpf and libbpf-dev's headers are needed): \(msg.prefix(300))"))
    }
    return .success(bpfDir.appendingPathComponent("out"))
}()

struct ObjectSkip: Error { let reason: String }

final class ObjectLoaderTests: KernelTestCase {
    func object(_ name: String) throws -> BPFObjectFile? {
        switch shippedObjects {
        case let .failure(s):
            print("ObjectLoaderTests: skipped — \(s.reason)")
            return nil
        case let .success(dir):
            return try BPFObjectFile(bytes: Array(try Data(contentsOf: dir.appendingPathComponent("\(name).o"))))
        }
    }

    func testXdpDummyPairLoadsAndReturnsPassAndDrop() throws {
        guard let obj = try object("xdp_dummy") else { return }
        XCTAssertEqual(obj.license, "GPL")
        XCTAssertEqual(Set(obj.programs.map(\.name)), ["xdp_dummy_pass", "xdp_dummy_drop"])
        let l = try bpf.loadObject(obj)
        XCTAssertEqual(try run(l.programs["xdp_dummy_pass"]!), UInt32(CBPF_XDP_PASS))
        XCTAssertEqual(try run(l.programs["xdp_dummy_drop"]!), UInt32(CBPF_XDP_DROP))
    }

    func testSelfTailCallFromClangRuns34Times() throws {
        guard let obj = try object("tail_loop") else { return }
        let l = try bpf.loadObject(obj)
        try setSlot(l.maps["jmp_table"]!, 0, l.programs["tail_loop"]!)
        XCTAssertEqual(try run(l.programs["tail_loop"]!), UInt32(CBPF_XDP_DROP))
        XCTAssertEqual(u32(try bpf.mapLookupElem(l.maps["runs"]!, key: key(0))), 34)
    }

    func testParserCountsPortsInAHashMapAndDropsPort9000() throws {
        guard let obj = try object("xdp_parser") else { return }
        let l = try bpf.loadObject(obj)
        let fd = l.programs["xdp_parser"]!
        func udp(_ port: UInt16) -> [UInt8] {
            var f = [UInt8](repeating: 0, count: 64)
            f[12] = 0x08; f[13] = 0x00                 // ETH_P_IP
            f[14] = 0x45; f[23] = 17                   // IPv4, IHL 5, UDP
            f[36] = UInt8(port >> 8); f[37] = UInt8(port & 0xff)
            return f
        }
        XCTAssertEqual(try bpf.progTestRun(TestRunAttr(progFD: fd, data: udp(9000))).retval, UInt32(CBPF_XDP_DROP))
        XCTAssertEqual(try bpf.progTestRun(TestRunAttr(progFD: fd, data: udp(53))).retval, UInt32(CBPF_XDP_PASS))
        XCTAssertEqual(try bpf.progTestRun(TestRunAttr(progFD: fd, data: udp(53))).retval, UInt32(CBPF_XDP_PASS))
        var arp = udp(53); arp[12] = 0x08; arp[13] = 0x06
        XCTAssertEqual(try bpf.progTestRun(TestRunAttr(progFD: fd, data: arp)).retval, UInt32(CBPF_XDP_PASS))
        XCTAssertEqual(try bpf.mapLookupElem(l.maps["port_counts"]!, key: key(53)), [2, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(try bpf.mapLookupElem(l.maps["port_counts"]!, key: key(9000)), [1, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(try bpf.mapLookupElem(l.maps[".bss"]!, key: key(0)), [4, 0, 0, 0, 0, 0, 0, 0], "packets_seen in .bss")
    }

    func testLibxdpStyleDispatcherContinuesPastAnEmptySlot() throws {
        guard let obj = try object("xdp_dispatcher") else { return }
        let l = try bpf.loadObject(obj)
        XCTAssertEqual(try run(l.programs["xdp_dispatcher"]!), UInt32(CBPF_XDP_PASS), "prog0 returns 31, which its mask continues on")
        XCTAssertEqual(obj.program(named: "xdp_dispatcher")!.functions.map(\.name).sorted(), (0..<10).map { "prog\($0)" }.sorted(),
                       "the ten placeholders are appended as global functions")
    }

    func testFreplaceOfAnInterpretedTargetIsRefusedAndAJitedSlotTakesIt() throws {
        guard let target = try object("freplace_target"), let ext = try object("freplace_ext") else { return }
        let t = try bpf.loadObject(target)
        XCTAssertEqual(try run(t.programs["freplace_target"]!), UInt32(CBPF_XDP_PASS))
        assertErrno(.EINVAL, "an interpreted target") {
            try bpf.loadObject(ext, targets: ["new_placeholder": t.programs["freplace_target"]!])
        }
        // libxdp's dispatcher (native, JIT-ed) takes the clang-built extension in prog0.
        let d = try loadLibxdpDispatcher(enabled: 1)
        let e = try bpf.loadObject(ext, targets: ["new_placeholder": d], functions: ["new_placeholder": "prog0"])
        let link = try bpf.linkCreate(LinkCreateAttr(progFD: e.programs["new_placeholder"]!, attachType: .unspecified))
        XCTAssertEqual(try run(d), UInt32(CBPF_XDP_DROP))
        try bpf.objClose(link)
    }

    func testSeed004AttachDataIsReadFourWays() throws {
        guard let obj = try object("attach_data") else { return }
        let target = try loadReturning(2, name: "target")
        let names = ["by_cookie", "by_array", "by_hash", "by_global"]
        let l = try bpf.loadObject(obj, targets: Dictionary(uniqueKeysWithValues: names.map { ($0, target) }))
        try bpf.mapUpdateElem(l.maps["data_array"]!, key: key(0), value: [5, 0, 0, 0, 0, 0, 0, 0])
        try bpf.mapUpdateElem(l.maps["data_hash"]!, key: key(0), value: [11, 0, 0, 0, 0, 0, 0, 0])
        var links: [Int32] = []
        for n in names {
            links.append(try bpf.linkCreate(LinkCreateAttr(progFD: l.programs[n]!, attachType: .traceFentry, cookie: 100)))
        }
        XCTAssertEqual(try run(target), 2)
        // sink = cookie 100 + array 5 + hash 11 + global 7
        XCTAssertEqual(try bpf.mapLookupElem(l.maps[".bss"]!, key: key(0)), [123, 0, 0, 0, 0, 0, 0, 0])
        for k in links { try bpf.objClose(k) }
    }

    // MARK: bad objects

    func testBadObjectsAreRefusedByNameAndLoadNothing() throws {
        guard case let .success(dir) = shippedObjects else { return }
        let good = Array(try Data(contentsOf: dir.appendingPathComponent("xdp_parser.o")))
        func refusal(_ bytes: [UInt8]) -> String? {
            do { _ = try BPFObjectFile(bytes: bytes); return nil } catch let e as ObjectError { return e.message } catch { return "\(error)" }
        }
        XCTAssertTrue(refusal(Array(good.prefix(40)))?.contains("truncated") ?? false)
        XCTAssertTrue(refusal(Array(good.prefix(good.count / 2)))?.contains("truncated") ?? false)
        var x86 = good; x86[18] = 62; x86[19] = 0
        XCTAssertTrue(refusal(x86)?.contains("EM_BPF") ?? false, String(describing: refusal(x86)))
        XCTAssertTrue(refusal([UInt8](repeating: 0, count: 100))?.contains("not an ELF") ?? false)
        // An unknown relocation type: rewrite the first relocation of the program section.
        let elf = try ELFFile(good)
        let rel = elf.sections.first { $0.name == ".relxdp" }!
        var badRel = good; badRel[rel.offset + 8] = 99
        XCTAssertTrue(refusal(badRel)?.contains("unknown relocation type 99") ?? false, String(describing: refusal(badRel)))
        // No license section: rename it.
        var noLicense = good
        let lic = elf.sections.first { $0.name == "license" }!
        let shstr = elf.sections[Int(UInt16(good[0x3e]) | UInt16(good[0x3f]) << 8)]
        let nameOff = shstr.offset + Int(try ELFReaderProbe.nameOffset(good, section: lic.index))
        noLicense[nameOff] = UInt8(ascii: "L")
        XCTAssertTrue(refusal(noLicense)?.contains("missing section 'license'") ?? false, String(describing: refusal(noLicense)))
        // A map of a type the lab does not model (ringbuf = 27).
        let before = KernelSnapshot(bpf)
        XCTAssertNotNil(refusal(try compile("""
            #include <linux/bpf.h>
            #include <bpf/bpf_helpers.h>
            struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } rb SEC(".maps");
            SEC("xdp") int p(struct xdp_md *c) { return XDP_PASS; }
            char _license[] SEC("license") = "GPL";
            """) ?? []).map { $0.contains("does not model") ? $0 : nil } ?? nil)
        XCTAssertEqual(KernelSnapshot(bpf), before, "nothing was loaded")
    }

    func testLegacyMapsSectionAndRodataAreRead() throws {
        guard let bytes = try compile("""
            #include <linux/bpf.h>
            #include <bpf/bpf_helpers.h>
            struct legacy_map_def { unsigned int type, key_size, value_size, max_entries, map_flags; };
            struct legacy_map_def counts SEC("maps") = { .type = BPF_MAP_TYPE_HASH, .key_size = 4, .value_size = 8, .max_entries = 7 };
            static volatile const __u32 verdict = XDP_TX;   /* .rodata, read through its map */
            SEC("xdp") int p(struct xdp_md *c) { __u32 k = 1; __u64 *v = bpf_map_lookup_elem(&counts, &k); if (v) *v += 1; return verdict; }
            char _license[] SEC("license") = "GPL";
            """) else { return }
        let obj = try BPFObjectFile(bytes: bytes)
        let m = obj.maps.first { $0.name == "counts" }
        XCTAssertEqual(m.map { [$0.type, $0.keySize, $0.valueSize, $0.maxEntries, $0.flags] }, [1, 4, 8, 7, 0], "the legacy definition, read as it is written")
        XCTAssertNil(m?.initialValue)
        XCTAssertNotNil(obj.maps.first { $0.name == ".rodata" }, "the .rodata section is a map")
        let l = try bpf.loadObject(obj)
        XCTAssertEqual(try run(l.programs["p"]!), UInt32(CBPF_XDP_TX), "the verdict comes from .rodata")
    }

    func testAProgramTheChecksRefuseLeavesNoMapBehind() throws {
        guard let bytes = try compile("""
            #include <linux/bpf.h>
            #include <bpf/bpf_helpers.h>
            struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); } m SEC(".maps");
            SEC("xdp") int p(struct xdp_md *c) { __u32 k = 0; __u64 *v = bpf_map_lookup_elem(&m, &k); return v ? bpf_get_attach_cookie(c) : 0; }
            char _license[] SEC("license") = "GPL";
            """) else { return }
        let obj = try BPFObjectFile(bytes: bytes)
        kernel.quiesce()
        let before = KernelSnapshot(bpf)
        XCTAssertThrowsError(try bpf.loadObject(obj)) { e in
            XCTAssertEqual((e as? BPFError)?.errno, .EINVAL, "bpf_get_attach_cookie from XDP: \(e)")
            XCTAssertTrue("\(e)".contains("program 'p'"), "the error names the program: \(e)")
        }
        kernel.quiesce()  // the map it created and closed is freed after its grace period
        XCTAssertEqual(KernelSnapshot(bpf), before, "nothing left behind")
    }

    func testMutatedObjectsNeverCrashTheLoader() throws {
        guard case let .success(dir) = shippedObjects else { return }
        let seeds = try ["xdp_parser", "xdp_dispatcher", "attach_data", "tail_loop"].map { Array(try Data(contentsOf: dir.appendingPathComponent("\($0).o"))) }
        var rng = SplitMix64(seed: 0x0bec7)
        let n = Int(ProcessInfo.processInfo.environment["BPFLAB_FUZZ_OBJECTS"] ?? "") ?? 20_000
        var refused = 0, parsed = 0
        for i in 0..<n {
            var b = seeds[i % seeds.count]
            if i % 10 == 0 {
                b = (0..<Int(rng.next() % 512)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            } else {
                for _ in 0..<(1 + Int(rng.next() % 8)) {
                    b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
                if rng.next() % 8 == 0 { b = Array(b.prefix(Int(rng.next() % UInt64(b.count)))) }
            }
            do {
                let obj = try BPFObjectFile(bytes: b)
                parsed += 1
                // Whatever parsed is offered to the kernel: loaded or refused by errno, never a crash.
                if i % 4 == 0, let l = try? bpf.loadObject(obj) {
                    for fd in l.programs.values { _ = try? run(fd) }
                    for fd in Array(l.programs.values) + Array(l.maps.values) { try? bpf.objClose(fd) }
                }
            } catch is ObjectError {
                refused += 1
            }
        }
        print("ObjectLoaderTests: \(n) mutated objects: \(parsed) parsed, \(refused) refused by name")
        XCTAssertEqual(parsed + refused, n)
    }

    /// Compiles a BPF C source with the shipped objects' flags; nil when the toolchain is missing.
    func compile(_ source: String) throws -> [UInt8]? {
        guard case .success = shippedObjects else { return nil }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bpflab-obj-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = dir.appendingPathComponent("p.c"), obj = dir.appendingPathComponent("p.o")
        try source.write(to: src, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", src.path, "-o", obj.path]
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, "clang failed on\n\(source)")
        return Array(try Data(contentsOf: obj))
    }
}

/// Reads a section's name offset (sh_name) straight from the header table.
enum ELFReaderProbe {
    static func nameOffset(_ b: [UInt8], section i: Int) throws -> UInt32 {
        let shoff = (0..<8).reduce(0) { $0 | Int(b[0x28 + $1]) << (8 * $1) }
        let o = shoff + i * 64
        return UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24
    }
}
