#!/usr/bin/env bash
# The test command: installs what the package needs (libnuma-dev, graphviz, libbpf-dev),
# compiles the shipped BPF C programs (bpf/build.sh), runs the whole suite (10^6 random
# facade operations, 3,000 fuzzed scenario files, 10^5 random instruction sequences, 20,000
# mutated objects and the bpf_conformance suite among it), then the concurrency tests
# (classes named Concurrency*) under ThreadSanitizer, shorter random-operation, scenario,
# instruction and object fuzzing, the bytecode tests and the pin/close race under AddressSanitizer,
# then builds the DocC catalog, the package-benchmark micro-benchmarks (Perf/Benchmarks) and
# the RCU comparison (Perf/RCU) so they cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."

source Tests/install-deps.sh
source Tests/phase.sh

phase "bpf/build.sh (the shipped BPF C programs, clang -O2 -g -target bpf)" 5 bash bpf/build.sh

phase "swift test (debug, checked kernel)" 35 swift test

phase "swift test --sanitize=thread (concurrency tests)" 15 swift test --sanitize=thread --scratch-path .build-tsan --filter 'Concurrency'

# XCTest itself trips ASan's leak checker (SWIFT_NOTES.md): leaks are the auditor's job.
phase "swift test --sanitize=address (random operations, fuzzers, pin/close race)" 15 \
    env ASAN_OPTIONS=detect_leaks=0 BPFLAB_RANDOM_OPS=20000 BPFLAB_FUZZ_FILES=1000 BPFLAB_FUZZ_PROGRAMS=20000 BPFLAB_FUZZ_OBJECTS=4000 \
    swift test --sanitize=address --scratch-path .build-asan \
    --filter 'RandomOperationTests|RandomOperationWithPacketsTests|ScenarioFuzzTests|ConcurrencyPinTests|InterpreterFuzzTests|ObjectLoaderTests|ConformanceTests|BytecodeTests'

phase "swift package generate-documentation (the BPFKernel DocC catalog, warnings as errors)" 8 \
    bash -c 'swift package generate-documentation --target BPFKernel --warnings-as-errors >/dev/null'

phase "swift build (Perf/Benchmarks: package-benchmark, build only)" 8 swift build --package-path Perf/Benchmarks

phase "swift build (Perf/RCU: the lab's RCU against liburcu-qsbr, build only)" 5 swift build --package-path Perf/RCU
