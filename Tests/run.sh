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

echo "== bpf/build.sh (the shipped BPF C programs, clang -O2 -g -target bpf) =="
bash bpf/build.sh

echo "== swift test (debug, checked kernel) =="
swift test

echo "== swift test --sanitize=thread (concurrency tests) =="
swift test --sanitize=thread --scratch-path .build-tsan --filter 'Concurrency'

echo "== swift test --sanitize=address (random operations, fuzzers, pin/close race) =="
# XCTest itself trips ASan's leak checker (SWIFT_NOTES.md): leaks are the auditor's job.
ASAN_OPTIONS=detect_leaks=0 BPFLAB_RANDOM_OPS=20000 BPFLAB_FUZZ_FILES=1000 BPFLAB_FUZZ_PROGRAMS=20000 BPFLAB_FUZZ_OBJECTS=4000 \
    swift test --sanitize=address --scratch-path .build-asan \
    --filter 'RandomOperationTests|RandomOperationWithPacketsTests|ScenarioFuzzTests|ConcurrencyPinTests|InterpreterFuzzTests|ObjectLoaderTests|ConformanceTests|BytecodeTests'

echo "== swift package generate-documentation (the BPFKernel DocC catalog, warnings as errors) =="
swift package generate-documentation --target BPFKernel --warnings-as-errors >/dev/null

echo "== swift build (Perf/Benchmarks: package-benchmark, build only) =="
swift build --package-path Perf/Benchmarks

echo "== swift build (Perf/RCU: the lab's RCU against liburcu-qsbr, build only) =="
swift build --package-path Perf/RCU
