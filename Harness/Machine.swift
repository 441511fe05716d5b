// Machine.swift — what every report names: CPU model, TSC rate, spectre_v2 mitigation,
// NUMA nodes, worker count, Swift version.
import CBPFShims
import CNuma
#if canImport(Glibc)
import Glibc
#endif

public struct MachineInfo: Sendable, Codable, Equatable {
    public var cpuModel: String
    public var onlineCPUs: Int
    public var tscGHz: Double
    public var spectreV2: String
    public var numaNodes: Int?        // nil: libnuma says NUMA is unavailable
    public var swiftVersion: String
    /// The smallest step the TSC is seen to advance by (a VM may advance it in steps:
    /// this one in steps of 26 ticks, 10 ns); batches are timed, never single packets.
    public var tscStepTicks: UInt64 = 1

    /// Reads the machine (measures the TSC against CLOCK_MONOTONIC for ~50 ms).
    public static func probe() -> MachineInfo {
        let cpuinfo = readFile("/proc/cpuinfo") ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: " \t") } ?? "unknown CPU"
        let spectre = (readFile("/sys/devices/system/cpu/vulnerabilities/spectre_v2") ?? "unknown")
            .trimmingCharacters(in: " \n")
        let nodes: Int? = numa_available() >= 0 ? Int(numa_num_configured_nodes()) : nil
        return MachineInfo(cpuModel: model, onlineCPUs: Int(cbpf_nr_cpus_online()), tscGHz: measureTSCGHz(),
                           spectreV2: spectre, numaNodes: nodes, swiftVersion: swiftCompilerVersion,
                           tscStepTicks: measureTSCStep())
    }

    /// One line: "Intel Xeon … | 2 CPUs | TSC 2.59 GHz | spectre_v2: Mitigation: … | NUMA nodes 1 | Swift 6.3".
    public func line(workers: Int) -> String {
        let numa = numaNodes.map { "NUMA nodes \($0)" } ?? "NUMA unavailable"
        return "\(cpuModel) | \(onlineCPUs) CPUs | TSC \(String(format1: tscGHz, digits: 2)) GHz, steps of \(tscStepTicks) tick\(tscStepTicks == 1 ? "" : "s") | spectre_v2: \(spectreV2) | \(numa) | \(workers) worker\(workers == 1 ? "" : "s") | Swift \(swiftVersion)"
    }
}

/// The step the TSC advances by: the most frequent nonzero difference between two
/// back-to-back reads (over 20,000 pairs). The mode, not the minimum: on this VM ~95% of
/// steps are 26 ticks and a few percent are 1 tick (probably the hypervisor adjusting).
public func measureTSCStep() -> UInt64 {
    var counts: [UInt64: Int] = [:]
    for _ in 0..<20_000 {
        let a = cbpf_rdtsc()
        var b = cbpf_rdtsc()
        while b == a { b = cbpf_rdtsc() }
        counts[b &- a, default: 0] += 1
    }
    return counts.max { $0.value < $1.value }?.key ?? 1
}

/// TSC ticks per nanosecond, measured.
public func measureTSCGHz() -> Double {
    let t0 = cbpf_ktime_get_ns(), c0 = cbpf_rdtsc()
    cbpf_spin_ns(50_000_000)
    let t1 = cbpf_ktime_get_ns(), c1 = cbpf_rdtsc()
    return Double(c1 &- c0) / Double(t1 &- t0)
}

let swiftCompilerVersion: String = {
    #if compiler(>=6.4)
    return "6.4+"
    #elseif compiler(>=6.3)
    return "6.3"
    #elseif compiler(>=6.2)
    return "6.2"
    #elseif compiler(>=6.1)
    return "6.1"
    #else
    return "6.0"
    #endif
}()

func readFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

extension String {
    /// A fixed-point rendering without Foundation.
    public init(format1 v: Double, digits: Int) {
        if v.isNaN { self = "nan"; return }
        if v.isInfinite { self = v > 0 ? "inf" : "-inf"; return }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let neg = v < 0
        let r = (abs(v) * scale).rounded()
        let whole = Int(r / scale)
        var frac = String(Int(r.truncatingRemainder(dividingBy: scale)))
        while frac.count < digits { frac = "0" + frac }
        self = (neg && r != 0 ? "-" : "") + String(whole) + (digits > 0 ? "." + frac : "")
    }

    func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        var s = Substring(self)
        while let f = s.first, chars.contains(f) { s = s.dropFirst() }
        while let l = s.last, chars.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
