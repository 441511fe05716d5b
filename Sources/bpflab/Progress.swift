// Progress.swift — progress on stderr for long measurements: "[done/total] elapsed, ETA —
// what", rewritten in place on a terminal, one line every 3 s in a log, nothing with
// --quiet.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

final class ProgressPrinter {
    let quiet: Bool
    private let tty = isatty(STDERR_FILENO) != 0
    private var lineOpen = false
    private let started = Date()
    private var lastLine = Date.distantPast

    init(quiet: Bool) { self.quiet = quiet }

    func update(_ done: Int, _ total: Int, _ msg: String) {
        if quiet { return }
        let now = Date()
        if !tty && done != total && now.timeIntervalSince(lastLine) < 3 { return }
        lastLine = now
        let elapsed = now.timeIntervalSince(started)
        let eta = done > 0 && done < total ? String(format: ", about %.0f s left", elapsed / Double(done) * Double(total - done)) : ""
        let line = "[\(done)/\(total)] \(String(format: "%.0f", elapsed)) s\(eta) — \(msg)"
        let text = tty ? "\r\u{1b}[K" + line + (done == total ? "\n" : "") : line + "\n"
        lineOpen = tty && done != total
        _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    }

    /// Ends an open terminal line.
    func finish() {
        if lineOpen { _ = write(STDERR_FILENO, "\n", 1) }
        lineOpen = false
    }
}
