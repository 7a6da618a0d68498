#!/usr/bin/env bash
# The main job of the README: local services up, `vigia serve`, and `vigia simulate` posting
# realistic CRM traffic while a CEO WebSocket per tenant prints the notifications as they arrive.
# Thresholds are time-compressed (an unanswered conversation alerts after 30 s, not 1 h) so
# something happens within the first minute. DURATION=10m, RATE=100 etc. override.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/services.sh up
eval "$(bash scripts/services.sh env)"
cargo build --release --bin vigia
export VIGIA_UNANSWERED_AFTER="${VIGIA_UNANSWERED_AFTER:-30s}"
export VIGIA_HTTP_ADDR="${VIGIA_HTTP_ADDR:-127.0.0.1:8000}"
mkdir -p .data
./target/release/vigia serve > .data/serve.log 2>&1 &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null; wait $serve_pid 2>/dev/null' EXIT
for _ in $(seq 1 120); do
  curl -fs "http://$VIGIA_HTTP_ADDR/health/readiness" > /dev/null && break
  kill -0 $serve_pid 2>/dev/null || { echo "vigia serve exited; see .data/serve.log"; tail -20 .data/serve.log; exit 1; }
  sleep 0.5
done
token=$(./target/release/vigia token --user 1001 --tenant 1 --role ceo)
cat <<TXT
vigia serve is up on http://$VIGIA_HTTP_ADDR (log: .data/serve.log). Where to look:
  dashboard      http://$VIGIA_HTTP_ADDR/#token=$token   (the CEO's live page; open it in a browser)
  notifications  printed below as a CEO's WebSocket receives them (ws://$VIGIA_HTTP_ADDR/ws?token=$token)
  inbox (REST)   curl -H "Authorization: Bearer $token" http://$VIGIA_HTTP_ADDR/v1/notifications
  metrics        curl http://$VIGIA_HTTP_ADDR/metrics
  analysts       clickhouse-client --query "SELECT type, count() FROM vigia.events GROUP BY type"
TXT
./target/release/vigia simulate --tenants "${TENANTS:-2}" --sellers "${SELLERS:-5}" \
  --rate "${RATE:-20}" --duration "${DURATION:-3m}" --reply-max 25s --measure --show \
  --linger 40s --report .data/simulate-report.json
echo "report: .data/simulate-report.json"
# Keep the dashboard up for a look when someone is at the terminal.
if [[ -t 0 && -z "${NO_WAIT:-}" ]]; then
  read -r -p "vigia serve is still up (dashboard: http://$VIGIA_HTTP_ADDR/#token=$token); press Enter to stop it. " _
fi
