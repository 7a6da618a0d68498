#!/usr/bin/env bash
# Vigía beside Apache Flink (issue 16, deliverable 3): the unanswered-conversation alert and the
# response-time sample as a Flink DataStream job (bench/flink, embedded MiniCluster), next to
# Vigía's processors with only those two rules (processors.rules = "conversations") and with all
# of them, on the same simulated stream in the same Kafka topic. One after the other:
#
# 1. Saturation: the whole stream is in the topic first; each engine reads it from the beginning
#    and writes its outputs to Kafka. Events per CPU-second of the engine's process (utime+stime
#    from /proc, from its first record to its last output: JVM and MiniCluster start-up left
#    out), repeated BENCH_FLINK_REPEAT times, engines interleaved; medians. Then the outputs are
#    compared by key: alerts by conversation + deadline, withdrawals by conversation + deadline +
#    state, samples by conversation + reply message.
# 2. Busy stream: a live stream at BENCH_FLINK_BUSY_RATE events/s (each event produced at its
#    occurred_at), one per engine: deadline -> output lag = the alert record's append time
#    (LogAppendTime topics) minus its deadline, p50/p99 with n, for deadlines before the stream's
#    last event (Flink's event-time timers do not fire on an idle stream).
#
# The simulator's late, out-of-order and duplicate deliveries are off, and every tenant has the
# same threshold: the Flink job implements neither Vigía's corrections nor per-tenant thresholds.
#
# Writes the "Beside Apache Flink" section of BENCHMARKS.md. Needs Apache Kafka at
# VIGIA_KAFKA_BROKERS (default 127.0.0.1:9092), Java 17 and Maven; the Maven repository is
# ~/.cache/vigia/m2. Release build of vigia in $CARGO_TARGET_DIR (default target/). Its topics
# (benchflink-<time>-<pid>.*) are deleted at the end unless BENCH_FLINK_KEEP_TOPICS is set.
#
#   bash scripts/bench-flink.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BROKERS=${VIGIA_KAFKA_BROKERS:-127.0.0.1:9092}
RATE=${BENCH_FLINK_RATE:-1000}              # saturation stream: events/s of event time ...
DURATION=${BENCH_FLINK_DURATION:-600s}      # ... over this much event time
BUSY_RATE=${BENCH_FLINK_BUSY_RATE:-2000}
BUSY_DURATION=${BENCH_FLINK_BUSY_DURATION:-60s}
REPEAT=${BENCH_FLINK_REPEAT:-3}
UNANSWERED_AFTER_S=${BENCH_FLINK_UNANSWERED_AFTER_S:-20}
# Both engines hold the same event-time slack before a deadline fires (Flink's bounded
# out-of-orderness, Vigía's watermark delay), so the lag column compares like with like.
WATERMARK_DELAY_MS=${BENCH_FLINK_WATERMARK_DELAY_MS:-50}
TENANTS=${BENCH_FLINK_TENANTS:-10}
SELLERS=${BENCH_FLINK_SELLERS:-20}
SEED=${BENCH_FLINK_SEED:-42}
OUT=${BENCH_FLINK_OUT:-BENCHMARKS.md}
M2=${VIGIA_M2:-$HOME/.cache/vigia/m2}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RUN=benchflink-$(date +%s)-$$
WORK=$(mktemp -d "/tmp/$RUN.XXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -n ${CP:-} && -z ${BENCH_FLINK_KEEP_TOPICS:-} ]]; then
    harness delete --prefix "$RUN." >&2 || true
  fi
}
trap cleanup EXIT

log() { echo "[bench-flink $(date -u +%H:%M:%S)] $*" >&2; }
# The value of key=value in a line of words.
field() { sed -n "s/.*\b$2=\([^ ]*\).*/\1/p" <<<"$1"; }

log "building vigia (release) and the Flink job"
nice -n 19 cargo build --release -q -p vigia
VIGIA=$TARGET/release/vigia
(cd bench/flink && nice -n 19 mvn -q -B -Dmaven.repo.local="$M2" compile \
  dependency:build-classpath -Dmdep.outputFile=target/classpath.txt >&2)
