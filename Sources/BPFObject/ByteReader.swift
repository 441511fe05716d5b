// ByteReader.swift — bounds-checked little-endian reads over a file's bytes. Every read of
// an object file goes through it, so a truncated or hostile file is an error naming what
// ran past the end, never a crash.

/// A malformed or unsupported object file: what is wrong, and where.
public struct ObjectError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

struct ByteReader {
    let bytes: [UInt8]

    func check(_ offset: Int, _ count: Int, _ what: @autoclosure () -> String) throws {
        guard offset >= 0, count >= 0, offset <= bytes.count, bytes.count - offset >= count else {
            throw ObjectError("truncated: \(what()) (\(count) bytes at offset \(offset)) runs past the end of the file (\(bytes.count) bytes)")
        }
    }

    func u8(_ o: Int, _ what: @autoclosure () -> String) throws -> UInt8 {
        try check(o, 1, what())
        return bytes[o]
    }
    func u16(_ o: Int, _ what: @autoclosure () -> String) throws -> UInt16 {
        try check(o, 2, what())
        return UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8
    }
    func u32(_ o: Int, _ what: @autoclosure () -> String) throws -> UInt32 {
        try check(o, 4, what())
        return (0..<4).reduce(0) { $0 | UInt32(bytes[o + $1]) << (8 * UInt32($1)) }
    }
    func u64(_ o: Int, _ what: @autoclosure () -> String) throws -> UInt64 {
        try check(o, 8, what())
        return (0..<8).reduce(0) { $0 | UInt64(bytes[o + $1]) << (8 * UInt64($1)) }
    }
    func slice(_ o: Int, _ n: Int, _ what: @autoclosure () -> String) throws -> ArraySlice<UInt8> {
        try check(o, n, what())
        return bytes[o ..< o + n]
    }
    /// A NUL-terminated string starting at `o`, inside [o, limit).
    func cString(_ o: Int, limit: Int, _ what: @autoclosure () -> String) throws -> String {
        guard o >= 0, o < limit, limit <= bytes.count else { throw ObjectError("\(what()): string offset \(o) is outside its table") }
        var e = o
        while e < limit && bytes[e] != 0 { e += 1 }
        guard e < limit else { throw ObjectError("\(what()): string at offset \(o) is not NUL-terminated") }
        return String(decoding: bytes[o..<e], as: UTF8.self)
    }
}

/// Converts a file-supplied 64-bit quantity to Int, refusing what cannot be an offset.
func offset(_ v: UInt64, _ what: String) throws -> Int {
    guard v <= UInt64(Int32.max) else { throw ObjectError("\(what) \(v) is beyond any file the lab reads") }
    return Int(v)
}
