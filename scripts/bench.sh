#!/usr/bin/env bash
# Every benchmark of issue 12 on the local Apache Kafka, one after the other, each writing its
# section of BENCHMARKS.md (`vigia bench …` says how to reproduce each). About 35 minutes on 2
# cores; run it on an otherwise quiet machine. Arguments: names of the benchmarks to run
# (pipeline sink transactions gateway processors); none = all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/services.sh up
eval "$(bash scripts/services.sh env)"
cargo build --release
vigia=${CARGO_TARGET_DIR:-target}/release/vigia
ulimit -n "$(ulimit -Hn)"
which=("$@")
((${#which[@]})) || which=(pipeline sink transactions gateway processors)
for bench in "${which[@]}"; do
    echo "=== bench $bench ($(date -u +%H:%M:%S))"
    case $bench in
    pipeline) "$vigia" bench pipeline --rates 1000,2500,5000 --all-rates --warmup 90s --step 60s --idle-step 5m ;;
    sink) "$vigia" bench sink --events 200000 ;;
    transactions) "$vigia" bench transactions --rate 1000 --duration 60s --commit-interval 100ms,1s --burst 200000 ;;
    gateway) "$vigia" bench gateway --connections 10000 --broadcasts 20 --broadcast-every 1s --singles 1000 --single-every 5ms ;;
    processors) "$vigia" bench processors --repeat 5 --tenants 10 --sellers 20 --rate 300 --duration 1h --seed 42 --start 2026-03-02T08:00:00Z ;;
    *) echo "unknown benchmark $bench" >&2; exit 2 ;;
    esac
done
