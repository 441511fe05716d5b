#!/usr/bin/env bash
# Installs the Debian packages bpflab builds against (libnuma-dev), if missing.
# Sourced by Tests/run.sh and Perf/bench.sh.
if ! dpkg -s libnuma-dev >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libnuma-dev >/dev/null
fi
