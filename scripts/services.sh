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
NEEDED_SERVICES=${NEEDED_SERVICES:-postgres redis redis_cluster rabbitmq rabbitmq_cluster nats tansu chromium}

ensure_services() {
    local s
    for s in $NEEDED_SERVICES; do
        "ensure_$s"
    done
}

ensure_redis() {
    if port_open 6379; then return 0; fi
    if ! command -v redis-server >/dev/null; then
        echo "==> installing redis-server"
        apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    fi
    echo "==> starting Redis on 127.0.0.1:6379"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_port Redis 6379 30
}

# A private Redis Cluster for the cluster tests: 3 masters (7101-7103) and
# one replica each (7104-7106), on loopback, never the shared 6379.
REDIS_CLUSTER_PORTS="7101 7102 7103 7104 7105 7106"
REDIS_CLUSTER_DIR=${REDIS_CLUSTER_DIR:-/tmp/eventsource-redis-cluster}

redis_cluster_healthy() {
    redis-cli -p 7101 cluster info 2>/dev/null | grep -q 'cluster_state:ok' &&
        [ "$(redis-cli -p 7101 cluster nodes | grep -c slave)" = 3 ]
}

ensure_redis_cluster() {
    ensure_redis # installs redis-server and redis-cli when missing
    local port all_open=1
    for port in $REDIS_CLUSTER_PORTS; do
        port_open "$port" || all_open=0
    done
    if [ "$all_open" = 1 ] && redis_cluster_healthy; then
        return 0
    fi
    # Anything short of a whole, healthy cluster is started again from
    # nothing: it holds test data only.
    echo "==> starting a Redis Cluster on 127.0.0.1:7101-7106 (data: $REDIS_CLUSTER_DIR)"
    for port in $REDIS_CLUSTER_PORTS; do
        if port_open "$port"; then redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; fi
    done
    rm -rf "$REDIS_CLUSTER_DIR"
    local nodes=""
    for port in $REDIS_CLUSTER_PORTS; do
        mkdir -p "$REDIS_CLUSTER_DIR/$port"
        redis-server --daemonize yes --bind 127.0.0.1 --port "$port" \
            --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 2000 --appendonly yes --appendfsync everysec \
            --dir "$REDIS_CLUSTER_DIR/$port" --logfile "$REDIS_CLUSTER_DIR/$port/redis.log"
        wait_port "Redis Cluster node" "$port" 30
        nodes="$nodes 127.0.0.1:$port"
    done
    # shellcheck disable=SC2086
    redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes >/dev/null
    local i
    for ((i = 0; i < 300; i++)); do
        redis_cluster_healthy && return 0
        sleep 0.1
    done
    echo "error: the Redis Cluster on 127.0.0.1:7101-7106 did not reach cluster_state:ok with 3 replicas within 30 s" >&2
    return 1
}

ensure_nats() {
    if port_open 4222; then return 0; fi
    if ! command -v nats-server >/dev/null; then
        echo "==> installing nats-server"
        apt-get update -qq && apt-get install -y -qq nats-server >/dev/null
    fi
    echo "==> starting NATS with JetStream on 127.0.0.1:4222"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_port NATS 4222 30
}

ensure_rabbitmq() {
    if port_open 5672; then return 0; fi
    if ! command -v rabbitmq-server >/dev/null; then
        echo "==> installing rabbitmq-server"
        apt-get update -qq && apt-get install -y -qq rabbitmq-server >/dev/null
    fi
    echo "==> starting RabbitMQ on 127.0.0.1:5672"
    rabbitmq-server -detached
    wait_port RabbitMQ 5672 90
}

# A private 3-node RabbitMQ cluster for the cluster tests, on loopback and
# never the shared 5672: nodes es-rabbit-N@localhost with AMQP on 570N,
# Erlang distribution on 2570N and their own config, plugins file, data
# and logs under $RABBITMQ_CLUSTER_DIR/N. Nodes 2 and 3 join node 1 with
# `rabbitmqctl join_cluster`. The nodes run as the `rabbitmq` user, whose
# Erlang cookie `rabbitmqctl` uses. The fault test starts a cluster of its
# own with the same functions and other values of the three settings.
RABBITMQ_CLUSTER_NODES="1 2 3"
RABBITMQ_CLUSTER_DIR=${RABBITMQ_CLUSTER_DIR:-/tmp/eventsource-rabbitmq-cluster}
RABBITMQ_CLUSTER_NAME=${RABBITMQ_CLUSTER_NAME:-es-rabbit}
RABBITMQ_CLUSTER_PORT_BASE=${RABBITMQ_CLUSTER_PORT_BASE:-5700}

rabbitmq_cluster_node() { echo "$RABBITMQ_CLUSTER_NAME-$1@localhost"; }
rabbitmq_cluster_port() { echo $((RABBITMQ_CLUSTER_PORT_BASE + $1)); }

