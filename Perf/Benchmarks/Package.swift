// swift-tools-version: 6.1
//
// package-benchmark micro-benchmarks of bpflab's per-packet paths: one NAPI poll loop per
// design, exactly the driver's, timed by ordo-one/benchmark with its malloc counters.
// A separate package so the main build and CI do not compile the benchmark framework.
//
//   cd Perf/Benchmarks && swift package --allow-writing-to-package-directory benchmark
import PackageDescription

let package = Package(
    name: "bpflab-benchmarks",
    dependencies: [
        .package(name: "bpflab", path: "../.."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "PerPacket",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "BPFKernel", package: "bpflab"),
                .product(name: "PacketHarness", package: "bpflab"),
            ],
            path: "Benchmarks/PerPacket",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
