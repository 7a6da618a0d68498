#!/usr/bin/env bash
# The test command of the README: starts the local services (installing/building them on a fresh
# machine), then runs every unit, integration and end-to-end test of the workspace against them.
#
# Each integration test binary runs on a freshly started (empty) broker: tansu 0.6's SQLite engine
# slows down as the topics of earlier tests pile up and, overloaded, stops answering consumer-group
# heartbeats, which a later test would pay for. Arguments are passed to every test binary (e.g. a
# name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/services.sh up
eval "$(bash scripts/services.sh env)"

cargo test --workspace --all-targets --no-run --quiet

# Unit tests: pure logic, no services.
cargo test --workspace --lib --bins -- --include-ignored --test-threads=2 "$@"
# The Arroyo UDFs: a cargo workspace of their own (udfs/Cargo.toml); their test against the
# processors is tests/arroyo_udfs.rs, below.
cargo test --manifest-path udfs/Cargo.toml --workspace -- --include-ignored --test-threads=2 "$@"

package_of() {
    case $1 in
    .) echo vigia ;;
    *) echo "vigia-$1" ;;
    esac
}

failed=()
for file in */tests/*.rs tests/*.rs; do
    dir=$(dirname "$(dirname "$file")")
    [[ $file == tests/* ]] && dir=.
    name=$(basename "$file" .rs)
    package=$(package_of "$dir")
    bash scripts/services.sh down tansu > /dev/null
    bash scripts/services.sh up tansu > /dev/null
    echo "=== $package --test $name (fresh broker)"
    # Each end-to-end test runs its own vigia processes; two at a time suit a 2-core machine.
    if ! cargo test -p "$package" --test "$name" -- --include-ignored --test-threads=2 "$@"; then
        failed+=("$package --test $name")
    fi
done

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all tests passed"
