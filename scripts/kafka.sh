#!/usr/bin/env bash
# Apache Kafka in KRaft mode from its jars on Maven Central, run with `java`: no Docker, no
# tarball. The one place that knows how to install, start and stop a broker; scripts/services.sh
# (the local single broker) and the broker-cluster test (tests/kafka_cluster.rs) both use it.
#
# Usage:
#   scripts/kafka.sh install
#       Resolves the broker's jars once (Maven, cached in $CACHE/kafka/<version>/libs) and installs
#       a Java runtime (>= 17) and Maven from Debian where they are missing. Prints the lib dir.
#   scripts/kafka.sh start DIR --node-id N --port P --controller-port C --voters V [--cluster-id ID]
#                          [--replication R] [--heap SIZE] [key=value ...]
#       Formats DIR (first start only) and starts a combined broker/controller listening on
#       127.0.0.1:P (clients) and 127.0.0.1:C (KRaft), V being the quorum's voters
#       (`1@127.0.0.1:9093,2@...`). Nodes of one cluster need the same --cluster-id (any name).
#       key=value lines are added to the broker's properties. Waits until the broker answers.
#       Data in DIR/data, logs in DIR/server.log (and DIR/stdout.log), pid in DIR/kafka.pid.
#   scripts/kafka.sh stop DIR [--kill]     TERM (or KILL) the node started in DIR and wait for it.
#   scripts/kafka.sh ready PORT            exit 0 when 127.0.0.1:PORT answers a Kafka Metadata
#                                          request listing a broker that advertises that port.
#
# Knobs: VIGIA_KAFKA_VERSION (4.4.0), VIGIA_CACHE_DIR ($HOME/.cache/vigia),
# VIGIA_WAIT_SECONDS (how long `start` waits for the broker to answer, 90).
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAFKA_VERSION=${VIGIA_KAFKA_VERSION:-4.4.0}
CACHE_DIR=${VIGIA_CACHE_DIR:-${HOME:-/root}/.cache/vigia}
LIB_DIR=$CACHE_DIR/kafka/$KAFKA_VERSION/libs
WAIT_SECONDS=${VIGIA_WAIT_SECONDS:-90}
HOST=127.0.0.1

say() { echo "kafka: $*" >&2; }
die() {
    echo "kafka: ERROR: $*" >&2
    exit 1
}

# shellcheck source=apt.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/apt.sh"

# The major version of `java` on PATH, or nothing.
java_major() {
    command -v java >/dev/null || return 0
    java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
}

ensure_java() {
    local major
    major=$(java_major)
    if [[ -z $major || $major -lt 17 ]]; then
        # Kafka 4 brokers need Java 17 or newer; Debian 12 ships 17.
        apt_install openjdk-17-jre-headless
        major=$(java_major)
        [[ -n $major && $major -ge 17 ]] || die "java >= 17 is needed (found '${major:-none}'); install a JRE 17+ and put it on PATH"
    fi
}

ensure_jars() {
    if [[ -f $LIB_DIR/.complete ]]; then
        return 0
    fi
    command -v mvn >/dev/null || apt_install maven
    mkdir -p "$(dirname "$LIB_DIR")"
    local tmp
    tmp=$(mktemp -d "$(dirname "$LIB_DIR")/libs.XXXXXX")
    say "resolving Apache Kafka $KAFKA_VERSION jars from Maven Central (once; cached in $LIB_DIR)"
    if ! mvn -q -B -f "$REPO_DIR/scripts/kafka-pom.xml" -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
        tail -n 20 "$tmp.log" >&2
        rm -rf "$tmp"
        die "resolving the Kafka jars failed (above; full log $tmp.log)"
    fi
    rm -f "$tmp.log"
    touch "$tmp/.complete"
    rm -rf "$LIB_DIR"
    mv "$tmp" "$LIB_DIR"
}

