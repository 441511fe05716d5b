// Errno.swift — the kernel's answers. Every facade call that can fail throws a `BPFError`
// carrying the errno the kernel would return (include/uapi/asm-generic/errno-base.h,
// errno.h; ENOTSUPP is the kernel-internal 524) and a sentence saying what was wrong.
//
// Mirrors: include/uapi/asm-generic/errno-base.h, errno.h, include/linux/errno.h.

/// The errno values the BPF syscall returns.
public enum Errno: Int32, Sendable, CaseIterable, CustomStringConvertible {
    case EPERM = 1
    case ENOENT = 2
    case E2BIG = 7
    case EBADF = 9
    case EAGAIN = 11
    case ENOMEM = 12
    case EACCES = 13
    case EFAULT = 14
    case EBUSY = 16
    case EEXIST = 17
    case ENOTDIR = 20
    case EISDIR = 21
    case EINVAL = 22
    case EMFILE = 24
    case ENOSPC = 28
    case ERANGE = 34
    case ENOTEMPTY = 39
    case ELOOP = 40
    case ENOLINK = 67
    case EOPNOTSUPP = 95
    case ENOTSUPP = 524

    /// The errno's name, e.g. "EINVAL".
    public var name: String {
        switch self {
        case .EPERM: return "EPERM"
        case .ENOENT: return "ENOENT"
        case .E2BIG: return "E2BIG"
        case .EBADF: return "EBADF"
        case .EAGAIN: return "EAGAIN"
        case .ENOMEM: return "ENOMEM"
        case .EACCES: return "EACCES"
        case .EFAULT: return "EFAULT"
        case .EBUSY: return "EBUSY"
        case .EEXIST: return "EEXIST"
        case .ENOTDIR: return "ENOTDIR"
        case .EISDIR: return "EISDIR"
        case .EINVAL: return "EINVAL"
        case .EMFILE: return "EMFILE"
        case .ENOSPC: return "ENOSPC"
        case .ERANGE: return "ERANGE"
        case .ENOTEMPTY: return "ENOTEMPTY"
        case .ELOOP: return "ELOOP"
        case .ENOLINK: return "ENOLINK"
        case .EOPNOTSUPP: return "EOPNOTSUPP"
        case .ENOTSUPP: return "ENOTSUPP"
        }
    }
    public var description: String { name }

    /// Looks an errno up by name ("EBUSY"), for scenario files and the CLI.
    public init?(name: String) {
        guard let e = Errno.allCases.first(where: { $0.name == name }) else { return nil }
        self = e
    }
}

/// A failed call: the kernel's errno and what was wrong. Prints as "EINVAL (22): …".
public struct BPFError: Error, Equatable, Sendable, CustomStringConvertible {
    public let errno: Errno
    public let message: String

    public init(_ errno: Errno, _ message: String) {
        self.errno = errno
        self.message = message
    }

    public var description: String { "\(errno.name) (\(errno.rawValue)): \(message)" }

    public static func == (a: BPFError, b: BPFError) -> Bool { a.errno == b.errno }
}

@inline(never)
func fail(_ errno: Errno, _ message: @autoclosure () -> String) -> BPFError {
    BPFError(errno, message())
}
