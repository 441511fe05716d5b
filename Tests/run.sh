#!/usr/bin/env bash
# The test command: installs what the package needs (libnuma-dev), runs the whole suite,
# then runs the concurrency tests (classes named Concurrency*) under ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg -s libnuma-dev >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libnuma-dev >/dev/null
fi

echo "== swift test (debug, checked kernel) =="
swift test

echo "== swift test --sanitize=thread (concurrency tests) =="
swift test --sanitize=thread --scratch-path .build-tsan --filter 'Concurrency'
