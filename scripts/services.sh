#!/usr/bin/env bash
# Local services for Vigía's development and tests, on loopback only:
#   kafka       Apache Kafka 4 (KRaft, one node)      127.0.0.1:${VIGIA_KAFKA_PORT:-9092} (controller :${VIGIA_KAFKA_CONTROLLER_PORT:-9093})
#   clickhouse  ClickHouse server (Debian package)    127.0.0.1:${VIGIA_CLICKHOUSE_HTTP_PORT:-8123} (HTTP)
#   postgres    PostgreSQL cluster, database "vigia"  127.0.0.1:${VIGIA_POSTGRES_PORT:-5433}
#
# Usage: scripts/services.sh {up|down|status|env} [kafka|clickhouse|postgres ...]
#   up      install what is missing, start what is not answering, wait until it answers
#   down    stop what this script started (pid files / our PostgreSQL cluster); leaves others alone
#   status  one line per service; exit 1 if any is not answering
#   env     print `export VIGIA_...=...` lines: eval "$(scripts/services.sh env)"
# With no service named, all three.
#
# Every step is idempotent: a port that already answers the right protocol counts as up, whoever
# started it. Data, logs and pid files live in ${VIGIA_DATA_DIR:-<repo>/.data}. Kafka's jars come
# from Maven Central once (scripts/kafka.sh: cached in ${VIGIA_CACHE_DIR:-$HOME/.cache/vigia}/kafka,
# with a Java runtime and Maven from Debian where missing); its data (.data/kafka) survives `down`.
#
# Other knobs: VIGIA_KAFKA_VERSION (4.4.0), VIGIA_KAFKA_HEAP (1g), VIGIA_CLICKHOUSE_TCP_PORT (9000),
# VIGIA_WAIT_SECONDS (how long to wait for a service to answer, 60).
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA_DIR=${VIGIA_DATA_DIR:-$REPO_DIR/.data}
[[ $DATA_DIR == /* ]] || DATA_DIR=$PWD/$DATA_DIR
CACHE_DIR=${VIGIA_CACHE_DIR:-${HOME:-/root}/.cache/vigia}
KAFKA_PORT=${VIGIA_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${VIGIA_KAFKA_CONTROLLER_PORT:-9093}
CH_HTTP_PORT=${VIGIA_CLICKHOUSE_HTTP_PORT:-8123}
CH_TCP_PORT=${VIGIA_CLICKHOUSE_TCP_PORT:-9000}
PG_PORT=${VIGIA_POSTGRES_PORT:-5433}
PG_DATABASE=vigia
WAIT_SECONDS=${VIGIA_WAIT_SECONDS:-60}
HOST=127.0.0.1

ALL_SERVICES=(kafka clickhouse postgres)

say() { echo "services: $*" >&2; }
die() {
    echo "services: ERROR: $*" >&2
    exit 1
}

# --- small helpers -----------------------------------------------------------------------------

# True when something accepts TCP connections on HOST:$1.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# Prints the pid recorded in pid file $1 if that process is alive and its command line
# contains $2 (so a recycled pid is never mistaken for ours).
live_pid() {
    local pid_file=$1 expected=$2 pid
    [[ -f $pid_file ]] || return 1
    pid=$(<"$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$expected"* ]] || return 1
    echo "$pid"
}

# Stops the process of pid file $2 (named $1, command line containing $3): TERM, then KILL.
stop_pid_file() {
    local name=$1 pid_file=$2 expected=$3 pid
    if ! pid=$(live_pid "$pid_file" "$expected"); then
        rm -f "$pid_file"
        say "$name: not started by this script (no live pid file); left alone"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name: pid $pid ignored SIGTERM for 20s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
    say "$name: stopped (pid $pid)"
}

# Called when a service does not answer: if the process of our pid file is still alive, it hung
# (a server can wedge while its process lives on), so stop it to start afresh.
restart_if_hung() {
    local name=$1 pid_file=$2 expected=$3 log=$4 pid
    pid=$(live_pid "$pid_file" "$expected") || return 0
    say "$name: pid $pid is running but does not answer; restarting it (its log: $log)"
    stop_pid_file "$name" "$pid_file" "$expected"
}

# Starts "$@" detached from this shell (own session, no stdin), logging to $LOG, pid to $PID_FILE.
start_detached() {
    local log=$1 pid_file=$2 dir=$3
    shift 3
    mkdir -p "$(dirname "$log")" "$(dirname "$pid_file")" "$dir"
    echo "=== $(date -u +%FT%TZ) services.sh starts: $*" >>"$log"
    (cd "$dir" && exec setsid nohup "$@" >>"$log" 2>&1 </dev/null) &
    echo $! >"$pid_file"
}

# Polls "$@" until it succeeds or WAIT_SECONDS pass; fails early if pid file $1's process died.
wait_until() {
    local pid_file=$1 expected=$2
    shift 2
    local deadline=$((SECONDS + WAIT_SECONDS))
    while ((SECONDS < deadline)); do
        "$@" && return 0
        live_pid "$pid_file" "$expected" >/dev/null || return 1
        sleep 0.5
    done
    return 1
}

# shellcheck source=apt.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/apt.sh"

# --- Apache Kafka (scripts/kafka.sh) ------------------------------------------------------------

KAFKA_DIR=$DATA_DIR/kafka
KAFKA_SH=$REPO_DIR/scripts/kafka.sh

kafka_ready() {
    bash "$KAFKA_SH" ready "$1"
}

kafka_up() {
    if kafka_ready "$KAFKA_PORT"; then
        say "kafka: up on $HOST:$KAFKA_PORT"
        return 0
    fi
    if [[ ! -f $KAFKA_DIR/kafka.pid ]] && port_open "$KAFKA_PORT"; then
        die "kafka: $HOST:$KAFKA_PORT is taken by something that is not a Kafka broker advertising $HOST:$KAFKA_PORT; stop it or set VIGIA_KAFKA_PORT"
    fi
    # One combined broker/controller; its data survives `down` (delete $KAFKA_DIR to start afresh).
    VIGIA_WAIT_SECONDS=$WAIT_SECONDS bash "$KAFKA_SH" start "$KAFKA_DIR" --node-id 1 \
        --port "$KAFKA_PORT" --controller-port "$KAFKA_CONTROLLER_PORT" \
        --voters "1@$HOST:$KAFKA_CONTROLLER_PORT" --heap "${VIGIA_KAFKA_HEAP:-1g}"
}

# --- ClickHouse --------------------------------------------------------------------------------

CH_DIR=$DATA_DIR/clickhouse
CH_PID_FILE=$DATA_DIR/run/clickhouse.pid
CH_LOG=$DATA_DIR/logs/clickhouse-stdout.log

ch_server_bin() {
    if [[ -x /usr/sbin/clickhouse-server ]]; then
        echo /usr/sbin/clickhouse-server
    else
        command -v clickhouse-server
    fi
}

clickhouse_ready() {
    [[ $(curl -fsS --max-time 2 "http://$HOST:$1/" 2>/dev/null) == "Ok." ]]
}

# Writes $CH_DIR/config.xml and users.xml from the packaged ones: every path into CH_DIR, loopback
# only, our ports, no interserver/MySQL/PostgreSQL/TLS ports, quiet logs.
clickhouse_write_config() {
    local etc=/etc/clickhouse-server
    [[ -f $etc/config.xml && -f $etc/users.xml ]] || die "clickhouse: $etc/config.xml or users.xml missing; reinstall: apt-get install --reinstall clickhouse-server"
    command -v python3 >/dev/null || die "clickhouse: python3 is needed to write the config; apt-get install python3"
    mkdir -p "$CH_DIR/data" "$CH_DIR/log"
    cp "$etc/users.xml" "$CH_DIR/users.xml"
    python3 - "$etc/config.xml" "$CH_DIR" "$HOST" "$CH_HTTP_PORT" "$CH_TCP_PORT" <<'PY'
import sys
import xml.etree.ElementTree as ET

src, ch_dir, host, http_port, tcp_port = sys.argv[1:]
tree = ET.parse(src)
root = tree.getroot()
for el in root.iter():
    if el.text and el.text.strip():
        text = el.text.strip()
        text = text.replace("/var/lib/clickhouse/", ch_dir + "/data/")
        text = text.replace("/var/log/clickhouse-server/", ch_dir + "/log/")
        el.text = text

def set_child(parent, tag, value):
    el = parent.find(tag)
    if el is None:
        el = ET.SubElement(parent, tag)
    el.text = value

for tag in ("listen_host", "interserver_http_port", "interserver_https_port", "https_port",
            "tcp_port_secure", "mysql_port", "postgresql_port", "grpc_port", "tcp_with_proxy_port"):
    for el in root.findall(tag):
        root.remove(el)
set_child(root, "listen_host", host)
set_child(root, "http_port", http_port)
set_child(root, "tcp_port", tcp_port)
set_child(root, "users_config", ch_dir + "/users.xml")
users_xml_path = root.find("user_directories/users_xml/path")
if users_xml_path is not None:
    users_xml_path.text = ch_dir + "/users.xml"
logger = root.find("logger")
if logger is not None:
    set_child(logger, "level", "warning")
tree.write(ch_dir + "/config.xml", encoding="utf-8", xml_declaration=True)
PY
}

clickhouse_up() {
    if clickhouse_ready "$CH_HTTP_PORT"; then
        say "clickhouse: up on http://$HOST:$CH_HTTP_PORT"
        return 0
    fi
    restart_if_hung clickhouse "$CH_PID_FILE" clickhouse "$CH_DIR/log/clickhouse-server.err.log"
    port_open "$CH_HTTP_PORT" && die "clickhouse: $HOST:$CH_HTTP_PORT is taken by something that does not answer 'Ok.'; stop it or set VIGIA_CLICKHOUSE_HTTP_PORT"
    port_open "$CH_TCP_PORT" && die "clickhouse: TCP port $HOST:$CH_TCP_PORT is taken; set VIGIA_CLICKHOUSE_TCP_PORT to a free port"
    if [[ -z $(ch_server_bin) ]]; then
        apt_install clickhouse-server clickhouse-client
    fi
    local bin
    bin=$(ch_server_bin) || die "clickhouse: clickhouse-server not found after install"
    clickhouse_write_config
    start_detached "$CH_LOG" "$CH_PID_FILE" "$CH_DIR" "$bin" --config-file="$CH_DIR/config.xml"
    if ! wait_until "$CH_PID_FILE" clickhouse clickhouse_ready "$CH_HTTP_PORT"; then
        tail -n 20 "$CH_LOG" "$CH_DIR/log/clickhouse-server.err.log" >&2 2>/dev/null || true
        die "clickhouse: did not answer on http://$HOST:$CH_HTTP_PORT within ${WAIT_SECONDS}s (logs in $CH_DIR/log)"
    fi
    say "clickhouse: started on http://$HOST:$CH_HTTP_PORT, tcp $CH_TCP_PORT (pid $(<"$CH_PID_FILE"))"
}

# --- PostgreSQL --------------------------------------------------------------------------------

# Newest /usr/lib/postgresql/N/bin with pg_ctl, or nothing.
pg_bin_dir() {
    local dir
    dir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    [[ -x $dir/pg_ctl ]] && echo "$dir"
}

# Runs a command as the postgres user when we are root (PostgreSQL refuses to run as root).
as_pg() {
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# The cluster lives in DATA_DIR/postgres unless the postgres user cannot reach DATA_DIR (a clone
# under /root, say); then in /var/tmp, named after DATA_DIR so each data dir has its own cluster.
pg_cluster_dir() {
    if [[ $(id -u) != 0 ]] || runuser -u postgres -- test -x "$DATA_DIR" 2>/dev/null; then
        echo "$DATA_DIR/postgres"
    else
        echo "/var/tmp/vigia-postgres-$(printf %s "$DATA_DIR" | cksum | cut -d' ' -f1)"
    fi
}

pg_ready() {
    "$1/pg_isready" -q -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -t 2
}

pg_ensure_database() {
    local bin=$1 exists
    exists=$("$bin/psql" -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'" 2>&1) ||
        die "postgres: cannot query $HOST:$PG_PORT as user postgres without a password: $exists"
    if [[ $exists != 1 ]]; then
        "$bin/createdb" -h "$HOST" -p "$PG_PORT" -U postgres "$PG_DATABASE" ||
            die "postgres: createdb $PG_DATABASE failed on $HOST:$PG_PORT"
        say "postgres: created database $PG_DATABASE"
    fi
}

postgres_up() {
    local bin
    bin=$(pg_bin_dir) || true
    if [[ -z $bin ]]; then
        apt_install postgresql
        bin=$(pg_bin_dir) || die "postgres: no /usr/lib/postgresql/*/bin/pg_ctl after installing postgresql"
    fi
    id postgres >/dev/null 2>&1 || die "postgres: no 'postgres' system user; apt-get install --reinstall postgresql-common"
    if pg_ready "$bin"; then
        pg_ensure_database "$bin"
        say "postgres: up on $HOST:$PG_PORT (database $PG_DATABASE)"
        return 0
    fi
    port_open "$PG_PORT" && die "postgres: $HOST:$PG_PORT is taken by something that is not PostgreSQL; set VIGIA_POSTGRES_PORT"
    local dir
    dir=$(pg_cluster_dir)
    [[ $dir == "$DATA_DIR/postgres" ]] || say "postgres: user postgres cannot reach $DATA_DIR; cluster in $dir"
    if [[ ! -f $dir/PG_VERSION ]]; then
        mkdir -p "$dir"
        if [[ $(id -u) == 0 ]]; then chown postgres:postgres "$dir"; fi
        chmod 700 "$dir"
        as_pg "$bin/initdb" -D "$dir" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$DATA_DIR/logs/postgres-initdb.log" 2>&1 ||
            die "postgres: initdb failed; see $DATA_DIR/logs/postgres-initdb.log"
        # A throwaway local cluster: durability is not worth the fsyncs.
        cat >>"$dir/postgresql.conf" <<'CONF'

# vigia scripts/services.sh: local test cluster
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
        say "postgres: created cluster in $dir"
    fi
    # Port and addresses on the command line so a changed VIGIA_POSTGRES_PORT applies on restart;
    # no Unix socket (its directory may not exist or be writable): TCP on loopback only.
    as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t "$WAIT_SECONDS" -s start \
        -o "-p $PG_PORT -c listen_addresses=$HOST -c unix_socket_directories=''" >&2 || {
        tail -n 20 "$dir/server.log" >&2 || true
        die "postgres: pg_ctl start failed (log above: $dir/server.log)"
    }
    pg_ensure_database "$bin"
    say "postgres: started on $HOST:$PG_PORT (cluster $dir, database $PG_DATABASE)"
}

postgres_down() {
    local bin dir
    bin=$(pg_bin_dir) || true
    dir=$(pg_cluster_dir)
    if [[ -z $bin || ! -f $dir/postmaster.pid ]] || ! as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        say "postgres: our cluster ($dir) is not running; anything else on $HOST:$PG_PORT left alone"
        return 0
    fi
    as_pg "$bin/pg_ctl" -D "$dir" -w -t 30 -s -m fast stop >&2 || die "postgres: pg_ctl stop failed; see $dir/server.log"
    say "postgres: stopped (cluster $dir kept; delete it to start afresh)"
}

# --- commands ----------------------------------------------------------------------------------

status_line() {
    local name=$1 ready=$2 where=$3 pid_file=${4:-} expected=${5:-} pid
    if $ready; then
        if [[ -n $pid_file ]] && pid=$(live_pid "$pid_file" "$expected"); then
            echo "$name: up on $where (started by this script, pid $pid)"
        else
            echo "$name: up on $where"
        fi
        return 0
    fi
    if [[ -n $pid_file ]] && pid=$(live_pid "$pid_file" "$expected"); then
        echo "$name: NOT ANSWERING on $where (pid $pid started by this script is alive); 'scripts/services.sh up $name' restarts it"
        return 1
    fi
    echo "$name: DOWN ($where); start it with: scripts/services.sh up $name"
    return 1
}

service_status() {
    case $1 in
    kafka)
        local ready=false
        kafka_ready "$KAFKA_PORT" && ready=true
        status_line kafka $ready "$HOST:$KAFKA_PORT" "$KAFKA_DIR/kafka.pid" kafka.Kafka
        ;;
    clickhouse)
        local ready=false
        clickhouse_ready "$CH_HTTP_PORT" && ready=true
        status_line clickhouse $ready "http://$HOST:$CH_HTTP_PORT" "$CH_PID_FILE" clickhouse
        ;;
    postgres)
        local ready=false bin
        bin=$(pg_bin_dir) || true
        [[ -n $bin ]] && pg_ready "$bin" && ready=true
        status_line postgres $ready "$HOST:$PG_PORT"
        ;;
    esac
}

