#!/usr/bin/env bash
# The test command: installs what the package needs (libnuma-dev), runs the whole suite,
# then runs the concurrency tests (classes named Concurrency*) under ThreadSanitizer, then
# builds the package-benchmark micro-benchmarks (Perf/Benchmarks) so they cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."

source Tests/install-deps.sh

echo "== swift test (debug, checked kernel) =="
swift test

echo "== swift test --sanitize=thread (concurrency tests) =="
swift test --sanitize=thread --scratch-path .build-tsan --filter 'Concurrency'

echo "== swift build (Perf/Benchmarks: package-benchmark, build only) =="
swift build --package-path Perf/Benchmarks
