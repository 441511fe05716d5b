// ShippedObjects.swift — where the harness finds the BPF C programs of bpf/, compiled by
// bpf/build.sh into bpf/out: $BPFLAB_OBJECTS, else ./bpf/out, else bpf/out beside the
// package the running binary was built in.
import Foundation
import BPFObject

public enum ShippedObjects {
    /// The folder of compiled objects, if one exists.
    public static var directory: URL? {
        var candidates: [URL] = []
        if let env = ProcessInfo.processInfo.environment["BPFLAB_OBJECTS"] { candidates.append(URL(fileURLWithPath: env)) }
        candidates.append(URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("bpf/out"))
        // .build/<triple>/<config>/bpflab → the package root is three or four levels up.
        var exe = URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<4 {
            exe = exe.deletingLastPathComponent()
            candidates.append(exe.appendingPathComponent("bpf/out"))
        }
        return candidates.first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("xdp_dummy.o").path) }
    }

    /// The object `name`.o, read and parsed; a clear error when it has not been built.
    public static func object(_ name: String) throws -> BPFObjectFile {
        guard let dir = directory else {
            throw HarnessError("bpf/out/\(name).o is not built: run `bash bpf/build.sh` (clang and libbpf-dev's headers), or point BPFLAB_OBJECTS at the folder")
        }
        let url = dir.appendingPathComponent("\(name).o")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw HarnessError("cannot read \(url.path): run `bash bpf/build.sh`")
        }
        do { return try BPFObjectFile(bytes: Array(data)) } catch let e as ObjectError {
            throw HarnessError("\(url.path): \(e.message)")
        }
    }
}
