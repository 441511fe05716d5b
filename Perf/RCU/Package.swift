// swift-tools-version: 6.1
//
// The lab's RCU (Sources/BPFKernel/RCU.swift) against liburcu-qsbr (Debian liburcu-dev),
// in one process: the cost of a quiescent state when no grace period waits, and the time
// of synchronize_rcu with two readers reporting between polls. A separate package, so the
// main build does not need liburcu.
//
//   apt-get install liburcu-dev && cd Perf/RCU && swift run -c release rcu-bench
import PackageDescription

let package = Package(
    name: "bpflab-rcu-bench",
    dependencies: [.package(name: "bpflab", path: "../..")],
    targets: [
        // liburcu-qsbr, with _LGPL_SOURCE: its fast paths inlined, as a user of it builds.
        .target(name: "CURCUQSBR", linkerSettings: [.linkedLibrary("urcu-qsbr")]),
        .executableTarget(
            name: "rcu-bench",
            dependencies: ["CURCUQSBR", .product(name: "BPFKernel", package: "bpflab"), .product(name: "PacketHarness", package: "bpflab")],
            path: "Sources/RCUBench"
        ),
    ]
)
