#!/usr/bin/env bash
# Starts (and if needed installs) the brokers and databases the tests use.
# Sourced by scripts/test.sh; each step is idempotent.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        port_open "$2" && return 0
        sleep 0.1
    done
    echo "error: $1 did not start listening on 127.0.0.1:$2 within $3 s" >&2
    return 1
}

# Which services the workspace's tests need; later crates add theirs here.
NEEDED_SERVICES=${NEEDED_SERVICES:-}

ensure_services() {
    local s
    for s in $NEEDED_SERVICES; do
        "ensure_$s"
    done
}
