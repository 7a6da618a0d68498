#!/usr/bin/env bash
# Instructions per event of the processors' full pass (decode + rules + serialise), counted by
# callgrind: a figure that does not move with the load of a shared machine, unlike the timed
# events/s of `vigia bench processors`. Only `processors_full_pass` is counted
# (--toggle-collect), not the simulator that makes the stream nor the untimed hash pass.
#
# Usage: scripts/bench-callgrind.sh [extra `bench processors` options, e.g. --rate 100]
# Environment: CARGO_PROFILE (default release; `profiling` adds line tables, same code, so the
# same count, for callgrind_annotate by line), VIGIA_BIN (a binary to count instead of building
# one, e.g. an older version's, for a before/after figure), DURATION (of event time, default
# 5m: the figures in BENCHMARKS.md; clap refuses a second --duration among the options).
# Prints the events, the outputs hash, the instructions counted and Ir/event; leaves the
# callgrind profile in $OUT_DIR (default target/callgrind) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT_DIR:-${CARGO_TARGET_DIR:-target}/callgrind}
CARGO_PROFILE=${CARGO_PROFILE:-release}
DURATION=${DURATION:-5m}
mkdir -p "$OUT_DIR"
if [[ -n "${VIGIA_BIN:-}" ]]; then
  BIN=$VIGIA_BIN
else
  nice -n 19 cargo build --profile "$CARGO_PROFILE" --bin vigia >&2
  BIN=${CARGO_TARGET_DIR:-target}/$CARGO_PROFILE/vigia
fi
PROFILE="$OUT_DIR/callgrind.out.processors"
REPORT="$OUT_DIR/report.json"
# A fixed, small stream (the defaults of the timed benchmark but $DURATION of event time).
nice -n 19 valgrind --tool=callgrind --toggle-collect='*processors_full_pass*' \
  --callgrind-out-file="$PROFILE" \
  "$BIN" bench processors --repeat 1 --tenants 10 --sellers 20 --rate 300 --duration "$DURATION" \
  --seed 42 --start 2026-03-02T08:00:00Z --out "$OUT_DIR/BENCHMARKS.md" "$@" \
  >"$REPORT" 2>"$OUT_DIR/valgrind.log"
EVENTS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events"])' "$REPORT")
HASH=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["outputs_hash"])' "$REPORT")
# Whole output first, then grep: an early-exiting reader would make pipefail kill the script.
callgrind_annotate "$PROFILE" >"$OUT_DIR/annotate.txt" 2>/dev/null
IR=$(grep -m1 'PROGRAM TOTALS' "$OUT_DIR/annotate.txt" | awk '{gsub(",", "", $1); print $1}')
echo "binary: $BIN"
echo "events: $EVENTS"
echo "outputs hash: $HASH"
echo "instructions (Ir) in the full pass: $IR"
python3 -c 'import sys; print(f"Ir/event: {int(sys.argv[1]) / int(sys.argv[2]):.0f}")' "$IR" "$EVENTS"
echo "load average: $(cat /proc/loadavg)"
