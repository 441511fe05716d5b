#!/usr/bin/env bash
# The test command: installs what the package needs (libnuma-dev), runs the whole suite,
# then runs the concurrency tests (classes named Concurrency*) under ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

source Tests/install-deps.sh

echo "== swift test (debug, checked kernel) =="
swift test

echo "== swift test --sanitize=thread (concurrency tests) =="
swift test --sanitize=thread --scratch-path .build-tsan --filter 'Concurrency'
