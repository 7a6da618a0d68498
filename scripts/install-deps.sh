#!/usr/bin/env bash
# Installs what a fresh Debian machine needs to build and test Vigía, beyond the Rust toolchain.
# Quick and silent when everything is already there (checks dpkg before calling apt-get).
#
# Usage: scripts/install-deps.sh [--no-browser] [--no-services]
#   --no-browser   skip Chromium + ChromeDriver (only the browser tests need them)
#   --no-services  skip the ClickHouse and PostgreSQL servers (scripts/services.sh installs
#                  them on demand anyway)
#
# What and why:
#   gcc g++ make perl pkgconf zlib1g-dev  rdkafka's bundled librdkafka (./configure + make, no
#                                          cmake), libz-sys, libsqlite3-sys (bundled C builds)
#   openssl                               RSA keys for the gateway's RS256 tests
#   python3-venv                          cached venvs for chdb (current ClickHouse) and Docker
#                                          Compose (tests/analytics.rs, tests/compose.rs)
#   nodejs npm                            the official socket.io-client in the gateway's test
#   curl python3 util-linux procps        scripts/services.sh (health checks, ClickHouse config,
#                                          flock/setsid/runuser, pgrep)
#   clickhouse-server clickhouse-client   ClickHouse for the sink tests (Debian ships 18.16)
#   postgresql                            PostgreSQL for the database tests
#   chromium chromium-driver              browser (end-to-end) tests
# Apache Kafka comes from Maven Central: scripts/kafka.sh resolves its jars once (and installs
# openjdk-17-jre-headless and maven where java >= 17 or mvn is missing).
set -euo pipefail

say() { echo "install-deps: $*" >&2; }
die() {
    echo "install-deps: ERROR: $*" >&2
    exit 1
}

with_browser=1
with_services=1
for arg in "$@"; do
    case $arg in
    --no-browser) with_browser=0 ;;
    --no-services) with_services=0 ;;
    -h | --help)
        sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown option '$arg' (try --help)" ;;
    esac
done

packages=(gcc g++ make perl pkgconf zlib1g-dev curl python3 python3-venv util-linux procps openssl)
# Node and npm for the Socket.IO client test; a Node from elsewhere (e.g. NodeSource) is fine.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
((with_services)) && packages+=(clickhouse-server clickhouse-client postgresql)
((with_browser)) && packages+=(chromium chromium-driver)

installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

missing=()
for package in "${packages[@]}"; do
    installed "$package" || missing+=("$package")
done

if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "apt-get not found: install by hand: ${missing[*]}"
    [[ $(id -u) == 0 ]] || die "needs root to install: sudo apt-get install -y ${missing[*]}"
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing or stale on a fresh machine: refresh them once if the
    # first try fails.
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        apt-get update -q >/dev/null || die "apt-get update failed: check the apt sources/network"
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
            die "apt-get install failed: run 'apt-get install ${missing[*]}' to see why"
    fi
fi

# The Rust toolchain cannot be installed from here (no toolchain downloads): check and say so.
problems=0
for tool in cargo rustc; do
    command -v "$tool" >/dev/null || {
        say "missing $tool: install Rust with rustup (stable >= 1.95)"
        problems=1
    }
done
if command -v cargo >/dev/null; then
    cargo fmt --version >/dev/null 2>&1 || say "note: rustfmt missing (rustup component add rustfmt)"
    cargo clippy --version >/dev/null 2>&1 || say "note: clippy missing (rustup component add clippy)"
fi

((problems)) && exit 1
if ((${#missing[@]})); then
    say "done"
else
    say "all present"
fi