# True when HOST:$1 answers a Kafka Metadata (v4) request and advertises a broker on HOST:$1.
# (Kafka 4 no longer answers Metadata v0-v3.)
ready() {
    local port=$1
    python3 - "$HOST" "$port" <<'PY' 2>/dev/null
import socket, struct, sys

host, port = sys.argv[1], int(sys.argv[2])
client = b"vigia-services"
# Request header v1 (api_key 3 = Metadata, version 4, correlation id 7, client id), then a null
# topic array (= all topics) and allow_auto_topic_creation = false.
body = struct.pack(">hhih", 3, 4, 7, len(client)) + client + struct.pack(">ib", -1, 0)
with socket.create_connection((host, port), timeout=3) as sock:
    sock.settimeout(3)
    sock.sendall(struct.pack(">i", len(body)) + body)

    def read(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError("connection closed")
            data += chunk
        return data

    (size,) = struct.unpack(">i", read(4))
    resp = read(size)
# correlation id, throttle_time_ms, brokers[node_id, host, port, rack]
correlation, _throttle, brokers = struct.unpack_from(">iii", resp, 0)
assert correlation == 7 and brokers >= 1, "bad metadata response"
offset = 12
advertised = []
for _ in range(brokers):
    (node_id, host_len) = struct.unpack_from(">ih", resp, offset)
    offset += 6
    name = resp[offset : offset + host_len].decode()
    offset += host_len
    (bport, rack_len) = struct.unpack_from(">ih", resp, offset)
    offset += 6 + max(rack_len, 0)
    advertised.append((name, bport))
sys.exit(0 if (host, port) in advertised or ("localhost", port) in advertised else 3)
PY
}

pid_of() {
    local dir=$1 pid
    [[ -f $dir/kafka.pid ]] || return 1
    pid=$(<"$dir/kafka.pid")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka" || return 1
    echo "$pid"
}

start() {
    local dir=$1
    shift
    local node_id="" port="" controller_port="" voters="" cluster_id="" replication=1 heap=1g
    local extra=()
    while (($#)); do
        case $1 in
        --node-id) node_id=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --controller-port) controller_port=$2; shift 2 ;;
        --voters) voters=$2; shift 2 ;;
        --cluster-id) cluster_id=$2; shift 2 ;;
        --replication) replication=$2; shift 2 ;;
        --heap) heap=$2; shift 2 ;;
        *=*) extra+=("$1"); shift ;;
        *) die "start: unknown argument '$1'" ;;
        esac
    done
    [[ -n $node_id && -n $port && -n $controller_port && -n $voters ]] ||
        die "start: --node-id, --port, --controller-port and --voters are required"
    [[ $dir == /* ]] || dir=$PWD/$dir
    if pid_of "$dir" >/dev/null; then
        say "node $node_id already running in $dir (pid $(pid_of "$dir")); waiting until it answers"
        wait_ready "$dir" "$node_id" "$port"
        return
    fi
    ensure_java
    ensure_jars
    mkdir -p "$dir"
    local min_isr=$((replication > 1 ? 2 : 1))
    # Settings for a loopback broker: no 3 s wait before the first rebalance of a group (tests
    # start and stop consumers all the time), internal topics sized to the cluster.
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$voters
listeners=PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$controller_port
advertised.listeners=PLAINTEXT://$HOST:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=3
default.replication.factor=$replication
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replication
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0
EOF
    local kv
    for kv in "${extra[@]}"; do
        echo "$kv" >>"$dir/server.properties"
    done
    cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $dir/server.log
appender.file.filePattern = $dir/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = ${VIGIA_KAFKA_LOG_LEVEL:-info}
rootLogger.appenderRef.file.ref = file
logger.kafka-request.name = kafka.request.logger
logger.kafka-request.level = warn
EOF
    local java_opts=(-Xms256m "-Xmx$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$dir/log4j2.properties" -cp "$LIB_DIR/*")
    if [[ ! -f $dir/data/meta.properties ]]; then
        # Kafka's cluster id is a base64 UUID; the name given (or a random one) is hashed into one.
        [[ -n $cluster_id ]] || cluster_id=$(python3 -c 'import uuid; print(uuid.uuid4())')
        cluster_id=$(python3 -c 'import base64, hashlib, sys; print(base64.urlsafe_b64encode(hashlib.md5(sys.argv[1].encode()).digest()).decode().rstrip("=").replace("-", "A"))' "$cluster_id")
        java "${java_opts[@]}" kafka.tools.StorageTool format "--cluster-id=$cluster_id" \
            -c "$dir/server.properties" >"$dir/format.log" 2>&1 ||
            { cat "$dir/format.log" >&2; die "formatting $dir failed"; }
    fi
    echo "=== $(date -u +%FT%TZ) kafka.sh starts node $node_id" >>"$dir/stdout.log"
    (cd "$dir" && exec setsid nohup java "${java_opts[@]}" kafka.Kafka "$dir/server.properties" \
        >>"$dir/stdout.log" 2>&1 </dev/null) &
    echo $! >"$dir/kafka.pid"
    wait_ready "$dir" "$node_id" "$port"
}

wait_ready() {
    local dir=$1 node_id=$2 port=$3
    local deadline=$((SECONDS + WAIT_SECONDS))
    until ready "$port"; do
        if ! pid_of "$dir" >/dev/null; then
            tail -n 20 "$dir/stdout.log" "$dir/server.log" >&2 2>/dev/null || true
            die "node $node_id in $dir exited (logs above)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$dir/server.log" >&2 2>/dev/null || true
            die "node $node_id did not answer on $HOST:$port within ${WAIT_SECONDS}s (log: $dir/server.log)"
        fi
        sleep 0.5
    done
    say "node $node_id up on $HOST:$port (pid $(<"$dir/kafka.pid"), data in $dir/data)"
}

stop() {
    local dir=$1 signal=TERM pid
    [[ ${2:-} == --kill ]] && signal=KILL
    if ! pid=$(pid_of "$dir"); then
        rm -f "$dir/kafka.pid"
        say "no node running in $dir"
        return 0
    fi
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid ignored SIG$signal for 30s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$dir/kafka.pid"
    say "node in $dir stopped (SIG$signal, pid $pid)"
}

case ${1:-} in
install)
    ensure_java
    ensure_jars
    echo "$LIB_DIR"
    ;;
start)
    [[ $# -ge 2 ]] || die "usage: kafka.sh start DIR --node-id N --port P --controller-port C --voters V"
    shift
    start "$@"
    ;;
stop)
    [[ $# -ge 2 ]] || die "usage: kafka.sh stop DIR [--kill]"
    stop "$2" "${3:-}"
    ;;
ready)
    [[ $# -ge 2 ]] || die "usage: kafka.sh ready PORT"
    ready "$2"
    ;;
*)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
