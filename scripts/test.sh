#!/usr/bin/env bash
# The test command of the README: starts the local services (installing/building them on a fresh
# machine), then runs every unit and end-to-end test of the workspace against them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/services.sh up
eval "$(bash scripts/services.sh env)"
# Each end-to-end test runs its own vigia processes; two at a time suit a 2-core machine.
cargo test --workspace --all-targets -- --include-ignored --test-threads=2 "$@"