service_env() {
    case $1 in
    kafka) echo "export VIGIA_KAFKA_BROKERS=$HOST:$KAFKA_PORT" ;;
    clickhouse) echo "export VIGIA_CLICKHOUSE_URL=http://$HOST:$CH_HTTP_PORT" ;;
    postgres) echo "export VIGIA_TEST_POSTGRES_URL=postgres://postgres@$HOST:$PG_PORT/$PG_DATABASE" ;;
    esac
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

main() {
    [[ $# -ge 1 ]] || usage
    local command=$1
    shift
    local services=("$@")
    ((${#services[@]})) || services=("${ALL_SERVICES[@]}")
    for service in "${services[@]}"; do
        case $service in
        kafka | clickhouse | postgres) ;;
        *) die "unknown service '$service' (known: ${ALL_SERVICES[*]})" ;;
        esac
    done

    case $command in
    up)
        mkdir -p "$DATA_DIR/run" "$DATA_DIR/logs"
        for service in "${services[@]}"; do
            local started=$SECONDS
            "${service}_up"
            ((SECONDS - started < 5)) || say "$service: took $((SECONDS - started))s"
        done
        ;;
    down)
        for service in "${services[@]}"; do
            case $service in
            kafka) bash "$KAFKA_SH" stop "$KAFKA_DIR" ;;
            clickhouse) stop_pid_file clickhouse "$CH_PID_FILE" clickhouse ;;
            postgres) postgres_down ;;
            esac
        done
        ;;
    status)
        local failed=0
        for service in "${services[@]}"; do
            service_status "$service" || failed=1
        done
        return $failed
        ;;
    env)
        for service in "${services[@]}"; do
            service_env "$service"
        done
        ;;
    *) usage ;;
    esac
}

main "$@"
