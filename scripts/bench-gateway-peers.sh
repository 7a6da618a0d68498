#!/usr/bin/env bash
# Vigía's gateway beside the servers a user would pick instead (issue 15): installs the peers
# under ~/.cache/vigia/peers (never committed), builds the release binary and runs
# `vigia bench gateway-peers`, which measures every server in one run on this machine and
# writes the "Gateway beside its peers" section of BENCHMARKS.md. Arguments go to the
# benchmark (`vigia bench gateway-peers --help`), e.g. `--runs 3 --connections 10000`.
#
# Peers (versions pinned here):
#   - Centrifugo v6 (Go module, `go install` with GOBIN under the cache),
#   - the Node.js socket.io 4 server (npm, into the cache's node_modules),
#   - python-socketio on aiohttp with uvloop (PyPI, a virtualenv in the cache).
# Vigía's targets need Apache Kafka at VIGIA_KAFKA_BROKERS (127.0.0.1:9092 by default;
# `bash scripts/services.sh up` starts the local one).
set -euo pipefail
cd "$(dirname "$0")/.."

CENTRIFUGO_VERSION=v6.9.1
SOCKETIO_VERSION=4.8.4
PYTHON_SOCKETIO_VERSION=5.18.1
AIOHTTP_VERSION=3.14.5
UVLOOP_VERSION=0.23.0

peers=${VIGIA_BENCH_PEERS_DIR:-$HOME/.cache/vigia/peers}
export VIGIA_BENCH_PEERS_DIR=$peers
mkdir -p "$peers/bin" "$peers/node"

if ! go version -m "$peers/bin/centrifugo" 2>/dev/null | grep -q "centrifugo/v6[[:space:]]*$CENTRIFUGO_VERSION"; then
    echo "installing Centrifugo $CENTRIFUGO_VERSION into $peers/bin (go install; several minutes)"
    (cd /tmp && GOBIN="$peers/bin" nice -n 19 go install "github.com/centrifugal/centrifugo/v6@$CENTRIFUGO_VERSION")
fi
if ! grep -qs "\"version\": \"$SOCKETIO_VERSION\"" "$peers/node/node_modules/socket.io/package.json"; then
    echo "installing socket.io $SOCKETIO_VERSION into $peers/node"
    [[ -f $peers/node/package.json ]] || echo '{"private": true}' >"$peers/node/package.json"
    npm install --prefix "$peers/node" --no-audit --no-fund "socket.io@$SOCKETIO_VERSION"
fi
if ! "$peers/venv/bin/python" -c "import aiohttp, uvloop, sys; from importlib.metadata import version; sys.exit(version('python-socketio') != '$PYTHON_SOCKETIO_VERSION')" 2>/dev/null; then
    echo "installing python-socketio $PYTHON_SOCKETIO_VERSION into $peers/venv"
    python3 -m venv "$peers/venv"
    "$peers/venv/bin/pip" install --quiet "python-socketio==$PYTHON_SOCKETIO_VERSION" \
        "aiohttp==$AIOHTTP_VERSION" "uvloop==$UVLOOP_VERSION"
fi

export VIGIA_KAFKA_BROKERS=${VIGIA_KAFKA_BROKERS:-127.0.0.1:9092}
broker=${VIGIA_KAFKA_BROKERS%%,*}
if ! timeout 2 bash -c "exec 3<>/dev/tcp/${broker%:*}/${broker##*:}" 2>/dev/null; then
    echo "no Kafka at $VIGIA_KAFKA_BROKERS: start it (bash scripts/services.sh up) or set VIGIA_KAFKA_BROKERS" >&2
    exit 1
fi

nice -n 19 cargo build --release --bin vigia
vigia=${CARGO_TARGET_DIR:-target}/release/vigia
# 10,000 clients are 10,000 sockets here and 10,000 in each server (they inherit the limit).
ulimit -n "$(ulimit -Hn)"
echo "load average before: $(cat /proc/loadavg); open files: $(ulimit -n)"
"$vigia" bench gateway-peers "$@"
echo "load average after: $(cat /proc/loadavg)"
