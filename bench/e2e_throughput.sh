#!/usr/bin/env bash
# End-to-end throughput, submit to succeeded: N jobs (default 100,000), each
# one POST to a fast local HTTP server, through a lane with no limit, with
# durable commits. Reports jobs/s and the broker's peak memory.
#   bench/e2e_throughput.sh [nginx|mock] [JOBS] [WORKERS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/fleet-lib.sh
TARGET=${1:-nginx}
JOBS=${2:-100000}
WORKERS=${3:-1}
CONC=${4:-64}
fleet_init

if [ "$TARGET" = nginx ]; then
  port=$(( 20000 + RANDOM % 20000 ))
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port;
    location /v1/echo { client_body_buffer_size 16k; return 200 '{"ok":true}'; }
  }
}
CONF
  nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
  FLEET_PIDS+=($!)
  for _ in $(seq 100); do curl -sf -X POST "http://127.0.0.1:$port/v1/echo" >/dev/null && break; sleep 0.05; done
  base="http://127.0.0.1:$port"
else
  start_mock --threads 64
  base="http://127.0.0.1:$MOCK_PORT"
fi

write_config "$base" "concurrency = 0"
start_broker
start_workers "$WORKERS" "$CONC"
echo_jobs "$JOBS" >"$WORK/jobs.jsonl"

start=$(date +%s.%N)
group=$("$BIN/client/pacer" submit --file "$WORK/jobs.jsonl")
submitted=$(date +%s.%N)
"$BIN/client/pacer" wait --group "$group" --timeout-wait 30min >/dev/null
end=$(date +%s.%N)

total=$(echo "$end - $start" | bc -l)
printf 'target=%s jobs=%d workers=%d concurrency=%d\n' "$TARGET" "$JOBS" "$WORKERS" "$CONC"
printf 'submit %.2f s, submit-to-succeeded %.2f s: %.0f jobs/s\n' \
  "$(echo "$submitted - $start" | bc -l)" "$total" "$(echo "$JOBS / $total" | bc -l)"
printf 'broker peak RSS %d KiB\n' "$(peak_rss_kb "$BROKER_PID")"
"$BIN/client/pacer" stats --json | jq -c '.states'
