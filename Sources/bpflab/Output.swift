// Output.swift — how the CLI writes: files whole or not at all, stdout checked, signals.
//
// A result file is written to a temporary file beside it and renamed into place only when
// every byte was written and flushed (a full disk leaves the old file, or none, never a
// truncated one). Paths are checked before anything is measured. SIGPIPE is ignored so a
// closed stdout is an error the command reports (after its files are written) instead of
// a silent death; SIGINT asks a running bench to stop after its current window.
import ArgumentParser
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A run-time failure of a command: printed as one sentence (no usage text), exit 1.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ s: String) { description = s }
}

/// A bad option value found after parsing (a path that cannot be written): the sentence,
/// then exit 64 (EX_USAGE), without the usage text.
func optionError(_ option: String, _ sentence: String) -> Error {
    FileHandle.standardError.write(Data("error: \(option): \(sentence)\n".utf8))
    return ExitCode(64)
}

enum OutputFiles {
    /// Why `dir` cannot take result files, or nil when it can (created if missing, one
    /// level, as `mkdir` would).
    static func problem(directory dir: String) -> String? {
        if dir.isEmpty { return "the directory name is empty" }
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) {
            if !isDir.boolValue { return "'\(dir)' exists and is not a directory" }
        } else if mkdir(dir, 0o755) != 0 {
            return "cannot create directory '\(dir)': \(String(cString: strerror(errno)))"
        }
        if access(dir, W_OK) != 0 { return "cannot write into '\(dir)': \(String(cString: strerror(errno)))" }
        return nil
    }

    /// Why `path` cannot be written as a file, or nil when it can.
    static func problem(file path: String) -> String? {
        if path.isEmpty { return "the file name is empty" }
        if path.hasSuffix("/") { return "'\(path)' names a directory, not a file" }
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            if isDir.boolValue { return "'\(path)' is a directory" }
            if !isRegularFile(path) { return "'\(path)' exists and is not a regular file" }
        }
        let parent = (path as NSString).deletingLastPathComponent
        let dir = parent.isEmpty ? "." : parent
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            return "directory '\(dir)' does not exist"
        }
        if access(dir, W_OK) != 0 { return "cannot write into '\(dir)': \(String(cString: strerror(errno)))" }
        return nil
    }

    /// Writes `text` to `path` whole: a temporary file, every write checked, flushed and
    /// synced, then renamed over `path`. On any failure the temporary file is removed and
    /// `path` is left as it was.
    static func write(_ text: String, to path: String) throws {
        // Never rename over a device node or a directory.
        if FileManager.default.fileExists(atPath: path) && !isRegularFile(path) {
            throw CommandFailure("cannot write \(path): it exists and is not a regular file")
        }
        let tmp = path + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CommandFailure("cannot write \(path): \(String(cString: strerror(errno)))") }
        var failure: String?
        let bytes = Array(text.utf8)
        var off = 0
        while off < bytes.count && failure == nil {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                failure = String(cString: strerror(errno))
            } else {
                off += n
            }
        }
        if failure == nil && fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        if close(fd) != 0 && failure == nil { failure = String(cString: strerror(errno)) }
        if failure == nil && rename(tmp, path) != 0 { failure = String(cString: strerror(errno)) }
        if let failure {
            unlink(tmp)
            throw CommandFailure("cannot write \(path): \(failure) (nothing was written there)")
        }
    }
}

/// Whether `path` is a regular file (lstat: a symlink is not followed).
func isRegularFile(_ path: String) -> Bool {
    var st = stat()
    return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
}

enum StandardOutput {
    /// Ignores SIGPIPE: writing to a closed pipe then fails with EPIPE, which `write`
    /// reports, instead of killing the process before its files are written.
    static func ignoreSIGPIPE() { signal(SIGPIPE, SIG_IGN) }

    /// Writes `text` to stdout; throws when stdout is closed or full.
    static func write(_ text: String) throws {
        let bytes = Array(text.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw CommandFailure("cannot write to standard output: \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }
}

/// SIGINT while a bench runs: the first asks it to stop after the current window (what
/// was measured is kept); a second one ends the process at once.
enum Interrupt {
    static let requested = Atomic<Bool>(false)

    static func install() {
        signal(SIGINT) { _ in
            if Interrupt.requested.exchange(true, ordering: .relaxed) {
                signal(SIGINT, SIG_DFL)
                raise(SIGINT)
            }
        }
    }

    static var wasRequested: Bool { requested.load(ordering: .relaxed) }
}
