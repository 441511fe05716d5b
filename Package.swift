// swift-tools-version: 6.1
//
// bpflab — the Linux kernel's BPF dispatch machinery, re-implemented in user space and measured.
// Layers (arrows point down only; see README.md):
//   bpflab (CLI) → PacketHarness (Harness/) → BPFKernel → BPFPrograms (C) → CBPFShims (C), CNuma
import PackageDescription

let package = Package(
    name: "bpflab",
    products: [
        .library(name: "BPFKernel", targets: ["BPFKernel"]),
        .library(name: "PacketHarness", targets: ["PacketHarness"]),
        .executable(name: "bpflab", targets: ["bpflab"]),
        // The interpreter behind the bpf_conformance suite's plugin protocol.
        .executable(name: "bpflab-conformance-plugin", targets: ["bpflab-conformance-plugin"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        // `swift package generate-documentation --target BPFKernel`: the DocC catalog
        // (Sources/BPFKernel/BPFKernel.docc, one article per mechanism).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // The eBPF instruction set: struct bpf_insn, the assembler (the bpf_conformance
        // suite's syntax), the disassembler (the verifier log's), helper IDs. No dependencies.
        .target(name: "BPFInstructions"),
        // eBPF objects as clang writes them: ELF sections, symbols, relocations, BTF-defined
        // maps, global data — read into programs and maps (no libbpf; see BPFObjectFile.swift).
        .target(name: "BPFObject", dependencies: ["BPFInstructions"]),
        // The kernel's primitives: READ_ONCE/WRITE_ONCE, acquire/release, xchg, cmpxchg,
        // atomic64, barriers, cpu_relax, rdtsc, array_index_nospec, affinity — and the
        // fixed-layout "kernel memory" records every per-packet path reads.
        .target(
            name: "CBPFShims",
            cSettings: [.define("_GNU_SOURCE")]
        ),
        // Generated machine code's system side: code memory near the lab's text (W^X, one
        // memfd mapped twice), membarrier SYNC_CORE, text_poke_bp and its int3 handler.
        .target(name: "CMachineCode", cSettings: [.define("_GNU_SOURCE")]),
        // The kernel's machine code for dispatch: an x86-64 encoder, code regions, live
        // patching (below the kernel objects, which generate their images with it).
        .target(name: "BPFMachineCode", dependencies: ["CMachineCode"]),
        // The live kernel's bpf(2), as raw syscalls.
        .target(name: "CLiveBPF", cSettings: [.define("_GNU_SOURCE")]),
        // The live kernel as a second backend: bpf(2) for programs as instructions, the probe.
        .target(name: "LiveKernel", dependencies: ["CLiveBPF", "BPFKernel", "BPFInstructions"]),
        // libnuma, as a system library (Debian: libnuma-dev).
        .systemLibrary(
            name: "CNuma",
            path: "Sources/CNuma",
            providers: [.apt(["libnuma-dev"])]
        ),
        // Native program bodies with the kernel's bpf_func(ctx, insnsi) shape: the stand-in
        // for JIT output.
        .target(
            name: "BPFPrograms",
            dependencies: ["CBPFShims"],
            cSettings: [.define("_GNU_SOURCE")]
        ),
        // Plain-C twins of the driver loop and BPF_PROG_RUN (`bench --twin`): the lab's own
        // overhead over C, measured in the same run.
        .target(
            name: "BPFLabTwins",
            dependencies: ["CBPFShims", "BPFPrograms"],
            path: "Perf/Twins",
            cSettings: [.define("_GNU_SOURCE")]
        ),
        // The kernel objects and their rules, one file per object.
        .target(
            name: "BPFKernel",
            dependencies: ["CBPFShims", "BPFPrograms", "CNuma", "BPFInstructions", "BPFObject", "BPFMachineCode"]
        ),
        // The packet driver and the measurement harness.
        .target(
            name: "PacketHarness",
            dependencies: ["BPFKernel", "BPFInstructions", "BPFObject", "LiveKernel", "BPFPrograms", "BPFLabTwins", "BPFMachineCode", "CBPFShims", "CNuma", .product(name: "Yams", package: "Yams")],
            path: "Harness",
            resources: [.copy("Scenarios")]
        ),
        .executableTarget(
            name: "bpflab",
            dependencies: [
                "BPFKernel",
                "BPFInstructions",
                "BPFMachineCode",
                "LiveKernel",
                "PacketHarness",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "bpflab-conformance-plugin",
            dependencies: ["BPFKernel", "BPFInstructions"]
        ),
        .testTarget(
            name: "BPFMachineCodeTests",
            dependencies: ["BPFMachineCode", "CMachineCode"]
        ),
        .testTarget(
            name: "BPFInstructionsTests",
            dependencies: ["BPFInstructions", "BPFObject", "BPFKernel"]
        ),
        .testTarget(
            name: "BPFKernelTests",
            // PacketHarness for the tracer, the random-operation test's reference model.
            dependencies: ["BPFKernel", "CBPFShims", "BPFPrograms", "PacketHarness", "BPFInstructions", "BPFObject", "LiveKernel", "BPFMachineCode"]
        ),
        .testTarget(
            name: "PacketHarnessTests",
            dependencies: ["PacketHarness", "BPFKernel", "CBPFShims", "bpflab", "LiveKernel", "BPFMachineCode"]
        ),
    ]
)
