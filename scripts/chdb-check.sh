#!/usr/bin/env bash
# Runs scripts/chdb-check.py (the migrations and the analyst queries of docs/analytics.md on
# current ClickHouse, embedded by the `chdb` Python package) in a virtualenv cached outside the
# clone, creating it on first use. Exit codes: those of the script, or 3 when python3's venv or
# pip is unavailable (callers may skip the check then, saying so).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VIGIA_CHDB_VENV:-$HOME/.cache/vigia/chdb-venv}"
if ! "$VENV/bin/python" -c 'import chdb' 2>/dev/null; then
    if ! command -v python3 >/dev/null; then
        echo "chdb-check: python3 is not installed" >&2
        exit 3
    fi
    mkdir -p "$(dirname "$VENV")"
    if ! python3 -m venv "$VENV" >&2; then
        echo "chdb-check: python3 -m venv is unavailable (Debian: apt-get install python3-venv)" >&2
        exit 3
    fi
    if ! "$VENV/bin/pip" install --quiet chdb >&2; then
        echo "chdb-check: pip install chdb failed (is PyPI reachable?)" >&2
        exit 3
    fi
fi
exec "$VENV/bin/python" scripts/chdb-check.py "$@"
