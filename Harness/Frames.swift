import CBPFShims
// Frames.swift — synthetic Ethernet/IPv4/UDP frames, as a traffic generator would send:
// one per flow (varying the UDP source port), of a chosen size (60 to 1514 bytes).

public struct FrameSpec: Sendable, Equatable {
    public var size: Int
    public var flows: Int

    public init(size: Int = 64, flows: Int = 1) {
        self.size = size
        self.flows = flows
    }

    public static let minSize = 60
    public static let maxSize = 1514

    public func validate() throws {
        guard (FrameSpec.minSize...FrameSpec.maxSize).contains(size) else {
            throw HarnessError("packet size \(size) is outside \(FrameSpec.minSize)…\(FrameSpec.maxSize) bytes")
        }
        guard flows >= 1 && flows <= 65536 else {
            throw HarnessError("flows must be between 1 and 65536 (got \(flows))")
        }
    }

    /// A test run's packet: flow 0's frame, cut or zero-padded to `size` bytes when given.
    public func testRunFrame(size: Int?) -> [UInt8] {
        let f = frame(flow: 0)
        guard let size else { return f }
        return size <= f.count ? Array(f.prefix(size)) : f + [UInt8](repeating: 0, count: size - f.count)
    }

    /// The frame of flow `flow`.
    public func frame(flow: Int) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: size)
        let dst: [UInt8] = [0x02, 0, 0, 0, 0, 0x02], src: [UInt8] = [0x02, 0, 0, 0, 0, 0x01]
        f.replaceSubrange(0..<6, with: dst)
        f.replaceSubrange(6..<12, with: src)
        f[12] = 0x08; f[13] = 0x00                          // IPv4
        let ipLen = size - 14
        f[14] = 0x45                                        // version 4, IHL 5
        f[16] = UInt8(ipLen >> 8); f[17] = UInt8(ipLen & 0xff)
        f[22] = 64                                          // TTL
        f[23] = 17                                          // UDP
        f[26...29] = [198, 18, 0, 1]                        // 198.18.0.0/15: benchmarking range
        f[30...33] = [198, 19, 0, 1]
        var sum: UInt32 = 0
        for i in stride(from: 14, to: 34, by: 2) { sum += UInt32(f[i]) << 8 | UInt32(f[i + 1]) }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        let csum = ~UInt16(sum)
        f[24] = UInt8(csum >> 8); f[25] = UInt8(csum & 0xff)
        let sport = UInt16(1024 + flow % 64512)
        f[34] = UInt8(sport >> 8); f[35] = UInt8(sport & 0xff)
        f[36] = 0x23; f[37] = 0x28                          // dport 9000
        let udpLen = size - 34
        f[38] = UInt8(udpLen >> 8); f[39] = UInt8(udpLen & 0xff)
        return f
    }
}

/// A harness-level error: a bad option or an impossible setup, with the reason.
public struct HarnessError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A u32 as the 4 little-endian bytes map keys and values are made of.
func u32Bytes(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

/// A map_update value of exactly `valueSize` bytes: `v` little-endian, zero-filled or cut to
/// the map's value size. bpf(2) takes no value length — the kernel copies value_size bytes
/// from the pointer — so a scenario's fd or number always fills the whole value.
func valueBytes(_ v: UInt64, valueSize: UInt32) -> [UInt8] {
    let n = Int(valueSize)
    let le = withUnsafeBytes(of: v.littleEndian) { Array($0) }
    return n <= 8 ? Array(le.prefix(n)) : le + [UInt8](repeating: 0, count: n - 8)
}

/// Runs `body` with an XDP context over `frame` (data, meta and hard start at its first
/// byte, data_end past its last) for one packet outside the driver's ring.
public func withXDPContext<T>(_ frame: inout [UInt8], ifindex: UInt32, _ body: (UnsafeMutablePointer<cbpf_xdp_md>) -> T) -> T {
    frame.withUnsafeMutableBufferPointer { b in
        var md = cbpf_xdp_md()
        md.data = b.baseAddress
        md.data_meta = b.baseAddress
        md.data_hard_start = b.baseAddress
        md.data_end = b.baseAddress.map { $0 + b.count }
        md.ingress_ifindex = ifindex
        return withUnsafeMutablePointer(to: &md, body)
    }
}
