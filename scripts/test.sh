#!/usr/bin/env bash
# The test command of the README: starts the local services (installing/building them on a fresh
# machine), then runs every unit, integration and end-to-end test of the workspace against them.
# Integration tests share the one local broker (Apache Kafka): each test works in its own
# namespace (topic prefix, consumer groups, ClickHouse database), so none sees another's records.
# Arguments are passed to every test binary (e.g. a name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/services.sh up
eval "$(bash scripts/services.sh env)"

# Build every test once, with the workspace's features, and list the integration-test binaries
# (package directory, name, executable). They are run directly below: `cargo test -p PKG` would
# rebuild each package with its own feature set first, minutes per package on 2 cores.
tests_list=$(mktemp)
trap 'rm -f "$tests_list"' EXIT
cargo test --workspace --all-targets --no-run --message-format=json-render-diagnostics |
    python3 -c '
import json, os, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["test"] and m.get("executable"):
        print(os.path.dirname(m["manifest_path"]), m["target"]["name"], m["executable"])
' | sort -k1,1 -k2,2 >"$tests_list"
[[ -s $tests_list ]] || { echo "no integration test binaries were built" >&2; exit 1; }

# Unit tests: pure logic, no services.
cargo test --workspace --lib --bins -- --include-ignored --test-threads=2 "$@"
# The Arroyo UDFs: a cargo workspace of their own (udfs/Cargo.toml); their test against the
# processors is tests/arroyo_udfs.rs, below.
cargo test --manifest-path udfs/Cargo.toml --workspace -- --include-ignored --test-threads=2 "$@"

failed=()
while read -r dir name executable; do
    package=vigia-$(basename "$dir")
    [[ $dir == "$PWD" ]] && package=vigia
    echo "=== $package --test $name (at $((SECONDS / 60))m$((SECONDS % 60))s)"
    # As `cargo test` runs it: from the package's directory. Each end-to-end test runs its own
    # vigia processes; two at a time suit a 2-core machine.
    if ! (cd "$dir" && "$executable" --include-ignored --test-threads=2 "$@" </dev/null); then
        failed+=("$package --test $name")
    fi
done <"$tests_list"

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all tests passed in $((SECONDS / 60))m$((SECONDS % 60))s"
