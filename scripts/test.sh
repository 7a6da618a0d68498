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

# Integration and end-to-end binaries, VIGIA_TEST_JOBS (default 2) at a time: most of their time
# is spent waiting (for Kafka, for timers, for processes to restart), so two binaries overlap well
# on 2 cores. Longest first (durations of the previous run on this machine, kept outside the
# clone), so the last one to start is a short one. Each binary's output goes to a log, printed
# whole when it ends, so two binaries never interleave.
jobs_max=${VIGIA_TEST_JOBS:-2}
durations="$HOME/.cache/vigia/test-durations.tsv"
logs=.data/logs/tests
mkdir -p "$logs" "$(dirname "$durations")"
# A machine without history starts from the durations measured when this was written (kept in
# the repository for the order alone): else the two longest binaries may start last.
[[ -s $durations ]] || cp scripts/test-durations.tsv "$durations"
results=$(mktemp)
trap 'rm -f "$tests_list" "$results"' EXIT
# "seconds dir name executable", longest known first; binaries never timed yet run first (they
# may be long). Durations are kept by package directory relative to the clone (CI clones afresh).
relative() { local rel=${1#"$PWD"}; echo "./${rel#/}"; }
ordered=$(while read -r dir name executable; do
    seconds=$(awk -v n="$name" -v d="$(relative "$dir")" '$2 == d && $3 == n { s = $1 } END { print (s == "" ? -1 : s) }' "$durations")
    ((seconds >= 0)) || seconds=100000
    echo "$seconds $dir $name $executable"
done <"$tests_list" | sort -k1,1nr)

run_binary() {
    local dir=$1 name=$2 executable=$3 package started status
    shift 3
    package=vigia-$(basename "$dir")
    [[ $dir == "$PWD" ]] && package=vigia
    local log="$logs/$package-$name.log"
    started=$SECONDS
    # As `cargo test` runs it: from the package's directory, two tests at a time.
    if (cd "$dir" && "$executable" --include-ignored --test-threads=2 "$@" </dev/null) >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
    fi
    local elapsed=$((SECONDS - started))
    {
        flock 9
        echo "=== $package --test $name: $status in ${elapsed}s (ended at $((SECONDS / 60))m$((SECONDS % 60))s)"
        cat "$log"
        echo "$status $elapsed $(relative "$dir") $name" >>"$results"
    } 9>>"$results.lock"
}

echo "=== integration and end-to-end tests, $jobs_max at a time (logs in $logs)"
while read -r _ dir name executable; do
    while (($(jobs -rp | wc -l) >= jobs_max)); do wait -n || true; done
    run_binary "$dir" "$name" "$executable" "$@" &
done <<<"$ordered"
wait
rm -f "$results.lock"

# Remember this run's durations (of binaries that passed) for the next run's order.
awk '$1 == "ok" { print $2, $3, $4 }' "$results" >"$durations.new"
awk 'NR == FNR { seen[$2 " " $3] = 1; print; next } !(($2 " " $3) in seen)' "$durations.new" "$durations" >"$durations.tmp"
mv "$durations.tmp" "$durations"
rm -f "$durations.new"

mapfile -t failed < <(awk '$1 == "FAILED" { print $4 " (" $3 ")" }' "$results")
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]} (logs in $logs)" >&2
    exit 1
fi
echo "all tests passed in $((SECONDS / 60))m$((SECONDS % 60))s"
