#!/usr/bin/env bash
# Installs the Debian packages bpflab needs, if missing: libnuma-dev (it builds against
# it), graphviz (`bpflab graph` renders SVG with dot; the tests check every graph
# renders) and libbpf-dev (bpf_helpers.h and friends: bpf/build.sh compiles the shipped BPF
# C programs with clang against them) and iproute2 (`ip netns` and veths for the live-kernel
# backend) and liburcu-dev (Perf/RCU measures the lab's RCU against liburcu-qsbr). Sourced by Tests/run.sh and Perf/bench.sh.
missing=""
dpkg -s libnuma-dev >/dev/null 2>&1 || missing="$missing libnuma-dev"
command -v dot >/dev/null 2>&1 || missing="$missing graphviz"
[ -f /usr/include/bpf/bpf_helpers.h ] || missing="$missing libbpf-dev"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
dpkg -s liburcu-dev >/dev/null 2>&1 || missing="$missing liburcu-dev"   # Perf/RCU: the lab's RCU against liburcu-qsbr
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
