#!/usr/bin/env bash
# Installs the Debian packages bpflab needs, if missing: libnuma-dev (it builds against
# it) and graphviz (`bpflab graph` renders SVG with dot; the tests check every graph
# renders). Sourced by Tests/run.sh and Perf/bench.sh.
missing=""
dpkg -s libnuma-dev >/dev/null 2>&1 || missing="$missing libnuma-dev"
command -v dot >/dev/null 2>&1 || missing="$missing graphviz"
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
