#!/usr/bin/env bash
# Compiles the BPF C programs in this folder into bpf/out/*.o with clang (the Swift
# toolchain's), as the kernel's own build does: clang -O2 -g -target bpf. Needs the
# headers of libbpf-dev (bpf_helpers.h) and the kernel's UAPI headers. Sourced or run by
# Tests/run.sh and Perf/bench.sh; prints one line per object and exits non-zero on a
# compile error.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
mkdir -p out
for src in *.c; do
    obj="out/${src%.c}.o"
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ]; then
        clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -Wall -Werror -c "$src" -o "$obj"
    fi
    echo "bpf/$obj"
done