# Starts node N of the cluster (detached) with its data where it was; the
# same command restarts a node a test stopped or killed.
start_rabbitmq_cluster_node() {
    local n=$1 dir="$RABBITMQ_CLUSTER_DIR/$1" port node i
    port=$(rabbitmq_cluster_port "$n")
    node=$(rabbitmq_cluster_node "$n")
    mkdir -p "$dir"
    printf 'listeners.tcp.local = 127.0.0.1:%s\n' "$port" >"$dir/rabbitmq.conf"
    echo '[].' >"$dir/enabled_plugins"
    chown -R rabbitmq:rabbitmq "$dir"
    runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq \
        RABBITMQ_NODENAME="$node" \
        RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT=$((port + 20000)) \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/pid" \
        /usr/lib/rabbitmq/bin/rabbitmq-server -detached
    # `-detached` returns before the node registers with epmd, and
    # `await_startup` fails at once on a node it cannot reach yet.
    for ((i = 0; i < 600; i++)); do
        rabbitmqctl -q -n "$node" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    rabbitmqctl -q -n "$node" await_startup --timeout 120 >/dev/null
}

# Whether every node listens and node 1 sees all three running.
rabbitmq_cluster_healthy() {
    local n
    for n in $RABBITMQ_CLUSTER_NODES; do port_open "$(rabbitmq_cluster_port "$n")" || return 1; done
    [ "$(rabbitmqctl -q -n "$(rabbitmq_cluster_node 1)" cluster_status --formatter json 2>/dev/null |
        grep -o '"running_nodes":\[[^]]*\]' | grep -o "\"$RABBITMQ_CLUSTER_NAME-" | wc -l)" = 3 ]
}

# Stops every node of the cluster (SIGKILL for one that does not stop).
stop_rabbitmq_cluster() {
    local n
    for n in $RABBITMQ_CLUSTER_NODES; do
        rabbitmqctl -q -n "$(rabbitmq_cluster_node "$n")" stop >/dev/null 2>&1 || true
        if [ -f "$RABBITMQ_CLUSTER_DIR/$n/pid" ]; then
            kill -9 "$(cat "$RABBITMQ_CLUSTER_DIR/$n/pid")" 2>/dev/null || true
        fi
    done
}

ensure_rabbitmq_cluster() {
    ensure_rabbitmq # installs rabbitmq-server when missing
    if rabbitmq_cluster_healthy; then return 0; fi
    # Anything short of a whole, running cluster is started again from
    # nothing: it holds test data only.
    local first last n node
    first=$(rabbitmq_cluster_port 1)
    last=$(rabbitmq_cluster_port 3)
    echo "==> starting a 3-node RabbitMQ cluster on 127.0.0.1:$first-$last (data: $RABBITMQ_CLUSTER_DIR)"
    stop_rabbitmq_cluster
    rm -rf "$RABBITMQ_CLUSTER_DIR"
    for n in $RABBITMQ_CLUSTER_NODES; do
        start_rabbitmq_cluster_node "$n"
        if [ "$n" != 1 ]; then
            node=$(rabbitmq_cluster_node "$n")
            # (join_cluster logs harmless errors about the stopped app.)
            {
                rabbitmqctl -q -n "$node" stop_app &&
                    rabbitmqctl -q -n "$node" join_cluster "$(rabbitmq_cluster_node 1)" &&
                    rabbitmqctl -q -n "$node" start_app
            } >>"$RABBITMQ_CLUSTER_DIR/join.log" 2>&1
        fi
    done
    if ! rabbitmq_cluster_healthy; then
        echo "error: the RabbitMQ cluster on 127.0.0.1:$first-$last is not whole after starting it; see $RABBITMQ_CLUSTER_DIR/join.log and */log" >&2
        return 1
    fi
}

ensure_postgres() {
    if port_open 5432; then return 0; fi
    if ! command -v pg_ctlcluster >/dev/null; then
        echo "==> installing postgresql"
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    fi
    echo "==> starting PostgreSQL on 127.0.0.1:5432"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
    wait_port PostgreSQL 5432 60
    # The tests connect as postgres without a password, to database `test`.
    su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='test'\" | grep -q 1 || createdb test" || true
}

# The Kafka-compatible broker for the Kafka tests: tansu, from crates.io.
TANSU_BIN="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
TANSU_LOG="${TMPDIR:-/tmp}/eventsource-tansu.log"

ensure_tansu() {
    if port_open 9092; then return 0; fi
    if [ ! -x "$TANSU_BIN" ]; then
        echo "==> installing tansu (a Kafka-compatible broker; builds once, about 7 minutes on 2 cores)"
        cargo install tansu --locked --features dynostore,libsql
    fi
    echo "==> starting tansu on 127.0.0.1:9092 (log: $TANSU_LOG)"
    nohup "$TANSU_BIN" broker \
        --listener-url tcp://127.0.0.1:9092 \
        --advertised-listener-url tcp://127.0.0.1:9092 \
        --storage-engine memory://tansu/ >"$TANSU_LOG" 2>&1 &
    wait_port tansu 9092 60
}

# Headless Chromium and its WebDriver, for the web console's browser test
# (eventsource-cli/tests/console.rs). Not a service: installed once.
ensure_chromium() {
    if command -v chromedriver >/dev/null && [ -x /usr/bin/chromium ]; then return 0; fi
    echo "==> installing chromium and chromium-driver (the console's browser test)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
}