CP="$ROOT/bench/flink/target/classes:$(cat bench/flink/target/classpath.txt)"
JAVA=(nice -n 19 java -Xmx2g -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$CP")
harness() { "${JAVA[@]}" dev.vigia.bench.Harness "$@" --brokers "$BROKERS"; }

simulate() { # start rate duration file
  "$VIGIA" simulate --dry-run --seed "$SEED" --tenants "$TENANTS" --sellers "$SELLERS" \
    --rate "$2" --duration "$3" --start "$1" \
    --duplicate-share 0 --out-of-order-share 0 --late-share 0 >"$4"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts `vigia process` reading PREFIX.events with RULES: sets PID and PORT.
start_vigia() { # prefix rules label
  local port dir
  port=$(free_port)
  dir=$WORK/vigia-$3
  mkdir -p "$dir"
  cat >"$dir/vigia.toml" <<EOF
data_dir = "$dir"
[http]
addr = "127.0.0.1:$port"
[kafka]
brokers = "$BROKERS"
topic_prefix = "$1."
partitions = 1
[processors]
group_id = "$1.processors-$3"
rules = "$2"
watermark_delay = "${WATERMARK_DELAY_MS}ms"
[processors.defaults]
unanswered_after = "${UNANSWERED_AFTER_S}s"
EOF
  RUST_LOG=warn nice -n 19 "$VIGIA" --config "$dir/vigia.toml" process >"$dir/log" 2>&1 &
  PID=$!
  PORT=$port
  PIDS+=("$PID")
}

# Starts the Flink job: sets PID.
start_flink() { # events notifications samples bounded label
  "${JAVA[@]}" dev.vigia.bench.Main --brokers "$BROKERS" --events "$1" --notifications "$2" \
    --samples "$3" --bounded "$4" --unanswered-after-ms $((UNANSWERED_AFTER_S * 1000)) \
    --watermark-delay-ms "$WATERMARK_DELAY_MS" >"$WORK/flink-$5.out" 2>"$WORK/flink-$5.log" &
  PID=$!
  PIDS+=("$PID")
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# ------------------------------------------------------------------------------- saturation
P=$RUN.sat
log "saturation stream: $RATE events/s for $DURATION of event time, topic $P.events"
harness topics --create "$P.events,$P.notifications,$P.response_times,$P.flink.notifications,$P.flink.response_times"
simulate 2026-03-02T08:00:00Z "$RATE" "$DURATION" "$WORK/sat.ndjson"
produced=$(harness produce --events "$WORK/sat.ndjson" --topic "$P.events")
N=$(field "$produced" events)
log "$produced"

declare -A CPU_RATE WALL_RATE RANGES
for i in $(seq 1 "$REPEAT"); do
  for engine in flink conversations all; do
    label=$engine-$i
    if [[ $engine == flink ]]; then
      nf=$(harness end --topic "$P.flink.notifications")
      sf=$(harness end --topic "$P.flink.response_times")
      start_flink "$P.events" "$P.flink.notifications" "$P.flink.response_times" true "$label"
      wait "$PID" || { cat "$WORK/flink-$label.log" >&2; exit 1; }
      PIDS=()
      r=$(grep FLINK_RESULT "$WORK/flink-$label.out")
      nt=$(harness end --topic "$P.flink.notifications")
      st=$(harness end --topic "$P.flink.response_times")
      RANGES[$label]="$P.flink.notifications@$nf-$nt,$P.flink.response_times@$sf-$st"
    else
      nf=$(harness end --topic "$P.notifications")
      sf=$(harness end --topic "$P.response_times")
      start_vigia "$P" "$engine" "$label"
      r=$(harness watch --pid "$PID" --metrics "http://127.0.0.1:$PORT/metrics" --events "$N")
      kill "$PID"
      wait "$PID" || true
      PIDS=()
      nt=$(harness end --topic "$P.notifications")
      st=$(harness end --topic "$P.response_times")
      RANGES[$label]="$P.notifications@$nf-$nt,$P.response_times@$sf-$st"
    fi
    cpu=$(( $(field "$r" end_cpu_ticks) - $(field "$r" first_record_cpu_ticks) ))
    ms=$(( $(field "$r" end_ms) - $(field "$r" first_record_ms) ))
    CPU_RATE[$label]=$(awk -v n="$N" -v t="$cpu" 'BEGIN {printf "%.0f", n / (t / 100)}')
    WALL_RATE[$label]=$(awk -v n="$N" -v t="$ms" 'BEGIN {printf "%.0f", n / (t / 1000)}')
    log "$label: $N events, $((cpu * 10)) ms CPU, $ms ms wall: ${CPU_RATE[$label]} events/CPU-s (load $(cut -d' ' -f1-3 /proc/loadavg))"
  done
done

log "comparing outputs (first round)"
agree_conv=$(harness compare --left "flink=${RANGES[flink-1]}" --right "vigia=${RANGES[conversations-1]}")
agree_all=$(harness compare --left "flink=${RANGES[flink-1]}" --right "vigia=${RANGES[all-1]}")
echo "$agree_conv" >&2
echo "$agree_all" >&2

# ------------------------------------------------------------------------------- busy stream
declare -A LAG BEHIND
WARMUP_S=${BENCH_FLINK_BUSY_WARMUP_S:-10}
for engine in flink conversations all; do
  B=$RUN.busy-$engine
  harness topics --create "$B.events,$B.notifications,$B.response_times" \
    --log-append-time "$B.notifications,$B.response_times"
  # The engine first, ready (job running / partition assigned), then the stream from now on.
  if [[ $engine == flink ]]; then
    start_flink "$B.events" "$B.notifications" "$B.response_times" false "busy"
    ready() { grep -q JOB_RUNNING "$WORK/flink-busy.out"; }
  else
    start_vigia "$B" "$engine" "busy-$engine"
    ready() { curl -sf "http://127.0.0.1:$PORT/metrics" | grep -q '^vigia_processor_partition_live{'; }
  fi
  for _ in $(seq 1 600); do ready && break; kill -0 "$PID" || exit 1; sleep 0.5; done
  ready || { log "$engine did not get ready"; exit 1; }
  sleep 5
  start_s=$(( $(date +%s) + 3 ))
  start=$(date -u -d "@$start_s" +%Y-%m-%dT%H:%M:%SZ)
  simulate "$start" "$BUSY_RATE" "$BUSY_DURATION" "$WORK/busy-$engine.ndjson"
  last=$(tail -n1 "$WORK/busy-$engine.ndjson" | sed -n 's/.*"occurred_at":"\([^"]*\)".*/\1/p')
  log "busy stream for $engine: $BUSY_RATE events/s for $BUSY_DURATION from $start"
  produced=$(harness produce --events "$WORK/busy-$engine.ndjson" --topic "$B.events" --live true)
  BEHIND[$engine]=$(field "$produced" max_behind_ms)
  sleep 5
  kill "$PID"
  wait "$PID" || true
  PIDS=()
  # Deadlines after a warm-up (JIT) and up to 2 s before the last event.
  from=$(date -u -d "@$(( start_s + UNANSWERED_AFTER_S + WARMUP_S ))" +%Y-%m-%dT%H:%M:%SZ)
  until=$(date -u -d "@$(( $(date -u -d "$last" +%s) - 2 ))" +%Y-%m-%dT%H:%M:%SZ)
  nt=$(harness end --topic "$B.notifications")
  LAG[$engine]=$(harness lag --side "$engine=$B.notifications@0-$nt" --deadlines-from "$from" \
    --deadlines-until "$until")
  log "${LAG[$engine]} (producer at most ${BEHIND[$engine]} ms behind; load $(cut -d' ' -f1-3 /proc/loadavg))"
done

# ------------------------------------------------------------------------------- report
med() { for i in $(seq 1 "$REPEAT"); do echo "${CPU_RATE[$1-$i]}"; done | median; }
medw() { for i in $(seq 1 "$REPEAT"); do echo "${WALL_RATE[$1-$i]}"; done | median; }
runs() { for i in $(seq 1 "$REPEAT"); do printf '%s ' "${CPU_RATE[$1-$i]}"; done; }
F=$(med flink); VC=$(med conversations); VA=$(med all)
ratio() { awk -v a="$1" -v b="$F" 'BEGIN {printf "%.1f×", a / b}'; }
lagcell() { echo "$(field "${LAG[$1]}" p50_ms) / $(field "${LAG[$1]}" p99_ms) ms (n = $(field "${LAG[$1]}" n))"; }
agreecell() {
  local a=$1
  echo "alerts $(field "$a" alerts_same) same, $(( $(field "$a" alerts_only_flink) + $(field "$a" alerts_only_vigia) + $(field "$a" alerts_differ) )) not; withdrawals $(field "$a" withdrawals_same) same, $(( $(field "$a" withdrawals_only_flink) + $(field "$a" withdrawals_only_vigia) + $(field "$a" withdrawals_differ) )) not; samples $(field "$a" samples_same) same, $(( $(field "$a" samples_only_flink) + $(field "$a" samples_only_vigia) + $(field "$a" samples_differ) )) not"
}
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
section=$(cat <<EOF
The unanswered-conversation alert and the response-time sample as an Apache Flink 2.2.0 job
(\`bench/flink\`: DataStream API, event-time timers, \`flink-connector-kafka\` 5.0.0-2.2, embedded
MiniCluster, parallelism 1, JSON in and out) beside Vigía's processors with only those two rules
(\`processors.rules = "conversations"\`) and with all of them, one after the other on this machine's
Apache Kafka, one partition each. Stream: \`vigia simulate\`, seed $SEED, $TENANTS tenants ×
$SELLERS sellers, unanswered after ${UNANSWERED_AFTER_S} s for every tenant, late, out-of-order and
duplicate deliveries off (the Flink job implements neither Vigía's corrections nor per-tenant
thresholds); both hold ${WATERMARK_DELAY_MS} ms of event-time slack before a deadline fires (Flink's
bounded out-of-orderness, Vigía's watermark delay). Saturation: $N events ($RATE events/s × $DURATION of event time) pre-filled, each engine
reads the topic from the beginning and writes to Kafka; events per CPU-second of the engine's process
(user + system, all threads, from its first record to its last output: JVM and MiniCluster start-up
left out), median of $REPEAT runs, engines interleaved. Busy stream: $BUSY_RATE events/s live for
$BUSY_DURATION, a fresh topic per engine started once the engine is ready; lag = the alert record's
append time in Kafka minus its deadline, for deadlines from ${WARMUP_S} s after the first possible one
up to 2 s before the last event. Load average at the end: $LOAD.

| engine | events/CPU-s (runs) | vs Flink | events/s wall | deadline → output lag p50 / p99 | same outputs as Flink (by key) |
| --- | --- | --- | --- | --- | --- |
| Flink 2.2.0 | $F ($(runs flink| sed 's/ $//')) | 1.0× | $(medw flink) | $(lagcell flink) | — |
| Vigía, two rules | $VC ($(runs conversations | sed 's/ $//')) | $(ratio "$VC") | $(medw conversations) | $(lagcell conversations) | $(agreecell "$agree_conv") |
| Vigía, all rules | $VA ($(runs all | sed 's/ $//')) | $(ratio "$VA") | $(medw all) | $(lagcell all) | $(agreecell "$agree_all") |

Reproduce: \`BENCH_FLINK_REPEAT=$REPEAT BENCH_FLINK_DURATION=$DURATION BENCH_FLINK_BUSY_DURATION=$BUSY_DURATION
bash scripts/bench-flink.sh\` (release build; the other BENCH_FLINK_* variables at the top of the
script change the stream).
EOF
)
python3 - "$OUT" "$section" <<'PY'
import re, sys
path, body = sys.argv[1], sys.argv[2]
text = open(path).read()
head = "## Beside Apache Flink"
block = f"{head}\n\n{body}\n"
pattern = re.compile(r"^## Beside Apache Flink\n.*?(?=^## |^<!-- |\Z)", re.S | re.M)
text = pattern.sub(block + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
open(path, "w").write(text)
PY
log "wrote the \"Beside Apache Flink\" section of $OUT"
echo "$section"
