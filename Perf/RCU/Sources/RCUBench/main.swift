// rcu-bench — the lab's QSBR RCU against liburcu-qsbr, measured in the same process, the
// two alternating in short blocks (this VM changes speed every few seconds: a block of
// each, side by side, sees the same speed far more often than two long runs would).
//
// 1. Quiescent state with no grace period waiting (the per-poll cost in the packet
//    driver): a loop of calls, TSC ticks per call. liburcu's is its inlined
//    urcu_qsbr_quiescent_state(); the lab's is RCUReaderHandle.quiescentState().
// 2. synchronize_rcu with two reader threads, each polling: a ~100 ns busy "poll", then a
//    quiescent state; a writer thread calls synchronize back to back. Time per call.
//
// Figures: per block, then the median over blocks with its range, and the mean of the
// block means with a 95% interval (Student's t over blocks) — an interval over blocks in
// this one run, not over runs.
import BPFKernel
import CBPFShims
import CURCUQSBR
import Foundation
import PacketHarness
import Synchronization

let machine = MachineInfo.probe()
let ghz = machine.tscGHz
let args = CommandLine.arguments.dropFirst()
let blocks = args.first.flatMap(Int.init) ?? 10

func summary(_ name: String, _ xs: [Double], unit: String, digits: Int = 2) -> String {
    let (m, ci) = meanCI95(xs)
    let f = { (v: Double) in String(format: "%.\(digits)f", v) }
    return "\(name.padding(toLength: 28, withPad: " ", startingAt: 0)) median \(f(median(xs))) \(unit) (range \(f(xs.min()!))–\(f(xs.max()!))), mean \(f(m)) ± \(f(ci)) \(unit) over \(xs.count) blocks"
}

// MARK: quiescent state, no grace period waiting

let qsCalls: UInt64 = 2_000_000
@inline(never)
func labQuiescentLoop(_ h: RCUReaderHandle, _ n: UInt64) -> UInt64 {
    let t0 = cbpf_rdtsc()
    for _ in 0..<n {
        h.quiescentState()
        cbpf_barrier()
    }
    return cbpf_rdtsc() &- t0
}

let domain = RCUDomain(checked: false)
let labReader = domain.registerThread(name: "bench")
urcub_register()
var labQS: [Double] = [], urcuQS: [Double] = []
_ = labQuiescentLoop(labReader.handle, qsCalls)  // warm-up
_ = urcub_quiescent_state_loop(qsCalls)
for b in 0..<(2 * blocks) {
    // alternate which goes first
    if b % 2 == 0 {
        labQS.append(Double(labQuiescentLoop(labReader.handle, qsCalls)) / Double(qsCalls) / ghz)
        urcuQS.append(Double(urcub_quiescent_state_loop(qsCalls)) / Double(qsCalls) / ghz)
    } else {
        urcuQS.append(Double(urcub_quiescent_state_loop(qsCalls)) / Double(qsCalls) / ghz)
        labQS.append(Double(labQuiescentLoop(labReader.handle, qsCalls)) / Double(qsCalls) / ghz)
    }
}
domain.unregisterThread(labReader)
urcub_unregister()

// MARK: synchronize with two polling readers

let syncsPerBlock = 200
nonisolated(unsafe) var labTimeouts: UInt64 = 0
let readerCount = 2
/// One block: `readerCount` readers registered and polling, `syncsPerBlock` synchronize
/// calls timed one by one (ns each).
func syncBlock(lab: Bool) throws -> [Double] {
    let stop = Atomic<Bool>(false), ready = Atomic<Int>(0)
    let d = RCUDomain(checked: false)
    defer { d.shutdown() }
    var readers: [pthread_t] = []
    for i in 0..<readerCount {
        readers.append(try kthreadCreate(name: "reader\(i)") {
            let r = lab ? d.registerThread(name: "reader") : nil
            if !lab { urcub_register() }
            ready.add(1, ordering: .releasing)
            let h = r?.handle
            while !stop.load(ordering: .relaxed) {
                let until = cbpf_rdtsc() &+ 260  // ~100 ns of "poll"
                while cbpf_rdtsc() < until { cbpf_cpu_relax() }
                if let h { h.quiescentState() } else { urcub_quiescent_state() }
            }
            if let r { d.unregisterThread(r) } else { urcub_unregister() }
        })
    }
    while ready.load(ordering: .acquiring) < readerCount { cbpf_usleep(100) }
    final class Times: @unchecked Sendable { var ns = [Double](repeating: 0, count: syncsPerBlock) }
    let times = Times()
    let writer = try kthreadCreate(name: "writer") {
        for i in 0..<syncsPerBlock {
            let t0 = cbpf_ktime_get_ns()
            if lab { d.synchronize() } else { urcub_synchronize() }
            times.ns[i] = Double(cbpf_ktime_get_ns() &- t0)
        }
    }
    kthreadJoin(writer)
    labTimeouts += d.futexTimeouts.load(ordering: .relaxed)
    stop.store(true, ordering: .relaxed)
    for r in readers { kthreadJoin(r) }
    return times.ns
}

var labSync: [Double] = [], urcuSync: [Double] = [], labAll: [Double] = [], urcuAll: [Double] = []
for b in 0..<(2 * blocks) {
    for lab in (b % 2 == 0 ? [true, false] : [false, true]) {
        let t = try syncBlock(lab: lab)
        let mean = t.reduce(0, +) / Double(t.count) / 1000
        if lab { labSync.append(mean); labAll += t } else { urcuSync.append(mean); urcuAll += t }
    }
}

print("rcu-bench — \(machine.line(workers: readerCount))")
print("command: swift run -c release rcu-bench \(blocks)  (Perf/RCU; liburcu-qsbr from Debian liburcu-dev)")
print("")
print("Quiescent state, no grace period waiting (\(qsCalls) calls per block, ns per call):")
print(summary("  lab RCUReaderHandle", labQS, unit: "ns"))
print(summary("  liburcu-qsbr", urcuQS, unit: "ns"))
print("")
print("synchronize_rcu, \(readerCount) readers polling (~100 ns between quiescent states), \(syncsPerBlock) calls per block (µs per call, block means):")
print(summary("  lab RCUDomain.synchronize", labSync, unit: "µs"))
print(summary("  liburcu-qsbr", urcuSync, unit: "µs"))
let lm = labSync.reduce(0, +) / Double(labSync.count), um = urcuSync.reduce(0, +) / Double(urcuSync.count)
print("  lab grace periods whose futex sleep ended by its 1 ms guard: \(labTimeouts) of \(labAll.count)")
print(String(format: "  lab / liburcu (means): %.2f×; medians of all calls: lab %.1f µs, liburcu %.1f µs", lm / um, median(labAll) / 1000, median(urcuAll) / 1000))
