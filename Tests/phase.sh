#!/usr/bin/env bash
# phase NAME MINUTES COMMAND... — runs one step of Tests/run.sh with a time budget, so a
# hang cannot eat CI's 90 minutes in silence. It prints the step's duration; a step still
# running after its budget gets, before it is killed: the test that was running (the last
# "Test Case ... started" line), every process under it with its age, and the stacks of
# every thread of each test process (gdb, when installed). Sourced by Tests/run.sh.

# The processes under $1, depth first.
descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}

phase() {
    local name=$1 minutes=$2
    shift 2
    local log
    log=$(mktemp /tmp/bpflab-phase.XXXXXX)
    echo "== $name (budget $minutes min) =="
    local t0=$SECONDS
    # Control bytes other than tab and newline are shown as '?', so output that is not text
    # (a crash dump, a binary file) stays readable in CI's log.
    # Line-buffered, so nothing waits in tr's buffer when a step is stopped.
    local lb=""
    command -v stdbuf >/dev/null 2>&1 && lb="stdbuf -oL"
    ( "$@" 2>&1 | tee "$log" | LC_ALL=C $lb tr '\000-\010\013\014\016-\037\177' '?' ) &
    local pid=$!
    (
        # Looks once a second; ends by itself when the step does.
        for ((i = 0; i < minutes * ${PHASE_SECONDS_PER_MINUTE:-60}; i++)); do
            kill -0 "$pid" 2>/dev/null || exit 0
            sleep 1 >/dev/null 2>&1
        done
        echo
        echo "!! $name: still running after $minutes min; stopping it"
        echo "!! the last test started: $(grep -a "Test Case .* started" "$log" | tail -1)"
        local ps_list
        ps_list=$(descendants "$pid")
        for p in $ps_list; do ps -o pid=,etime=,args= -p "$p" 2>/dev/null | cut -c1-200; done
        if command -v gdb >/dev/null 2>&1; then
            for p in $ps_list; do
                case "$(ps -o comm= -p "$p" 2>/dev/null)" in
                *xctest*|*PackageTe*|bpflab*)
                    echo "!! stacks of $p:"
                    timeout 60 gdb -p "$p" -batch -nx -ex "set pagination off" -ex "thread apply all bt 25" 2>/dev/null \
                        | grep -a "^#\|^Thread" | cut -c1-220 ;;
                esac
            done
        fi
        for p in $ps_list; do kill -TERM "$p" 2>/dev/null; done
        sleep 20 >/dev/null 2>&1
        for p in $ps_list; do kill -KILL "$p" 2>/dev/null; done
    ) &
    local watchdog=$!
    local rc=0
    wait "$pid" || rc=$?
    wait "$watchdog" 2>/dev/null || true
    rm -f "$log"
    echo "== $name: $((SECONDS - t0)) s, exit $rc =="
    return "$rc"
}
