#!/usr/bin/env bash
# Runs every bench program once at a tiny size (debug build, no timing
# assertion), so a bench that no longer builds or runs fails CI (#32).
# The numbers printed here mean nothing; docs/benchmarks.md says how to
# measure.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services

run() {
    local crate=$1 bench=$2
    shift 2
    echo "--> $crate --example $bench $*"
    local start=$SECONDS
    if ! cargo run -q -p "$crate" --all-features --example "$bench" -- "$@" >/tmp/bench-smoke.$$ 2>&1; then
        cat /tmp/bench-smoke.$$
        rm -f /tmp/bench-smoke.$$
        echo "bench-smoke: $bench failed (output above)" >&2
        exit 1
    fi
    rm -f /tmp/bench-smoke.$$
    echo "    ok in $((SECONDS - start)) s"
}
run eventsource-bus-memory bench_memory 200 1
run eventsource-bus-redis bench_redis 200 1
run eventsource-bus-redis bench_redis_partitions 200 1
run eventsource-bus-rabbitmq bench_rabbitmq 200 1
run eventsource-bus-rabbitmq bench_rabbitmq_partitions 200 1
run eventsource-bus-kafka bench_kafka 200 1
run eventsource-bus-nats bench_nats 200 1
run eventsource-store bench_store both 200 1
run eventsource-store bench_personal both 200 1
run eventsource-store bench_process both 50 1
