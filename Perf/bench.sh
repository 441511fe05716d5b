#!/usr/bin/env bash
# The main job: builds bpflab in release mode and runs the seed suite (`bpflab bench`),
# printing the seed-shaped table and the machine it ran on. Extra arguments go to
# `bpflab bench` (e.g. --threads 2 --out results --plot overhead.svg).
set -euo pipefail
cd "$(dirname "$0")/.."

source Tests/install-deps.sh

bash bpf/build.sh >&2   # the shipped BPF C programs (the bytecode designs load them)
swift build -c release --product bpflab >&2
exec .build/release/bpflab bench "$@"
